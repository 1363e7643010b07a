//! `fucina prepare` on chat JSONL: the binary writes one row per conversation
//! with its loss mask. The files are decoded here byte by byte (per
//! crates/fucina-data/FORMAT.md) and compared with rows worked out by hand.

use std::path::Path;
use std::process::{Command, Output};

fn fucina(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fucina"))
        .args(args)
        .output()
        .expect("the fucina binary runs")
}

/// Word-level: `<|im_start|>`=0 `<|im_end|>`=1 `\n`=2 ` `=3 user=4
/// assistant=5 Hi=6 Ciao=7 Bye=8 [UNK]=9 `<|endoftext|>`=10 `<pad>`=11.
fn tokenizer_json() -> String {
    let words = [
        "<|im_start|>",
        "<|im_end|>",
        "\n",
        " ",
        "user",
        "assistant",
        "Hi",
        "Ciao",
        "Bye",
        "[UNK]",
        "<|endoftext|>",
        "<pad>",
    ];
    let vocab: serde_json::Map<_, _> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i.into()))
        .collect();
    let special = |id: usize| {
        serde_json::json!({"id": id, "content": words[id], "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0), special(1), special(10), special(11)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+|[^\\w]"},
                          "behavior": "Isolated", "invert": false},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

fn config_json() -> String {
    serde_json::json!({
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "eos_token": "<|im_end|>",
        "pad_token": "<pad>",
    })
    .to_string()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Token ids of a fucina shard, checking its header.
fn read_tokens(path: &Path, vocab: u32) -> Vec<u32> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..8], b"FUCINATK");
    assert_eq!(u32_at(&b, 8), 1, "version");
    assert_eq!(u32_at(&b, 12), 2, "u16 tokens");
    assert_eq!(u32_at(&b, 24), vocab);
    let count = u64_at(&b, 16) as usize;
    assert_eq!(b.len(), 64 + 2 * count);
    b[64..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect()
}

/// Mask bytes of a mask file, checking its header records `row_len`.
fn read_mask(path: &Path, row_len: u32) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..8], b"FUCINAMK");
    assert_eq!(u32_at(&b, 8), 1, "version");
    assert_eq!(u32_at(&b, 12), row_len);
    assert_eq!(b.len() as u64, 64 + u64_at(&b, 16));
    b[64..].to_vec()
}

#[test]
fn prepare_writes_masked_rows_for_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("tokenizer.json"), tokenizer_json()).unwrap();
    let chat = d.join("chat.jsonl");
    std::fs::write(
        &chat,
        concat!(
            r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ciao"}]}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao Ciao"}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let (tok, out) = (model.join("tokenizer.json"), d.join("out"));
    let args = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "prepare".to_string(),
            "--tokenizer".into(),
            tok.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--val-fraction".into(),
            "0".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(chat.display().to_string());
        a
    };
    let run = |a: Vec<String>| fucina(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // Without a template anywhere: the error says how to give one.
    let failed = run(args(&out, &["--seq-len", "12"]));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("chat.jsonl:1") && stderr.contains("--chat-template"),
        "{stderr}"
    );

    // tokenizer_config.json next to tokenizer.json is picked up by default.
    std::fs::write(model.join("tokenizer_config.json"), config_json()).unwrap();
    let done = run(args(&out, &["--seq-len", "12"]));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 conversations were cut at 13 tokens"),
        "{stderr}"
    );

    // <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nCiao<|im_end|>\n + one <pad>;
    // then the second, "Ciao Ciao<|im_end|>\n" cut after its <|im_end|>. A reply is trained
    // on through its <|im_end|>, not the newline the template writes after it.
    #[rustfmt::skip]
    let tokens = [
        0, 4, 2, 6, 1, 2, 0, 5, 2, 7, 1, 2, 11,
        0, 4, 2, 8, 1, 2, 0, 5, 2, 7, 3, 7, 1,
    ];
    #[rustfmt::skip]
    let mask = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
    ];
    assert_eq!(read_tokens(&out.join("train_000000.bin"), 12), tokens);
    assert_eq!(read_mask(&out.join("train_000000.mask"), 13), mask);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    let chat_meta = &meta["chat"];
    assert_eq!(chat_meta["row_len"], 13);
    assert_eq!(chat_meta["seq_len"], 12);
    assert_eq!(chat_meta["examples"], 2);
    assert_eq!(chat_meta["truncated"], 1);
    assert_eq!(chat_meta["dropped"], 0);
    assert_eq!(chat_meta["assistant_tokens"], 2 + 4);
    assert_eq!(chat_meta["pad_id"], 11);

    // An explicit --chat-template wins; no --seq-len is an error naming the flag.
    let other = d.join("other.json");
    std::fs::write(
        &other,
        serde_json::json!({"chat_template": "{% for m in messages %}{{ m.content }}\n{% endfor %}"})
            .to_string(),
    )
    .unwrap();
    let out2 = d.join("out2");
    let failed = run(args(&out2, &["--chat-template", other.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("--seq-len"),
        "{stderr}"
    );
    let done = run(args(
        &out2,
        &["--chat-template", other.to_str().unwrap(), "--seq-len", "4"],
    ));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // "Hi\nCiao\n" and "Bye\nCiao Ciao\n" (cut), each reply's span being "Ciao…\n"; pad is
    // the tokenizer's EOS, as this config names no pad token: <|im_end|>, the eos_token of the
    // tokenizer_config.json beside tokenizer.json (not the <|endoftext|> it also holds).
    #[rustfmt::skip]
    let tokens = [6, 2, 7, 2, 1,  8, 2, 7, 3, 7];
    #[rustfmt::skip]
    let mask = [0, 0, 1, 1, 0,  0, 0, 1, 1, 1];
    assert_eq!(read_tokens(&out2.join("train_000000.bin"), 12), tokens);
    assert_eq!(read_mask(&out2.join("train_000000.mask"), 5), mask);
}
