//! Datasets read as one stream across shard boundaries.

use fucina_data::{ShardWriter, TokenDataset};
use std::path::{Path, PathBuf};

/// Writes `sizes.len()` shards whose concatenation is `0, 1, 2, …` (mod vocab).
fn shards(dir: &Path, prefix: &str, sizes: &[usize], vocab: u32) -> (Vec<PathBuf>, Vec<u32>) {
    let mut flat = Vec::new();
    let mut paths = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let path = dir.join(format!("{prefix}_{i:06}.bin"));
        let tokens: Vec<u32> = (flat.len()..flat.len() + n)
            .map(|t| (t as u32 * 7919) % vocab)
            .collect();
        let mut w = ShardWriter::create(&path, vocab, None).unwrap();
        w.push(&tokens).unwrap();
        w.finish().unwrap();
        flat.extend(tokens);
        paths.push(path);
    }
    (paths, flat)
}

#[test]
fn reads_across_boundaries_equal_flat_vec() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, flat) = shards(dir.path(), "train", &[5, 0, 1, 13, 7], 70_000);
    let ds = TokenDataset::open(&paths).unwrap();
    assert_eq!(ds.len(), flat.len());
    for start in 0..=flat.len() {
        for len in 0..=flat.len() - start {
            let mut out = vec![u32::MAX; len];
            ds.read(start, &mut out);
            assert_eq!(out, flat[start..start + len], "start {start} len {len}");
        }
    }
}

#[test]
fn glob_dir_orders_by_name_and_ignores_others() {
    let dir = tempfile::tempdir().unwrap();
    let (_, flat) = shards(dir.path(), "train", &[3, 4, 5], 300);
    shards(dir.path(), "val", &[2], 300);
    std::fs::write(dir.path().join("train_000009.bin.tmp"), b"junk").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"junk").unwrap();
    let ds = TokenDataset::open_glob_dir(dir.path(), "train").unwrap();
    assert_eq!(ds.shards().len(), 3);
    let mut out = vec![0; ds.len()];
    ds.read(0, &mut out);
    assert_eq!(out, flat);
    assert_eq!(ds.vocab_size(), Some(300));

    let err = TokenDataset::open_glob_dir(dir.path(), "test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no test_*.bin shards"), "{err}");
}

#[test]
fn mismatched_vocab_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = shards(dir.path(), "a", &[3], 300);
    let (b, _) = shards(dir.path(), "b", &[3], 400);
    a.extend(b);
    let err = TokenDataset::open(&a).unwrap_err().to_string();
    assert!(err.contains("vocab size 400 differs from 300"), "{err}");
}

#[test]
#[should_panic(expected = "past the end")]
fn read_past_end_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = shards(dir.path(), "train", &[3, 3], 300);
    let ds = TokenDataset::open(&paths).unwrap();
    ds.read(4, &mut [0; 3]);
}
