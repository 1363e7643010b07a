//! End-to-end preparation with a really trained tokenizer.

mod common;

use fucina_data::{prepare, PrepareMeta, PrepareOptions, TextTokenizer, TokenDataset};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const JSONL_DOCS: &[&str] = &[
    "JSON document one: ä ł ø ş",
    "A document that mentions <|endoftext|> without ending there",
    "JSON document two\n\nwith a blank line inside",
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let corpus = common::write_corpus(dir, common::DOCS);
    let jsonl = dir.join("extra.jsonl");
    let lines: Vec<String> = JSONL_DOCS
        .iter()
        .map(|t| serde_json::json!({"text": t, "id": 1}).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n\n") + "\n").unwrap();
    vec![corpus, jsonl]
}

fn all_docs() -> Vec<String> {
    let mut docs: Vec<String> = common::DOCS
        .iter()
        .chain(JSONL_DOCS)
        .map(|s| s.to_string())
        .collect();
    docs.sort();
    docs
}

fn tokens(dir: &Path, prefix: &str) -> Vec<u32> {
    let ds = TokenDataset::open_glob_dir(dir, prefix).unwrap();
    let mut out = vec![0; ds.len()];
    ds.read(0, &mut out);
    out
}

/// Splits a stream at EOS and decodes each document.
fn decode_docs(tok: &TextTokenizer, stream: &[u32]) -> Vec<String> {
    let eos = tok.eos_id().unwrap();
    assert_eq!(stream.last(), Some(&eos), "stream ends with EOS");
    stream[..stream.len() - 1]
        .split(|&t| t == eos)
        .map(|d| tok.decode(d).unwrap())
        .collect()
}

fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn prepare_writes_every_document_once_with_eos() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(dir.path());
    let inputs = inputs(&dir.path().join("in"));
    let out = dir.path().join("out");
    let opts = PrepareOptions {
        val_fraction: 0.2,
        shard_tokens: 40,
        progress: false,
        ..Default::default()
    };
    let summary = prepare(&tok, &inputs, &out, &opts).unwrap();

    let (train, val) = (tokens(&out, "train"), tokens(&out, "val"));
    let eos = tok.eos_id().unwrap();
    let n_docs = all_docs().len() as u64;
    assert_eq!(summary.train_docs + summary.val_docs, n_docs);
    assert!(summary.val_docs >= 1 && summary.train_docs >= 1);
    assert_eq!(
        train.iter().filter(|&&t| t == eos).count() as u64,
        summary.train_docs
    );
    assert_eq!(
        val.iter().filter(|&&t| t == eos).count() as u64,
        summary.val_docs
    );
    assert_eq!(
        (train.len() as u64, val.len() as u64),
        (summary.train_tokens, summary.val_tokens)
    );

    let mut decoded = decode_docs(&tok, &train);
    decoded.extend(decode_docs(&tok, &val));
    decoded.sort();
    assert_eq!(decoded, all_docs());

    // Shards are cut at exactly shard_tokens, documents straddling them.
    let meta = PrepareMeta::read(&out).unwrap();
    assert!(meta.train.shards.len() > 1);
    for name in &meta.train.shards[..meta.train.shards.len() - 1] {
        assert_eq!(
            std::fs::metadata(out.join(name)).unwrap().len(),
            64 + 2 * 40
        );
    }
    assert_eq!(
        (meta.vocab_size, meta.eos_id, meta.bytes_per_token),
        (tok.vocab_size(), eos, 2)
    );
    assert_eq!(meta.tokenizer_sha256, tok.sha256());
    assert_eq!(
        (meta.train.docs, meta.val.docs),
        (summary.train_docs, summary.val_docs)
    );
    assert_eq!(
        meta.files.len(),
        5,
        "4 text files and the JSONL; the .csv is skipped"
    );
}

#[test]
fn rerunning_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(dir.path());
    let inputs = inputs(&dir.path().join("in"));
    let out = dir.path().join("out");
    let opts = PrepareOptions {
        val_fraction: 0.3,
        shard_tokens: 64,
        progress: false,
        ..Default::default()
    };
    let first = prepare(&tok, &inputs, &out, &opts).unwrap();
    let before = dir_bytes(&out);
    assert!(before.contains_key("meta.json") && before.contains_key("train_000000.bin"));
    assert!(before.keys().all(|k| !k.ends_with(".tmp")));

    // Same directory (overwriting its own output) and a fresh one.
    let again = prepare(&tok, &inputs, &out, &opts).unwrap();
    assert_eq!(first, again);
    assert_eq!(dir_bytes(&out), before);
    let out2 = dir.path().join("out2");
    prepare(&tok, &inputs, &out2, &opts).unwrap();
    assert_eq!(dir_bytes(&out2), before);

    // A larger shard size replaces the old shards instead of leaving stale ones.
    let big = PrepareOptions {
        shard_tokens: 1_000_000,
        ..opts
    };
    prepare(&tok, &inputs, &out, &big).unwrap();
    let names: Vec<String> = dir_bytes(&out).into_keys().collect();
    assert_eq!(names, ["meta.json", "train_000000.bin", "val_000000.bin"]);
}

#[test]
fn bad_jsonl_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(dir.path());
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n\n{\"txt\": \"wrong field\"}\n").unwrap();
    let out = dir.path().join("out");
    let inputs = [bad.clone()];
    let err = format!(
        "{:#}",
        prepare(&tok, &inputs, &out, &PrepareOptions::default()).unwrap_err()
    );
    assert!(
        err.contains("bad.jsonl:3") && err.contains("\"text\""),
        "{err}"
    );
    assert!(
        !out.exists(),
        "nothing is written when an input is malformed"
    );

    std::fs::write(&bad, "{\"text\": 5}\n").unwrap();
    let err = format!(
        "{:#}",
        prepare(&tok, &inputs, &out, &PrepareOptions::default()).unwrap_err()
    );
    assert!(err.contains("bad.jsonl:1"), "{err}");
    std::fs::write(&bad, "{\"text\": \"a\"}\nnot json\n").unwrap();
    let err = format!(
        "{:#}",
        prepare(&tok, &inputs, &out, &PrepareOptions::default()).unwrap_err()
    );
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

#[test]
fn foreign_output_directory_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(dir.path());
    let inputs = inputs(&dir.path().join("in"));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("train_000000.bin"), b"someone's").unwrap();
    std::fs::write(out.join("thesis.tex"), b"precious").unwrap();
    let err = prepare(&tok, &inputs, &out, &PrepareOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing") && err.contains("thesis.tex"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("thesis.tex")).unwrap(), b"precious");
    assert_eq!(
        std::fs::read(out.join("train_000000.bin")).unwrap(),
        b"someone's"
    );
}

#[test]
fn tokenizer_without_eos_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::trained_tokenizer(dir.path());
    let json = std::fs::read_to_string(path)
        .unwrap()
        .replace("<|endoftext|>", "<|pad|>");
    let tok = TextTokenizer::from_json_str(&json).unwrap();
    assert_eq!(tok.eos_id(), None);
    let inputs = inputs(&dir.path().join("in"));
    let err = prepare(
        &tok,
        &inputs,
        &dir.path().join("out"),
        &PrepareOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no EOS token") && err.contains("<|endoftext|>"),
        "{err}"
    );
}
