//! Parquet and compressed inputs: each must give exactly the token shards
//! of the same documents prepared from a plain file, and bad input must fail
//! naming the file and line (or row) before any output is claimed.

mod common;

use fucina_data::{prepare, train_bpe, PrepareOptions, TextTokenizer};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Documents with blank lines inside, so text files could not hold them.
fn documents() -> Vec<String> {
    (0..40)
        .map(|i| {
            let base = common::DOCS[i % common::DOCS.len()];
            match i % 3 {
                0 => format!("{base} #{i}"),
                1 => format!("{base}\n\nparagraph {i}\n"),
                _ => format!("{i}: {base}"),
            }
        })
        .collect()
}

fn jsonl(docs: &[String]) -> Vec<u8> {
    let lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    (lines.join("\n") + "\n").into_bytes()
}

/// Text documents cannot hold blank lines; these are the ones that can.
fn text_file(docs: &[String]) -> Vec<u8> {
    let docs: Vec<&str> = docs
        .iter()
        .map(String::as_str)
        .filter(|d| !d.contains("\n\n"))
        .collect();
    (docs.join("\n\n") + "\n").into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // Two members: `cat a.gz b.gz` is what split corpora often are.
    let mid = bytes.len() / 2;
    let mut out = Vec::new();
    for part in [&bytes[..mid], &bytes[mid..]] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(part).unwrap();
        out.extend(enc.finish().unwrap());
    }
    out
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
    // As the zstd command line writes it, so corruption is always detected.
    enc.include_checksum(true).unwrap();
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A parquet file of `docs` (`None` = null) in the column `column`, beside
/// an int64 `id`, in row groups of `group_rows`.
fn write_parquet(path: &Path, column: &str, docs: &[Option<&str>], group_rows: usize) {
    let schema = format!("message doc {{ required int64 id; optional binary {column} (UTF8); }}");
    let schema = Arc::new(parse_message_type(&schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for (g, group) in docs.chunks(group_rows).enumerate() {
        let mut rg = writer.next_row_group().unwrap();
        let ids: Vec<i64> = (0..group.len())
            .map(|i| (g * group_rows + i) as i64)
            .collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        let values: Vec<ByteArray> = group
            .iter()
            .flatten()
            .map(|d| ByteArray::from(*d))
            .collect();
        let defs: Vec<i16> = group.iter().map(|d| d.is_some() as i16).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&defs), None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

fn tokenizer(dir: &Path) -> TextTokenizer {
    common::trained_tokenizer(dir).1
}

fn options() -> PrepareOptions {
    // All to train: the split may key documents by file, and the files differ.
    PrepareOptions {
        val_fraction: 0.0,
        shard_tokens: 500,
        ..Default::default()
    }
}

/// The token (and mask) shards of a prepare output, by name.
fn shards(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "meta.json")
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn prepared(
    tok: &TextTokenizer,
    inputs: &[PathBuf],
    out: &Path,
    opts: &PrepareOptions,
) -> BTreeMap<String, Vec<u8>> {
    prepare(tok, inputs, out, opts).unwrap();
    let shards = shards(out);
    assert!(
        shards.contains_key("train_000001.bin"),
        "several shards: {:?}",
        shards.keys()
    );
    shards
}

#[test]
fn compressed_inputs_match_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let docs = documents();
    let (json, text) = (jsonl(&docs), text_file(&docs));
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        vec![path]
    };
    let plain_json = prepared(
        &tok,
        &write("d.jsonl", &json),
        &dir.path().join("pj"),
        &options(),
    );
    let plain_text = prepared(
        &tok,
        &write("d.txt", &text),
        &dir.path().join("pt"),
        &options(),
    );
    assert_ne!(plain_json, plain_text);
    for (name, bytes, expected) in [
        ("d.jsonl.gz", gzip(&json), &plain_json),
        ("d.jsonl.zst", zstd(&json), &plain_json),
        ("d.txt.gz", gzip(&text), &plain_text),
        ("d.txt.zst", zstd(&text), &plain_text),
    ] {
        let out = dir.path().join(format!("out-{name}"));
        assert_eq!(
            &prepared(&tok, &write(name, &bytes), &out, &options()),
            expected,
            "{name}"
        );
    }
}

#[test]
fn directories_take_every_format_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let docs = documents();
    let (a, b, c) = (&docs[..10], &docs[10..25], &docs[25..]);
    let plain = dir.path().join("plain");
    let packed = dir.path().join("packed");
    std::fs::create_dir_all(plain.join("sub")).unwrap();
    std::fs::create_dir_all(packed.join("sub")).unwrap();
    std::fs::write(plain.join("a.jsonl"), jsonl(a)).unwrap();
    std::fs::write(plain.join("b.jsonl"), jsonl(b)).unwrap();
    std::fs::write(plain.join("sub/c.txt"), text_file(c)).unwrap();
    std::fs::write(packed.join("a.jsonl.zst"), zstd(&jsonl(a))).unwrap();
    let b: Vec<Option<&str>> = b.iter().map(|d| Some(d.as_str())).collect();
    write_parquet(&packed.join("b.parquet"), "text", &b, 4);
    std::fs::write(packed.join("sub/c.txt.gz"), gzip(&text_file(c))).unwrap();
    std::fs::write(packed.join("notes.csv.gz"), gzip(b"not,a,document\n")).unwrap();

    let expected = prepared(&tok, &[plain], &dir.path().join("o1"), &options());
    assert_eq!(
        prepared(&tok, &[packed], &dir.path().join("o2"), &options()),
        expected
    );
}

