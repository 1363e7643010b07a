//! The loader is a pure function of (seed, step, micro-step, rank, world)
//! and covers the same data for every world size.

use fucina_data::loader::Permutation;
use fucina_data::{
    sequential_batch, sequential_batch_count, BatchSpec, Loader, LoaderState, ShardWriter,
    TokenDataset,
};
use std::collections::HashSet;
use std::sync::Arc;

/// A dataset whose token at position p is p, split over three shards, so
/// every token names its own position.
fn positional_dataset(len: usize) -> (tempfile::TempDir, Arc<TokenDataset>) {
    let dir = tempfile::tempdir().unwrap();
    let cuts = [0, len / 3, len / 2 + 1, len];
    let mut paths = vec![];
    for (i, w) in cuts.windows(2).enumerate() {
        let path = dir.path().join(format!("train_{i:06}.bin"));
        let mut writer = ShardWriter::create(&path, 1 << 20, None).unwrap();
        writer
            .push(&(w[0] as u32..w[1] as u32).collect::<Vec<_>>())
            .unwrap();
        writer.finish().unwrap();
        paths.push(path);
    }
    let ds = Arc::new(TokenDataset::open(&paths).unwrap());
    (dir, ds)
}

fn spec(world_size: usize, rank: usize, micro_batch: usize, global: usize) -> BatchSpec {
    BatchSpec {
        seq_len: 8,
        global_batch_seqs: global,
        micro_batch,
        world_size,
        rank,
        seed: 42,
    }
}

/// All sequences (as input rows) of one optimizer step, from every rank and micro-step.
fn step_rows(
    ds: &Arc<TokenDataset>,
    world: usize,
    micro_batch: usize,
    global: usize,
    step: u64,
) -> Vec<Vec<u32>> {
    let mut rows = vec![];
    for rank in 0..world {
        let loader = Loader::new(ds.clone(), spec(world, rank, micro_batch, global)).unwrap();
        for micro in 0..loader.grad_accum() {
            let b = loader.micro_batch(step, micro);
            rows.extend(b.inputs.chunks(8).map(|c| c.to_vec()));
        }
    }
    rows
}

#[test]
fn permutation_is_a_bijection() {
    for n in [1u64, 2, 3, 7, 64, 1000, 4097, 65_537] {
        for (seed, epoch) in [(0, 0), (1, 0), (1, 1), (u64::MAX, 12345)] {
            let p = Permutation::new(n, seed, epoch);
            let image: HashSet<u64> = (0..n).map(|i| p.apply(i)).collect();
            assert_eq!(image.len() as u64, n, "n={n} seed={seed} epoch={epoch}");
            assert!(image.iter().all(|&x| x < n));
        }
    }
    let p = Permutation::new(1000, 7, 0);
    let fixed = (0..1000).filter(|&i| p.apply(i) == i).count();
    assert!(fixed < 20, "looks like the identity: {fixed} fixed points");
    let q = Permutation::new(1000, 7, 1);
    assert!(
        (0..1000).any(|i| p.apply(i) != q.apply(i)),
        "epochs must reshuffle"
    );
}

#[test]
fn same_arguments_same_batches() {
    let (_d, ds) = positional_dataset(1000);
    let a = Loader::new(ds.clone(), spec(2, 1, 2, 12)).unwrap();
    let b = Loader::new(ds.clone(), spec(2, 1, 2, 12)).unwrap();
    for step in [0, 1, 5, 1_000_000] {
        for micro in 0..a.grad_accum() {
            assert_eq!(a.micro_batch(step, micro), b.micro_batch(step, micro));
        }
    }
    let other_seed = Loader::new(
        ds,
        BatchSpec {
            seed: 43,
            ..spec(2, 1, 2, 12)
        },
    )
    .unwrap();
    assert_ne!(a.micro_batch(0, 0), other_seed.micro_batch(0, 0));
}

#[test]
fn targets_are_inputs_shifted_and_match_the_dataset() {
    let (_d, ds) = positional_dataset(1000);
    let loader = Loader::new(ds, spec(1, 0, 3, 6)).unwrap();
    for step in 0..20 {
        let b = loader.micro_batch(step, 1);
        assert_eq!(b.inputs.len(), 3 * 8);
        assert_eq!(b.targets.len(), 3 * 8);
        for (inp, tgt) in b.inputs.chunks(8).zip(b.targets.chunks(8)) {
            // Token p is p: rows are runs of consecutive positions starting
            // at a multiple of seq_len, and targets continue one further.
            let start = inp[0];
            assert_eq!(start % 8, 0);
            assert_eq!(inp, (start..start + 8).collect::<Vec<_>>());
            assert_eq!(tgt, (start + 1..start + 9).collect::<Vec<_>>());
            assert!(start as usize + 8 < 1000);
        }
    }
}

#[test]
fn rank_slices_are_disjoint_within_a_step() {
    let (_d, ds) = positional_dataset(2000);
    for step in [0u64, 3] {
        let mut seen: HashSet<u32> = HashSet::new();
        for rank in 0..3 {
            let loader = Loader::new(ds.clone(), spec(3, rank, 2, 12)).unwrap();
            for micro in 0..loader.grad_accum() {
                for row in loader.micro_batch(step, micro).inputs.chunks(8) {
                    assert!(
                        seen.insert(row[0]),
                        "window at {} served twice in step {step}",
                        row[0]
                    );
                }
            }
        }
        assert_eq!(seen.len(), 12);
    }
}

