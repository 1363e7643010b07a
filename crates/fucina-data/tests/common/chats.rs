//! Conversations for packing tests: a real tokenizer and template, a mix of
//! conversation lengths, and the rows of a prepared directory as stored.

use fucina_data::{TextTokenizer, TokenDataset};
use std::path::{Path, PathBuf};

/// A packed row as stored: its tokens and raw mask bytes.
pub type Row = (Vec<u32>, Vec<u8>);

pub fn write_config(dir: &Path, template: &str) -> PathBuf {
    let path = dir.join("tokenizer_config.json");
    let config = serde_json::json!({
        "chat_template": template,
        "eos_token": "<|im_end|>",
        "pad_token": "<pad>",
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

pub fn chat_line(pairs: &[(&str, &str)]) -> String {
    let messages: Vec<_> = pairs
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    serde_json::json!({ "messages": messages }).to_string()
}

/// Every row of `<dir>/<prefix>_*`, decoded from the files (`FORMAT.md`),
/// with the version of the mask files (all must agree).
pub fn read_rows(dir: &Path, prefix: &str) -> (Vec<Row>, u32) {
    let ds = TokenDataset::open_glob_dir(dir, prefix).unwrap();
    let row_len = ds.row_len().expect("row data");
    let mut tokens = vec![0; ds.len()];
    ds.read(0, &mut tokens);
    let (mut masks, mut versions) = (Vec::new(), Vec::new());
    for shard in ds.shards() {
        let bytes = std::fs::read(shard.path().with_extension("mask")).unwrap();
        assert_eq!(&bytes[..8], b"FUCINAMK");
        versions.push(u32::from_le_bytes(bytes[8..12].try_into().unwrap()));
        masks.extend_from_slice(&bytes[64..]);
    }
    versions.dedup();
    assert_eq!(versions.len(), 1, "mask versions {versions:?}");
    let rows = tokens
        .chunks(row_len)
        .zip(masks.chunks(row_len))
        .map(|(t, m)| (t.to_vec(), m.to_vec()))
        .collect();
    (rows, versions[0])
}

/// `(tokens, mask)` without the padding at its end (pad tokens with mask 0).
pub fn strip_padding((tokens, mask): &Row, pad: u32) -> Row {
    let mut len = tokens.len();
    while len > 0 && tokens[len - 1] == pad && mask[len - 1] == 0 {
        len -= 1;
    }
    (tokens[..len].to_vec(), mask[..len].to_vec())
}

/// A packed row cut at its document starts (mask bit 1), padding stripped.
pub fn documents(row: &Row, pad: u32) -> Vec<Row> {
    let (tokens, mask) = strip_padding(row, pad);
    let mut cuts: Vec<usize> = (0..tokens.len()).filter(|&i| mask[i] & 2 != 0).collect();
    assert_eq!(cuts.first(), Some(&0), "a row starts with a document");
    cuts.push(tokens.len());
    cuts.windows(2)
        .map(|c| (tokens[c[0]..c[1]].to_vec(), mask[c[0]..c[1]].to_vec()))
        .collect()
}

/// The built-in tokenizer (real byte-level BPE) and Qwen2's template.
pub fn real_setup() -> (TextTokenizer, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tok = TextTokenizer::from_file(root.join("corpus/tokenizer.json")).unwrap();
    let config = root.join("../../tests/fixtures/chat/qwen2-7b-instruct/tokenizer_config.json");
    (tok, config)
}

/// 400 conversations of corpus lines in five languages, of lengths from a
/// few dozen tokens to more than a row (some are cut), a few multi-turn, and
/// one with no reply (dropped).
pub fn real_chats(dir: &Path) -> PathBuf {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let lines: Vec<String> = ["en", "de", "fr", "it", "pl"]
        .iter()
        .flat_map(|l| {
            let text = std::fs::read_to_string(corpus.join(format!("{l}.txt"))).unwrap();
            text.lines()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut out = Vec::new();
    for i in 0..400 {
        let user = lines[next(lines.len())].clone();
        // Mostly short replies, now and then a long one.
        let sentences = match next(10) {
            0 => 4 + next(8),
            1..=3 => 2,
            _ => 1,
        };
        let reply: Vec<&str> = (0..sentences)
            .map(|_| lines[next(lines.len())].as_str())
            .collect();
        let mut pairs = vec![("user", user), ("assistant", reply.join(" "))];
        if i % 7 == 3 {
            pairs.push(("user", "Danke.".into()));
            pairs.push(("assistant", lines[next(lines.len())].clone()));
        }
        if i == 11 {
            pairs.truncate(1);
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(r, c)| (*r, c.as_str())).collect();
        out.push(chat_line(&pairs));
    }
    let path = dir.join("chats.jsonl");
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
    path
}
