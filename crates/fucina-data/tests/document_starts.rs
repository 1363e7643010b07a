//! `Batch::starts`: where each input token's document starts, for packed
//! conversations (from the masks) and for text streams cut at EOS (on
//! request), checked against the documents found in the tokens themselves.

mod common;

use common::chats::{real_chats, real_setup};
use fucina_data::{
    prepare, sequential_batch, sequential_batch_count, sequential_batch_with_document_mask, Batch,
    BatchSpec, Loader, PrepareOptions, TextTokenizer, TokenDataset,
};
use std::path::Path;
use std::sync::Arc;

const SEQ: usize = 511;

fn spec(seq_len: usize, micro_batch: usize) -> BatchSpec {
    BatchSpec {
        seq_len,
        global_batch_seqs: 2 * micro_batch,
        micro_batch,
        world_size: 1,
        rank: 0,
        seed: 3,
    }
}

fn prepare_chats(dir: &Path, tok: &TextTokenizer, config: &Path, pack: bool) -> Arc<TokenDataset> {
    let out = dir.join(if pack { "packed" } else { "plain" });
    let opts = PrepareOptions {
        val_fraction: 0.0,
        chat_template: Some(config.to_owned()),
        seq_len: Some(SEQ),
        pack,
        ..Default::default()
    };
    prepare(tok, &[real_chats(dir)], &out, &opts).unwrap();
    Arc::new(TokenDataset::open_glob_dir(&out, "train").unwrap())
}

/// Row `r` of `batch`: its inputs and its last target (the whole window).
fn window(batch: &Batch, r: usize, seq_len: usize) -> Vec<u32> {
    let mut w = batch.inputs[r * seq_len..(r + 1) * seq_len].to_vec();
    w.push(batch.targets[(r + 1) * seq_len - 1]);
    w
}

/// Starts from a predicate on each input position: `starts_doc(window, i)`.
fn starts_where(
    window: &[u32],
    seq_len: usize,
    starts_doc: impl Fn(&[u32], usize) -> bool,
) -> Vec<u32> {
    let mut current = 0;
    (0..seq_len)
        .map(|i| {
            if starts_doc(window, i) {
                current = i as u32;
            }
            current
        })
        .collect()
}

/// Every conversation rendered by Qwen2's template opens with its default
/// system prompt (the test chats have none of their own) and nothing else does.
fn conversation_opening(tok: &TextTokenizer) -> Vec<u32> {
    tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
        .unwrap()
}

fn check_invariants(starts: &[u32], seq_len: usize) {
    for row in starts.chunks(seq_len) {
        assert_eq!(row[0], 0);
        for i in 1..seq_len {
            assert!(row[i] == i as u32 || row[i] == row[i - 1], "{row:?}");
        }
    }
}

