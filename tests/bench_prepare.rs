//! scripts/bench-prepare.sh in its dry run (1 MB, a tokenizer trained on it, no network): its
//! table counts the tokens of the corpus it generated, as tokenised here document by document.

use fucina_data::TextTokenizer;
use std::path::Path;
use std::process::Command;

/// The generated parts hold documents separated by one empty line (the built-in corpus has no
/// empty line inside a document) and end with a newline.
fn corpus_tokens(tokenizer: &TextTokenizer, dir: &Path) -> (u64, u64) {
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    parts.sort();
    assert!(!parts.is_empty(), "no parts in {}", dir.display());
    let (mut bytes, mut tokens) = (0, 0);
    for part in parts {
        let text = std::fs::read_to_string(&part).unwrap();
        bytes += text.len() as u64;
        for doc in text.trim_end_matches('\n').split("\n\n") {
            // One EOS per document, as prepare writes them.
            tokens += tokenizer.encode(doc).unwrap().len() as u64 + 1;
        }
    }
    (bytes, tokens)
}

#[test]
fn dry_run_table_counts_the_corpus_tokens() {
    let cache = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/bench-prepare.sh"))
        .args(["--dry-run", "--threads", "1 2", "--python", "python3"])
        .args(["--binary", env!("CARGO_BIN_EXE_fucina"), "--cache"])
        .arg(cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| threads"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "one row per thread count: {stdout}");

    let tokenizer = TextTokenizer::from_file(cache.path().join("dry-run-tokenizer.json")).unwrap();
    let (bytes, tokens) = corpus_tokens(&tokenizer, &cache.path().join("corpus-1"));
    assert!(bytes >= 1_000_000, "{bytes} bytes of corpus for 1 MB");
    for (row, threads) in rows.iter().zip(["1", "2"]) {
        assert_eq!(row[0], threads, "{stdout}");
        assert_eq!(row[1], tokens.to_string(), "{stdout}");
        let seconds: f64 = row[2].parse().unwrap();
        let rate: f64 = row[3].parse().unwrap();
        assert!(
            (rate * seconds - tokens as f64).abs() <= 0.01 * tokens as f64,
            "{rate} tokens/s × {seconds} s ≠ {tokens} tokens: {stdout}"
        );
    }
}

/// scripts/bench-pack.sh with the built-in tokenizer (no network): the row counts of its summary
/// are those prepare printed, and packing at least halves the rows.
#[test]
fn pack_bench_reports_fewer_rows_than_conversations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/bench-pack.sh"))
        .args(["--conversations", "300", "--seq-len", "4095"])
        .args(["--binary", env!("CARGO_BIN_EXE_fucina"), "--tokenizer"])
        .arg(root.join("crates/fucina-data/corpus/tokenizer.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let numbers = |line: &str| -> Vec<f64> {
        line.replace(',', "")
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|w| w.trim_matches('.').parse().ok())
            .collect()
    };
    let packed = stdout.lines().find(|l| l.starts_with("packed ")).unwrap();
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("rows per epoch"))
        .unwrap();
    // packed N conversations into R rows of L tokens: P % padding (unpacked: N rows, Q % padding)
    let p = numbers(packed);
    let (conversations, rows, unpacked) = (p[0], p[1], p[4]);
    assert_eq!(conversations, 300.0, "{packed}");
    assert_eq!(unpacked, conversations, "{packed}");
    assert!(rows < unpacked / 2.0, "{packed}");
    let s = numbers(summary);
    assert_eq!((s[0], s[1]), (unpacked, rows), "{summary}");
}
