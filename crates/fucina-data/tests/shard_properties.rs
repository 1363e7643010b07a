//! Property tests of the shard reader over generated inputs: any token sequence round-trips, and
//! no truncation or byte corruption of a valid shard (or of an llm.c one) makes `open` or a read
//! within the length it reports panic or read past the file. Seeded, so a failure reproduces.

use fucina_data::{ShardWriter, TokenShard};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn write(path: &Path, vocab: u32, tokens: &[u32]) {
    let mut w = ShardWriter::create(path, vocab, Some(0)).unwrap();
    w.push(tokens).unwrap();
    w.finish().unwrap();
}

/// Opens whatever is at `path`; if it opens, reads every token it claims to hold.
fn open_and_read(path: &Path) -> Option<Vec<u32>> {
    let shard = TokenShard::open(path).ok()?;
    let mut out = vec![0; shard.len()];
    shard.read(0, &mut out);
    Some(out)
}

#[test]
fn random_sequences_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    for case in 0..200 {
        let vocab = if case % 2 == 0 {
            rng.random_range(1..=65_536)
        } else {
            rng.random_range(65_537..=1 << 24)
        };
        let len = rng.random_range(0..300);
        let tokens: Vec<u32> = (0..len).map(|_| rng.random_range(0..vocab)).collect();
        let path = dir.path().join(format!("{case}.bin"));
        write(&path, vocab, &tokens);
        assert_eq!(
            open_and_read(&path),
            Some(tokens),
            "case {case}, vocab {vocab}"
        );
    }
}

#[test]
fn damaged_shards_are_refused_or_read_safely() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.bin");
    let tokens: Vec<u32> = (0..500).map(|i| (i * 7) % 1000).collect();
    write(&good, 1000, &tokens);
    let bytes = std::fs::read(&good).unwrap();
    let mut llmc = Vec::new();
    for v in [20240520u32, 1, 500].into_iter().chain([0; 253]) {
        llmc.extend(v.to_le_bytes());
    }
    llmc.extend(tokens.iter().flat_map(|&t| (t as u16).to_le_bytes()));

    let mut rng = StdRng::seed_from_u64(2);
    let path = dir.path().join("bad.bin");
    for case in 0..2000 {
        let base = if case % 2 == 0 { &bytes } else { &llmc };
        let mut bad = base.clone();
        match case % 4 {
            // Truncated anywhere, header included.
            0 | 1 => bad.truncate(rng.random_range(0..base.len())),
            // Bytes flipped in the header, where the lengths and widths live.
            2 => {
                let header = 64.min(bad.len());
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..header);
                    bad[i] = rng.random();
                }
            }
            // Extra bytes after the data.
            _ => bad.extend((0..rng.random_range(1..9)).map(|_| rng.random::<u8>())),
        }
        std::fs::write(&path, &bad).unwrap();
        // Must not panic; if it opens, what it claims (at least 2 bytes a token) is in the file.
        if let Some(read) = open_and_read(&path) {
            assert!(
                read.len() * 2 <= bad.len(),
                "case {case}: claims more than the file holds"
            );
        }
    }
}
