//! Row (chat) data: shards with a loss mask next to them are sampled row by
//! row, and batches carry the mask of their targets.

use fucina_data::{
    sequential_batch, sequential_batch_count, BatchSpec, Loader, MaskShard, MaskWriter,
    ShardWriter, TokenDataset,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ROW: usize = 9;
const SEQ: usize = ROW - 1;

/// The mask every test dataset uses, as a function of the token (= its
/// position), so expectations never read it back from the files.
fn counts(token: u32) -> u8 {
    u8::from(token.is_multiple_of(3) || token.is_multiple_of(7))
}

/// Shards holding `rows[i]` rows each, token at position p = p, with masks.
fn row_dataset(dir: &Path, rows: &[usize]) -> Vec<PathBuf> {
    let mut paths = vec![];
    let mut next = 0u32;
    for (i, &n) in rows.iter().enumerate() {
        let path = dir.join(format!("train_{i:06}.bin"));
        let tokens: Vec<u32> = (next..next + (n * ROW) as u32).collect();
        next += tokens.len() as u32;
        let mut w = ShardWriter::create(&path, 1 << 20, None).unwrap();
        w.push(&tokens).unwrap();
        w.finish().unwrap();
        let mut m = MaskWriter::create(&path.with_extension("mask"), ROW).unwrap();
        m.push(&tokens.iter().map(|&t| counts(t)).collect::<Vec<_>>())
            .unwrap();
        m.finish().unwrap();
        paths.push(path);
    }
    paths
}

fn spec(world_size: usize, rank: usize, micro_batch: usize, global: usize) -> BatchSpec {
    BatchSpec {
        seq_len: SEQ,
        global_batch_seqs: global,
        micro_batch,
        world_size,
        rank,
        seed: 7,
    }
}

#[test]
fn windows_are_whole_rows_with_their_targets_mask() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(TokenDataset::open(&row_dataset(dir.path(), &[2, 0, 3, 1])).unwrap());
    assert_eq!(ds.row_len(), Some(ROW));
    let loader = Loader::new(ds, spec(1, 0, 3, 6)).unwrap();
    assert_eq!(loader.windows(), 6);
    let mut seen = vec![];
    for step in 0..2 {
        for micro in 0..2 {
            let b = loader.micro_batch(step, micro);
            let mask = b.mask.clone().expect("row data has a mask");
            assert_eq!(mask.len(), b.targets.len());
            for r in 0..3 {
                let input = &b.inputs[r * SEQ..(r + 1) * SEQ];
                assert_eq!(
                    input[0] as usize % ROW,
                    0,
                    "rows start at multiples of {ROW}"
                );
                let expected: Vec<u32> = (input[0] + 1..input[0] + ROW as u32).collect();
                assert_eq!(&b.targets[r * SEQ..(r + 1) * SEQ], expected);
                seen.push(input[0] as usize / ROW);
            }
            let expected_mask: Vec<u8> = b.targets.iter().map(|&t| counts(t)).collect();
            assert_eq!(mask, expected_mask);
            assert_eq!(
                b.loss_targets(),
                expected_mask.iter().filter(|&&m| m == 1).count()
            );
        }
    }
    seen.sort();
    assert_eq!(seen, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], "two epochs");
}

#[test]
fn step_loss_targets_counts_the_whole_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(TokenDataset::open(&row_dataset(dir.path(), &[5, 6])).unwrap());
    for step in 0..4 {
        let mut per_world = vec![];
        for (world, micro) in [(1, 1), (1, 4), (2, 2), (4, 1)] {
            let mut sum = 0;
            let mut reported = vec![];
            for rank in 0..world {
                let loader = Loader::new(ds.clone(), spec(world, rank, micro, 4)).unwrap();
                reported.push(loader.step_loss_targets(step));
                for m in 0..loader.grad_accum() {
                    let b = loader.micro_batch(step, m);
                    // Independently of the mask files: count from the target tokens.
                    sum += b.targets.iter().filter(|&&t| counts(t) == 1).count() as u64;
                }
            }
            assert!(reported.iter().all(|&r| r == sum), "{reported:?} vs {sum}");
            per_world.push(sum);
        }
        assert!(
            per_world.iter().all(|&s| s == per_world[0]),
            "{per_world:?}"
        );
    }
}

#[test]
fn plain_data_has_no_mask_and_counts_every_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_000000.bin");
    let mut w = ShardWriter::create(&path, 300, None).unwrap();
    w.push(&(0..100).collect::<Vec<_>>()).unwrap();
    w.finish().unwrap();
    let ds = TokenDataset::open(&[path]).unwrap();
    assert_eq!(ds.row_len(), None);
    let loader = Loader::new(ds, spec(1, 0, 2, 4)).unwrap();
    let b = loader.micro_batch(0, 0);
    assert_eq!(b.mask, None);
    assert_eq!(b.loss_targets(), 2 * SEQ);
    assert_eq!(loader.step_loss_targets(3), (4 * SEQ) as u64);
}

#[test]
fn a_seq_len_other_than_the_rows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(TokenDataset::open(&row_dataset(dir.path(), &[4])).unwrap());
    let err = Loader::new(
        ds.clone(),
        BatchSpec {
            seq_len: 4,
            ..spec(1, 0, 1, 1)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("prepared for seq_len 8"), "{err}");
    assert!(ds.check_seq_len(4).is_err());
    assert_eq!(sequential_batch_count(&ds, 4, 1), 0);
}