#[test]
fn packed_conversations_start_where_their_opening_is() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, config) = real_setup();
    let packed = prepare_chats(dir.path(), &tok, &config, true);
    let opening = conversation_opening(&tok);
    let expected = |w: &[u32]| starts_where(w, SEQ, |w, i| w[i..].starts_with(&opening));

    let loader = Loader::new(packed.clone(), spec(SEQ, 4)).unwrap();
    let mut several = 0;
    for step in 0..3 {
        for micro in 0..2 {
            let batch = loader.micro_batch(step, micro);
            let starts = batch
                .starts
                .as_ref()
                .expect("packed data has document starts");
            assert_eq!(starts.len(), batch.inputs.len());
            check_invariants(starts, SEQ);
            for r in 0..4 {
                let want = expected(&window(&batch, r, SEQ));
                several += usize::from(want.iter().any(|&s| s > 0));
                assert_eq!(starts[r * SEQ..(r + 1) * SEQ], want, "step {step} row {r}");
            }
        }
    }
    assert!(several > 0, "some rows hold several conversations");

    // Validation batches read the same starts.
    let n = sequential_batch_count(&packed, SEQ, 3);
    for index in [0, n - 1] {
        let batch = sequential_batch(&packed, SEQ, 3, index);
        let starts = batch.starts.as_ref().unwrap();
        for r in 0..batch.inputs.len() / SEQ {
            assert_eq!(
                starts[r * SEQ..(r + 1) * SEQ],
                expected(&window(&batch, r, SEQ))
            );
        }
    }

    // Unpacked (old-format) rows are one document each: no starts, even when asked to cut at EOS.
    let plain = prepare_chats(dir.path(), &tok, &config, false);
    assert!(plain.has_mask() && !plain.marks_starts());
    let eos = tok.eos_id().unwrap();
    let loader = Loader::new(plain.clone(), spec(SEQ, 4))
        .unwrap()
        .with_document_mask(eos);
    assert_eq!(loader.micro_batch(0, 0).starts, None);
    assert_eq!(sequential_batch(&plain, SEQ, 2, 0).starts, None);

    // A mixture with one packed source: the plain source's rows are one document.
    let sources = vec![(packed, 1.0), (plain, 1.0)];
    let loader = Loader::mixture(sources, spec(SEQ, 8)).unwrap();
    let batch = loader.micro_batch(1, 0);
    let starts = batch.starts.as_ref().unwrap();
    let mut from = [0; 2];
    for r in 0..8 {
        let (source, _) = loader.sample(1, r);
        from[source] += 1;
        let want = match source {
            0 => expected(&window(&batch, r, SEQ)),
            _ => vec![0; SEQ],
        };
        assert_eq!(
            starts[r * SEQ..(r + 1) * SEQ],
            want,
            "row {r} of source {source}"
        );
    }
    assert!(from[0] > 0 && from[1] > 0, "{from:?}");
}

#[test]
fn text_streams_are_cut_after_eos_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, _) = real_setup();
    // Each corpus line a document.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let lines: String = ["en", "it"]
        .iter()
        .flat_map(|l| {
            let text = std::fs::read_to_string(corpus.join(format!("{l}.txt"))).unwrap();
            let docs: Vec<String> = text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(|line| serde_json::json!({ "text": line }).to_string() + "\n")
                .collect();
            docs
        })
        .collect();
    let inputs = [dir.path().join("docs.jsonl")];
    std::fs::write(&inputs[0], lines).unwrap();
    let out = dir.path().join("text");
    let opts = PrepareOptions {
        val_fraction: 0.0,
        ..Default::default()
    };
    prepare(&tok, &inputs, &out, &opts).unwrap();
    let ds = Arc::new(TokenDataset::open_glob_dir(&out, "train").unwrap());
    let eos = tok.eos_id().unwrap();
    let seq = 64;
    let after_eos = |w: &[u32]| starts_where(w, seq, |w, i| i > 0 && w[i - 1] == eos);

    let plain = Loader::new(ds.clone(), spec(seq, 4)).unwrap();
    assert_eq!(plain.micro_batch(0, 0).starts, None);
    let cut = Loader::new(ds.clone(), spec(seq, 4))
        .unwrap()
        .with_document_mask(eos);
    assert_eq!(cut.document_eos(), Some(eos));
    let mut cuts = 0;
    for step in 0..20 {
        let batch = cut.micro_batch(step, 1);
        assert_eq!(
            batch.inputs,
            plain.micro_batch(step, 1).inputs,
            "same tokens"
        );
        let starts = batch.starts.as_ref().unwrap();
        check_invariants(starts, seq);
        for r in 0..4 {
            let want = after_eos(&window(&batch, r, seq));
            cuts += want.iter().filter(|&&s| s > 0).count();
            assert_eq!(starts[r * seq..(r + 1) * seq], want);
        }
    }
    assert!(cuts > 0, "some windows cross a document boundary");

    assert_eq!(sequential_batch(&ds, seq, 2, 0).starts, None);
    let n = sequential_batch_count(&ds, seq, 2);
    for index in 0..n {
        let batch = sequential_batch_with_document_mask(&ds, seq, 2, index, Some(eos));
        let starts = batch.starts.as_ref().unwrap();
        for r in 0..2 {
            assert_eq!(
                starts[r * seq..(r + 1) * seq],
                after_eos(&window(&batch, r, seq))
            );
        }
    }
}