#[test]
fn parquet_rows_with_nulls_and_row_groups_match_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let docs = documents();
    // Nulls and empty strings are empty documents, skipped as in JSONL.
    let rows: Vec<Option<&str>> = docs
        .iter()
        .enumerate()
        .flat_map(|(i, d)| match i % 7 {
            2 => vec![None, Some(d.as_str())],
            5 => vec![Some(""), Some(d.as_str())],
            _ => vec![Some(d.as_str())],
        })
        .collect();
    let parquet = dir.path().join("d.parquet");
    write_parquet(&parquet, "content", &rows, 9);
    let json = dir.path().join("d.jsonl");
    std::fs::write(&json, jsonl(&docs)).unwrap();

    let expected = prepared(&tok, &[json], &dir.path().join("o1"), &options());
    let opts = PrepareOptions {
        text_column: "content".into(),
        ..options()
    };
    assert_eq!(
        prepared(&tok, &[parquet], &dir.path().join("o2"), &opts),
        expected
    );
}

/// Files written by pyarrow as Hugging Face datasets write them
/// (scripts/make_parquet_fixture.py): snappy and zstd, dictionary pages,
/// data pages v1 and v2, three row groups, nulls.
#[test]
fn pyarrow_fixtures_match_their_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let fixture = |name: &str| PathBuf::from(FIXTURES).join(name);
    let expected = prepared(
        &tok,
        &[fixture("hf_docs.jsonl")],
        &dir.path().join("j"),
        &options(),
    );
    for name in ["hf_snappy.parquet", "hf_zstd.parquet"] {
        let out = dir.path().join(name);
        assert_eq!(
            prepared(&tok, &[fixture(name)], &out, &options()),
            expected,
            "{name}"
        );
    }

    // The tokenizer trainer reads the same documents.
    let from_json = dir.path().join("tj.json");
    let from_parquet = dir.path().join("tp.json");
    train_bpe(&[fixture("hf_docs.jsonl")], 300, &from_json, false).unwrap();
    train_bpe(&[fixture("hf_zstd.parquet")], 300, &from_parquet, false).unwrap();
    assert_eq!(
        std::fs::read(from_json).unwrap(),
        std::fs::read(from_parquet).unwrap()
    );
}

/// Runs prepare expecting failure; the output must not have been created.
fn failure(tok: &TextTokenizer, input: &Path, opts: &PrepareOptions) -> String {
    let out = input.with_extension("out");
    let err = prepare(tok, &[input.to_owned()], &out, opts).unwrap_err();
    assert!(!out.exists(), "{} was created", out.display());
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&input.display().to_string()),
        "file not named: {msg}"
    );
    msg
}

