//! `prepare --part I/N` then `--merge` gives byte for byte what one `prepare` gives.

mod common;

use fucina_data::prepare::{merge_parts, prepare_part, Part, PARTS_DIR};
use fucina_data::{prepare, PrepareOptions, TextTokenizer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Files of very different sizes (some empty, one JSONL), in nested directories.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let root = dir.join("corpus");
    let mut n = 0;
    for (i, repeat) in [3, 0, 1, 9, 2, 0, 5, 1, 4].iter().enumerate() {
        let sub = root.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let docs: Vec<String> = (0..*repeat)
            .map(|_| {
                n += 1;
                format!("{} ({n})", common::DOCS[n % common::DOCS.len()])
            })
            .collect();
        std::fs::write(sub.join(format!("f{i}.txt")), docs.join("\n\n")).unwrap();
    }
    let lines: Vec<String> = (0..6)
        .map(|i| serde_json::json!({ "text": format!("{} [{i}]", common::DOCS[i]) }).to_string())
        .collect();
    std::fs::write(root.join("extra.jsonl"), lines.join("\n")).unwrap();
    vec![root]
}

fn options(val_fraction: f64) -> PrepareOptions {
    PrepareOptions {
        val_fraction,
        // Shards much smaller than a part, so the merge has to cut them again.
        shard_tokens: 37,
        ..Default::default()
    }
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(p.is_file(), "{name} left in {}", dir.display());
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn prepare_in_parts(
    tok: &TextTokenizer,
    inputs: &[PathBuf],
    out: &Path,
    opts: &PrepareOptions,
    count: usize,
) {
    // Parts finish in any order (array tasks); run them backwards.
    for index in (0..count).rev() {
        prepare_part(tok, inputs, out, opts, Part { index, count }).unwrap();
    }
    merge_parts(out, false).unwrap();
}

fn assert_same(single: &Path, merged: &Path, what: &str) {
    let (a, b) = (files_of(single), files_of(merged));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: file names"
    );
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{what}: {name} differs");
    }
}

#[test]
fn merged_parts_equal_one_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(tmp.path());
    let inputs = inputs(tmp.path());
    for val_fraction in [0.0, 0.25] {
        let single = tmp.path().join(format!("single-{val_fraction}"));
        let summary = prepare(&tok, &inputs, &single, &options(val_fraction)).unwrap();
        assert!(summary.train_tokens > 10 * 37, "several shards");
        // 11 input files: 12 parts leaves parts with no file.
        for count in [1, 2, 3, 4, 7, 12] {
            let merged = tmp.path().join(format!("merged-{val_fraction}-{count}"));
            prepare_in_parts(&tok, &inputs, &merged, &options(val_fraction), count);
            assert_same(
                &single,
                &merged,
                &format!("{count} parts, val {val_fraction}"),
            );
        }
    }
}

/// The split's corrections (the only validation document when none hashes there, the only
/// training document when all do) need every part's hashes: the merge must apply them as one
/// process does, wherever the moved document lies.
#[test]
fn corrections_of_the_split_survive_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(tmp.path());
    let root = tmp.path().join("tiny");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..3 {
        let docs = [common::DOCS[i], common::DOCS[i + 3]].join("\n\n");
        std::fs::write(root.join(format!("f{i}.txt")), docs).unwrap();
    }
    let inputs = vec![root];
    for val_fraction in [1e-9, 0.999_999] {
        let single = tmp.path().join(format!("single-{val_fraction}"));
        let s = prepare(&tok, &inputs, &single, &options(val_fraction)).unwrap();
        assert_eq!(
            (s.train_docs, s.val_docs),
            if val_fraction < 0.5 { (5, 1) } else { (1, 5) }
        );
        for count in [2, 3] {
            let merged = tmp.path().join(format!("merged-{val_fraction}-{count}"));
            prepare_in_parts(&tok, &inputs, &merged, &options(val_fraction), count);
            assert_same(
                &single,
                &merged,
                &format!("{count} parts, val {val_fraction}"),
            );
        }
    }
}

#[test]
fn merge_refuses_incomplete_or_mismatched_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(tmp.path());
    let inputs = inputs(tmp.path());
    let out = tmp.path().join("out");
    let part = |index, opts: &PrepareOptions| {
        prepare_part(&tok, &inputs, &out, opts, Part { index, count: 3 }).unwrap()
    };
    part(0, &options(0.1));
    part(2, &options(0.1));
    let err = format!("{:#}", merge_parts(&out, false).unwrap_err());
    assert!(err.contains("parts 1/3 are missing"), "{err}");
    assert!(!out.join("meta.json").exists());

    part(1, &options(0.2));
    let err = format!("{:#}", merge_parts(&out, false).unwrap_err());
    assert!(err.contains("other inputs, tokenizer or options"), "{err}");
    assert!(!out.join("meta.json").exists());

    // Redoing the odd part fixes it; the parts are gone once merged.
    part(1, &options(0.1));
    merge_parts(&out, false).unwrap();
    assert!(out.join("meta.json").is_file());
    assert!(!out.join(PARTS_DIR).exists());
    let err = format!("{:#}", merge_parts(&out, false).unwrap_err());
    assert!(err.contains("no parts to merge"), "{err}");
}

#[test]
fn parts_refuse_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, tok) = common::trained_tokenizer(tmp.path());
    let chat = tmp.path().join("chat.jsonl");
    std::fs::write(
        &chat,
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
    )
    .unwrap();
    let err = prepare_part(
        &tok,
        &[chat],
        &tmp.path().join("out"),
        &options(0.1),
        Part { index: 0, count: 1 },
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("chat.jsonl:1") && err.contains("without --part"),
        "{err}"
    );
}