#[test]
fn validation_batches_are_rows_in_order_with_masks() {
    let dir = tempfile::tempdir().unwrap();
    let ds = TokenDataset::open(&row_dataset(dir.path(), &[3, 4])).unwrap();
    // Seven rows: three full batches of two and a last one of the seventh row.
    assert_eq!(sequential_batch_count(&ds, SEQ, 2), 4);
    assert_eq!(sequential_batch(&ds, SEQ, 2, 3).inputs.len(), SEQ);
    for index in 0..3 {
        let b = sequential_batch(&ds, SEQ, 2, index);
        let first = (index * 2 * ROW) as u32;
        let inputs: Vec<u32> = (0..2)
            .flat_map(|r| first + r * ROW as u32..first + r * ROW as u32 + SEQ as u32)
            .collect();
        assert_eq!(b.inputs, inputs);
        let targets: Vec<u32> = inputs.iter().map(|t| t + 1).collect();
        assert_eq!(b.targets, targets);
        let mask: Vec<u8> = targets.iter().map(|&t| counts(t)).collect();
        assert_eq!(b.mask, Some(mask));
    }
}

#[test]
fn inconsistent_masks_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut paths = row_dataset(d, &[1, 1]);

    // A shard without a mask among masked ones.
    let plain = d.join("plain.bin");
    let mut w = ShardWriter::create(&plain, 1 << 20, None).unwrap();
    w.push(&[1; ROW]).unwrap();
    w.finish().unwrap();
    paths.push(plain.clone());
    let err = TokenDataset::open(&paths).unwrap_err().to_string();
    assert!(
        err.contains("cannot be mixed") && err.contains("plain.bin"),
        "{err}"
    );
    let err = TokenDataset::open(&[plain.clone(), paths[0].clone()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be mixed"), "{err}");

    // A mask of another length than its shard.
    let mut m = MaskWriter::create(&plain.with_extension("mask"), 3).unwrap();
    m.push(&[0; 6]).unwrap();
    m.finish().unwrap();
    let err = TokenDataset::open(std::slice::from_ref(&plain))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("6 mask bytes") && err.contains("9 tokens"),
        "{err}"
    );

    // Masks of different row lengths.
    let mut m = MaskWriter::create(&plain.with_extension("mask"), 3).unwrap();
    m.push(&[0; ROW]).unwrap();
    m.finish().unwrap();
    let err = TokenDataset::open(&[paths[0].clone(), plain.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rows of 3") && err.contains("rows of 9"),
        "{err}"
    );

    // Partial rows, bad bytes and damaged files.
    let mut m = MaskWriter::create(&d.join("x.mask"), 4).unwrap();
    m.push(&[1; 5]).unwrap();
    assert!(m.finish().unwrap_err().to_string().contains("whole rows"));
    let mut m = MaskWriter::create(&d.join("y.mask"), 4).unwrap();
    assert!(m.push(&[0, 4]).is_err());
    let mask = plain.with_extension("mask");
    let mut bytes = std::fs::read(&mask).unwrap();
    bytes.pop();
    std::fs::write(&mask, &bytes).unwrap();
    let err = format!(
        "{:#}",
        TokenDataset::open(std::slice::from_ref(&plain)).unwrap_err()
    );
    assert!(
        err.contains("header says 9 mask bytes, the file holds 8"),
        "{err}"
    );
    bytes[0] = b'X';
    std::fs::write(&mask, &bytes).unwrap();
    let err = format!("{:#}", TokenDataset::open(&[plain]).unwrap_err());
    assert!(err.contains("bad magic"), "{err}");
}

#[test]
fn document_starts_make_a_version_2_mask_and_only_bit_0_is_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        let mut m = MaskWriter::create(&path, 4).unwrap();
        m.push(bytes).unwrap();
        m.finish().unwrap();
        path
    };
    let version = |path: &Path| std::fs::read(path).unwrap()[8];
    let read = |shard: &MaskShard| {
        let (mut targets, mut starts) = (vec![9; 4], vec![9; 4]);
        shard.read(0, &mut targets);
        shard.read_starts(0, &mut starts);
        (targets, starts)
    };

    let packed = write("packed.mask", &[2, 1, 3, 0]);
    assert_eq!(version(&packed), 2);
    let shard = MaskShard::open(&packed).unwrap();
    assert!(shard.marks_starts());
    assert_eq!(read(&shard), (vec![0, 1, 1, 0], vec![1, 0, 1, 0]));

    // Without starts the file stays version 1, which older builds read.
    let plain = write("plain.mask", &[0, 1, 1, 0]);
    assert_eq!(version(&plain), 1);
    let shard = MaskShard::open(&plain).unwrap();
    assert!(!shard.marks_starts());
    assert_eq!(read(&shard), (vec![0, 1, 1, 0], vec![0; 4]));

    // In a version 1 file any nonzero byte is a target, as it always was.
    let mut bytes = std::fs::read(&packed).unwrap();
    bytes[8] = 1;
    std::fs::write(&plain, &bytes).unwrap();
    assert_eq!(
        read(&MaskShard::open(&plain).unwrap()),
        (vec![1, 1, 1, 0], vec![0; 4])
    );

    bytes[8] = 3;
    std::fs::write(&plain, &bytes).unwrap();
    let err = MaskShard::open(&plain).unwrap_err().to_string();
    assert!(err.contains("unsupported mask version 3"), "{err}");
}