#[test]
fn bad_parquet_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let path = dir.path().join("d.parquet");
    write_parquet(&path, "content", &[Some("a doc")], 10);

    let msg = failure(&tok, &path, &options());
    assert!(
        msg.contains("no column \"text\"") && msg.contains("id, content"),
        "{msg}"
    );
    let opts = |column: &str| PrepareOptions {
        text_column: column.into(),
        ..options()
    };
    let msg = failure(&tok, &path, &opts("id"));
    assert!(msg.contains("\"id\"") && msg.contains("INT64"), "{msg}");

    // Invalid UTF-8 in a string column: named by its row, 1-based.
    let bad = dir.path().join("bad.parquet");
    let rows = [Some("fine"), None, Some("also fine"), Some("caf\u{e9}")];
    write_parquet(&bad, "text", &rows, 2);
    let mut bytes = std::fs::read(&bad).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == "caf\u{e9}".as_bytes()[..4].as_ref())
        .unwrap();
    bytes[at + 3] = 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let msg = failure(&tok, &bad, &options());
    assert!(msg.contains("row 4") && msg.contains("UTF-8"), "{msg}");
}

#[test]
fn broken_compressed_streams_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(dir.path());
    let docs = documents();
    let json = jsonl(&docs);
    let n_lines = docs.len();

    for (ext, bytes) in [("gz", gzip(&json)), ("zst", zstd(&json))] {
        let cut = dir.path().join(format!("cut.jsonl.{ext}"));
        std::fs::write(&cut, &bytes[..bytes.len() - 9]).unwrap();
        let msg = failure(&tok, &cut, &options());
        assert!(msg.contains("truncated"), "{msg}");
        // The error comes at the line being read when the data ends: near
        // the end for gzip, line 1 for zstd, whose one block is lost whole.
        let line: usize = msg
            .split(&format!("{}:", cut.display()))
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line number: {msg}"));
        let lowest = if ext == "gz" { n_lines / 2 } else { 1 };
        assert!((lowest..=n_lines + 1).contains(&line), "{msg}");

        let mut corrupt = bytes.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 8] {
            *b ^= 0x5a;
        }
        let path = dir.path().join(format!("corrupt.jsonl.{ext}"));
        std::fs::write(&path, corrupt).unwrap();
        failure(&tok, &path, &options());
    }

    // A JSON error on line 7 of a compressed file.
    let mut lines: Vec<String> = docs[..10]
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    lines[6] = "{\"text\": \"unterminated".into();
    let path = dir.path().join("bad.jsonl.zst");
    std::fs::write(&path, zstd((lines.join("\n") + "\n").as_bytes())).unwrap();
    let msg = failure(&tok, &path, &options());
    assert!(msg.contains(&format!("{}:7:", path.display())), "{msg}");
}

/// Conversations keep working from compressed JSONL: the rows and masks
/// equal those of the plain file.
#[test]
fn compressed_conversations_match_plain() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenizer_config.json");
    let cfg = serde_json::json!({"chat_template": common::CHATML, "eos_token": "<|im_end|>"});
    std::fs::write(&config, cfg.to_string()).unwrap();
    let line = |u: &str, a: &str| {
        let m = [("user", u), ("assistant", a)]
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}));
        serde_json::json!({ "messages": m }).to_string()
    };
    let lines = [
        line("Hi", "Hello there"),
        line("Bye", "Ciao"),
        line("Hi there", "Bye"),
    ];
    let text = lines.join("\n") + "\n";
    let plain = dir.path().join("c.jsonl");
    let packed = dir.path().join("c.jsonl.zst");
    std::fs::write(&plain, &text).unwrap();
    std::fs::write(&packed, zstd(text.as_bytes())).unwrap();
    let opts = PrepareOptions {
        chat_template: Some(config),
        seq_len: Some(12),
        ..options()
    };
    let tok = common::word_tokenizer();
    let run = |input: PathBuf, out: &str| {
        let out = dir.path().join(out);
        prepare(&tok, &[input], &out, &opts).unwrap();
        shards(&out)
    };
    let expected = run(plain, "o1");
    assert!(
        expected.keys().any(|k| k.ends_with(".mask")),
        "{:?}",
        expected.keys()
    );
    assert_eq!(run(packed, "o2"), expected);
}
