//! Shard format: round trips, the byte layout, and rejection of bad files.

use fucina_data::shard::{ShardKind, TokenWidth};
use fucina_data::{ShardWriter, TokenShard};
use std::path::Path;

fn write(path: &Path, vocab: u32, eos: Option<u32>, tokens: &[u32]) -> u64 {
    let mut w = ShardWriter::create(path, vocab, eos).unwrap();
    // Two pushes, to check they append.
    let (a, b) = tokens.split_at(tokens.len() / 2);
    w.push(a).unwrap();
    w.push(b).unwrap();
    w.finish().unwrap()
}

fn read_all(shard: &TokenShard) -> Vec<u32> {
    let mut out = vec![0; shard.len()];
    shard.read(0, &mut out);
    out
}

#[test]
fn u16_round_trip_and_byte_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    let tokens = [5u32, 299, 0, 17, 299];
    assert_eq!(write(&path, 300, Some(0), &tokens), 5);

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 64 + 2 * tokens.len());
    assert_eq!(&bytes[0..8], b"FUCINATK");
    assert_eq!(bytes[8..12], 1u32.to_le_bytes());
    assert_eq!(bytes[12..16], 2u32.to_le_bytes());
    assert_eq!(bytes[16..24], 5u64.to_le_bytes());
    assert_eq!(bytes[24..28], 300u32.to_le_bytes());
    assert_eq!(bytes[28..32], 0u32.to_le_bytes());
    assert!(bytes[32..64].iter().all(|&b| b == 0));
    assert_eq!(&bytes[64..68], &[5, 0, 0x2b, 0x01]);

    let shard = TokenShard::open(&path).unwrap();
    assert_eq!(shard.kind(), ShardKind::Fucina);
    assert_eq!(shard.width(), TokenWidth::U16);
    assert_eq!(
        (shard.len(), shard.vocab_size(), shard.eos_id()),
        (5, Some(300), Some(0))
    );
    assert_eq!(read_all(&shard), tokens);
    let mut mid = [0u32; 2];
    shard.read(2, &mut mid);
    assert_eq!(mid, [0, 17]);
}

#[test]
fn u32_round_trip_with_large_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let tokens = [65_535u32, 65_536, 128_000, 1, 200_000, 0];
    write(&path, 200_001, None, &tokens);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[12..16], 4u32.to_le_bytes());
    assert_eq!(bytes[28..32], u32::MAX.to_le_bytes());
    assert_eq!(bytes.len(), 64 + 4 * tokens.len());

    let shard = TokenShard::open(&path).unwrap();
    assert_eq!(shard.width(), TokenWidth::U32);
    assert_eq!((shard.vocab_size(), shard.eos_id()), (Some(200_001), None));
    assert_eq!(read_all(&shard), tokens);
}

#[test]
fn width_boundary_at_65536() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("s.bin"), dir.path().join("l.bin"));
    write(&small, 65_536, None, &[65_535, 0]);
    write(&large, 65_537, None, &[65_536, 0]);
    assert_eq!(TokenShard::open(&small).unwrap().width(), TokenWidth::U16);
    assert_eq!(read_all(&TokenShard::open(&small).unwrap()), [65_535, 0]);
    assert_eq!(TokenShard::open(&large).unwrap().width(), TokenWidth::U32);
}

#[test]
fn empty_shard_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.bin");
    assert_eq!(
        ShardWriter::create(&path, 10, None)
            .unwrap()
            .finish()
            .unwrap(),
        0
    );
    assert!(TokenShard::open(&path).unwrap().is_empty());
}

#[test]
fn out_of_vocab_token_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::create(&dir.path().join("x.bin"), 300, None).unwrap();
    let err = w.push(&[1, 2, 300]).unwrap_err().to_string();
    assert!(
        err.contains("token 300") && err.contains("vocab size 300"),
        "{err}"
    );
    assert!(ShardWriter::create(&dir.path().join("y.bin"), 300, Some(300)).is_err());
}