#[test]
fn step_contents_do_not_depend_on_world_size() {
    let (_d, ds) = positional_dataset(700);
    for step in [0u64, 1, 7, 100] {
        let mut reference = step_rows(&ds, 1, 2, 12, step);
        reference.sort();
        for (world, micro_batch) in [(2, 2), (3, 2), (2, 3), (3, 4), (6, 1), (4, 3)] {
            let mut rows = step_rows(&ds, world, micro_batch, 12, step);
            rows.sort();
            assert_eq!(
                rows, reference,
                "world {world}, micro batch {micro_batch}, step {step}"
            );
        }
    }
}

/// One rank reading 5 windows of 8 tokens a step.
fn five_a_step(ds: Arc<TokenDataset>) -> Loader {
    let spec = BatchSpec {
        seed: 9,
        ..spec(1, 0, 5, 5)
    };
    Loader::new(ds, spec).unwrap()
}

#[test]
fn each_epoch_visits_every_window_once() {
    let (_d, ds) = positional_dataset(8 * 50 + 1);
    let loader = five_a_step(ds);
    assert_eq!(loader.windows(), 50);
    let epoch = |e: u64| -> Vec<u32> {
        (e * 10..e * 10 + 10)
            .flat_map(|s| {
                loader
                    .micro_batch(s, 0)
                    .inputs
                    .chunks(8)
                    .map(|r| r[0] / 8)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (e0, e1) = (epoch(0), epoch(1));
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    let mut sorted1 = e1.clone();
    sorted1.sort();
    assert_eq!(sorted1, sorted);
    assert_ne!(e0, e1);
}

/// Later epochs cut the text elsewhere, or a small corpus read for many epochs is learnt as
/// fixed windows. Epoch 0 starts windows at multiples of seq_len (above); every later epoch
/// moves them all by one amount and reads the 50 × 8 tokens they cover as a ring, so its
/// inputs are still every covered position once.
#[test]
fn later_epochs_shift_their_windows_around_the_ring() {
    let (_d, ds) = positional_dataset(8 * 50 + 3);
    let loader = five_a_step(ds);
    let mut shifts = HashSet::new();
    for epoch in 1..11u64 {
        let mut inputs = vec![];
        let mut shift = HashSet::new();
        for step in epoch * 10..epoch * 10 + 10 {
            let b = loader.micro_batch(step, 0);
            for (inp, tgt) in b.inputs.chunks(8).zip(b.targets.chunks(8)) {
                shift.insert(inp[0] % 8);
                let ring: Vec<u32> = (inp[0]..inp[0] + 9).map(|p| p % 400).collect();
                assert_eq!(inp, &ring[..8], "epoch {epoch}: a run of the ring");
                assert_eq!(tgt, &ring[1..], "epoch {epoch}: targets follow");
            }
            inputs.extend(b.inputs);
        }
        assert_eq!(shift.len(), 1, "epoch {epoch}: one shift for all windows");
        shifts.extend(shift);
        inputs.sort();
        assert_eq!(inputs, (0..400).collect::<Vec<_>>(), "epoch {epoch}");
    }
    assert!(shifts.len() > 2, "shifts vary by epoch: {shifts:?}");
}

#[test]
fn grad_accum_and_constructor_errors() {
    assert_eq!(spec(2, 0, 3, 12).grad_accum().unwrap(), 2);
    let err = spec(5, 0, 2, 12).grad_accum().unwrap_err().to_string();
    assert!(
        err.contains("12")
            && err.contains("world size 5")
            && err.contains("micro batch 2")
            && err.contains("= 10"),
        "{err}"
    );
    assert!(spec(0, 0, 2, 12).grad_accum().is_err());
    assert!(spec(1, 0, 0, 12).grad_accum().is_err());

    let (_d, ds) = positional_dataset(9);
    assert!(
        Loader::new(ds.clone(), spec(1, 0, 1, 1)).is_ok(),
        "9 tokens hold one window of 8 + 1"
    );
    let (_d2, small) = positional_dataset(8);
    let err = Loader::new(small, spec(1, 0, 1, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("8 tokens"), "{err}");
    assert!(Loader::new(ds.clone(), spec(2, 2, 1, 2))
        .unwrap_err()
        .to_string()
        .contains("rank 2"));
    assert!(Loader::new(ds, spec(5, 0, 2, 12)).is_err());
}

#[test]
fn state_round_trips_and_checks_the_seed() {
    let (_d, ds) = positional_dataset(100);
    let loader = Loader::new(ds, spec(1, 0, 1, 2)).unwrap();
    let state = loader.state(17);
    let json = serde_json::to_string(&state).unwrap();
    let back: LoaderState = serde_json::from_str(&json).unwrap();
    let saved = |seed| LoaderState {
        seed,
        step: 17,
        mixture: vec![],
    };
    assert_eq!(back, saved(42));
    assert_eq!(loader.resume(&back).unwrap(), 17);
    assert!(loader.resume(&saved(1)).is_err());
}

#[test]
fn sequential_batches_are_contiguous_windows() {
    let (_d, ds) = positional_dataset(8 * 10 + 1);
    // Ten windows: three full batches and a last one of the tenth window alone.
    assert_eq!(sequential_batch_count(&ds, 8, 3), 4);
    let last = sequential_batch(&ds, 8, 3, 3);
    assert_eq!(last.inputs, (72..80).collect::<Vec<u32>>());
    assert_eq!(last.targets, (73..81).collect::<Vec<u32>>());
    for index in 0..3 {
        let b = sequential_batch(&ds, 8, 3, index);
        let first = (index * 3 * 8) as u32;
        assert_eq!(b.inputs, (first..first + 24).collect::<Vec<_>>());
        let expected: Vec<u32> = (0..3)
            .flat_map(|r| first + r * 8 + 1..first + r * 8 + 9)
            .collect();
        assert_eq!(b.targets, expected);
    }
}