#[test]
fn nothing_appears_under_the_final_name_before_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.bin");
    let mut w = ShardWriter::create(&path, 300, None).unwrap();
    w.push(&[1, 2, 3]).unwrap();
    assert!(!path.exists());
    assert!(dir.path().join("p.bin.tmp").exists());
    drop(w);
    assert!(
        !dir.path().join("p.bin.tmp").exists(),
        "an abandoned writer cleans up"
    );
    assert!(!path.exists());
}

#[test]
fn truncated_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.bin");
    write(&path, 300, None, &[1, 2, 3, 4]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(err.contains("t.bin"), "{err}");
    assert!(
        err.contains("truncated: header says 4 tokens, file holds 2"),
        "{err}"
    );

    std::fs::write(&path, [bytes.as_slice(), &[0, 0]].concat()).unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(err.contains("2 trailing bytes"), "{err}");

    std::fs::write(&path, &bytes[..40]).unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(err.contains("truncated header"), "{err}");
}

#[test]
fn bad_magic_and_version_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    std::fs::write(&path, vec![7u8; 200]).unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(
        err.contains("m.bin") && err.contains("not a fucina shard (bad magic"),
        "{err}"
    );

    write(&path, 300, None, &[1]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 2;
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(err.contains("unsupported fucina shard version 2"), "{err}");
    bytes[8] = 1;
    bytes[12] = 3;
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(err.contains("bytes-per-token 3"), "{err}");

    let missing = format!(
        "{:#}",
        TokenShard::open(dir.path().join("nope.bin")).unwrap_err()
    );
    assert!(missing.contains("nope.bin"), "{missing}");
}

/// Builds an llm.c shard byte by byte, as llm.c's `write_datafile` does.
fn llmc_bytes(magic: i32, version: i32, tokens: &[u32], width: usize) -> Vec<u8> {
    let mut header = [0i32; 256];
    header[0] = magic;
    header[1] = version;
    header[2] = tokens.len() as i32;
    let mut bytes: Vec<u8> = header.iter().flat_map(|h| h.to_le_bytes()).collect();
    for &t in tokens {
        bytes.extend_from_slice(&t.to_le_bytes()[..width]);
    }
    bytes
}

#[test]
fn llmc_shards_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = dir.path().join("gpt2.bin");
    std::fs::write(&gpt2, llmc_bytes(20240520, 1, &[50256, 15496, 11, 995], 2)).unwrap();
    let shard = TokenShard::open(&gpt2).unwrap();
    assert_eq!(
        (shard.kind(), shard.width(), shard.len()),
        (ShardKind::LlmC, TokenWidth::U16, 4)
    );
    assert_eq!((shard.vocab_size(), shard.eos_id()), (None, None));
    assert_eq!(read_all(&shard), [50256, 15496, 11, 995]);

    let llama = dir.path().join("llama.bin");
    std::fs::write(&llama, llmc_bytes(20240801, 7, &[128000, 9906, 128001], 4)).unwrap();
    let shard = TokenShard::open(&llama).unwrap();
    assert_eq!(shard.width(), TokenWidth::U32);
    assert_eq!(read_all(&shard), [128000, 9906, 128001]);

    std::fs::write(&llama, llmc_bytes(20240801, 1, &[1], 4)).unwrap();
    let err = format!("{:#}", TokenShard::open(&llama).unwrap_err());
    assert!(err.contains("version 1"), "{err}");

    let mut short = llmc_bytes(20240520, 1, &[1, 2, 3], 2);
    short.truncate(short.len() - 2);
    std::fs::write(&gpt2, short).unwrap();
    let err = format!("{:#}", TokenShard::open(&gpt2).unwrap_err());
    assert!(
        err.contains("truncated: header says 3 tokens, file holds 2"),
        "{err}"
    );
}

#[test]
fn empty_file_is_not_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero.bin");
    std::fs::write(&path, b"").unwrap();
    let err = format!("{:#}", TokenShard::open(&path).unwrap_err());
    assert!(
        err.contains("zero.bin") && err.contains("bad magic"),
        "{err}"
    );
}
