//! Weighted mixtures: token shares follow the weights, every source cycles
//! through its windows epoch by epoch, and batches stay a pure function of
//! (seed, step, micro-step, rank, world) — whatever the world size.

use fucina_data::{BatchSpec, Loader, LoaderState, MaskWriter, ShardWriter, TokenDataset};
use std::path::Path;
use std::sync::Arc;

const SEQ: usize = 8;
/// Source `s` holds tokens `s × BASE + position`, so a token names its source and window.
const BASE: u32 = 100_000;

/// Stream source `s` of `windows` windows, in two shards, written to real files.
fn source(dir: &Path, s: u32, windows: usize) -> Arc<TokenDataset> {
    let dir = dir.join(format!("source{s}"));
    std::fs::create_dir_all(&dir).unwrap();
    let len = (windows * SEQ + 1) as u32;
    let mut paths = vec![];
    for (i, range) in [0..len / 2, len / 2..len].into_iter().enumerate() {
        let path = dir.join(format!("train_{i:06}.bin"));
        let mut w = ShardWriter::create(&path, 1 << 20, None).unwrap();
        w.push(&range.map(|p| s * BASE + p).collect::<Vec<_>>())
            .unwrap();
        w.finish().unwrap();
        paths.push(path);
    }
    Arc::new(TokenDataset::open(&paths).unwrap())
}

fn spec(world_size: usize, rank: usize, micro_batch: usize, global: usize) -> BatchSpec {
    BatchSpec {
        seq_len: SEQ,
        global_batch_seqs: global,
        micro_batch,
        world_size,
        rank,
        seed: 5,
    }
}

fn mixture(sources: &[(Arc<TokenDataset>, f64)], spec: BatchSpec) -> Loader {
    Loader::mixture(sources.to_vec(), spec).unwrap()
}

/// Every input row of `step` in global order (sequence `i` at index `i`), gathered from all
/// ranks and micro-steps of a `world`-rank run.
fn global_rows(
    sources: &[(Arc<TokenDataset>, f64)],
    world: usize,
    micro: usize,
    global: usize,
    step: u64,
) -> Vec<Vec<u32>> {
    let mut rows = vec![vec![]; global];
    for rank in 0..world {
        let loader = mixture(sources, spec(world, rank, micro, global));
        for m in 0..loader.grad_accum() {
            let batch = loader.micro_batch(step, m);
            for (j, row) in batch.inputs.chunks(SEQ).enumerate() {
                rows[(m * world + rank) * micro + j] = row.to_vec();
            }
        }
    }
    rows
}

#[test]
fn token_shares_follow_the_weights_over_1000_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let (global, steps) = (24, 1000u64);
    let cases: [&[(usize, f64)]; 4] = [
        &[(500, 0.3), (700, 0.7)],
        &[(300, 1.0), (300, 2.0), (300, 5.0)],
        // 20 windows at 2 % of 24,000 samples: 24 epochs of the small source.
        &[(20, 0.02), (900, 0.49), (900, 0.49)],
        &[(50, 0.5), (3000, 0.25), (10, 0.125), (400, 0.125)],
    ];
    for (c, case) in cases.iter().enumerate() {
        let sources: Vec<_> = case
            .iter()
            .enumerate()
            .map(|(s, &(n, w))| (source(&tmp.path().join(format!("case{c}")), s as u32, n), w))
            .collect();
        let loader = mixture(&sources, spec(1, 0, 4, global));
        let mut tokens = vec![0u64; sources.len()];
        for step in 0..steps {
            for m in 0..loader.grad_accum() {
                for &t in &loader.micro_batch(step, m).inputs {
                    tokens[(t / BASE) as usize] += 1;
                }
            }
        }
        let total: u64 = tokens.iter().sum();
        assert_eq!(total, steps * (global * SEQ) as u64);
        let weight_sum: f64 = case.iter().map(|&(_, w)| w).sum();
        for (s, &(_, w)) in case.iter().enumerate() {
            let (share, want) = (tokens[s] as f64 / total as f64, w / weight_sum);
            eprintln!("case {c} source {s}: share {share:.5}, weight {want:.5}");
            assert!(
                (share - want).abs() <= 0.01,
                "case {c} source {s}: share {share} vs weight {want}"
            );
            // Much tighter than the 1 % bar: a block layout is exact up to a sample or so.
            assert!(
                (share - want).abs() * (total / SEQ as u64) as f64 <= 2.0,
                "case {c} source {s}: {} samples off",
                (share - want).abs() * (total / SEQ as u64) as f64
            );
        }
    }
}

#[test]
fn each_source_visits_its_windows_once_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [7usize, 60, 13];
    let sources: Vec<_> = sizes
        .iter()
        .zip([0.1, 0.6, 0.3])
        .enumerate()
        .map(|(s, (&n, w))| (source(tmp.path(), s as u32, n), w))
        .collect();
    let loader = mixture(&sources, spec(1, 0, 6, 12));
    // (window, offset of its start from a multiple of seq_len) of each sample, per source.
    let mut seen = vec![vec![]; sizes.len()];
    for step in 0..400 {
        for m in 0..loader.grad_accum() {
            for row in loader.micro_batch(step, m).inputs.chunks(SEQ) {
                let (s, p) = ((row[0] / BASE) as usize, row[0] % BASE);
                seen[s].push((p / SEQ as u32, p % SEQ as u32));
            }
        }
    }
    for (s, (samples, &n)) in seen.iter().zip(&sizes).enumerate() {
        let epochs: Vec<&[(u32, u32)]> = samples.chunks_exact(n).collect();
        assert!(
            epochs.len() >= 20,
            "source {s}: only {} epochs",
            epochs.len()
        );
        for (e, epoch) in epochs.iter().enumerate() {
            // An epoch moves all its windows by one amount; the first moves none.
            let offsets: std::collections::BTreeSet<u32> = epoch.iter().map(|w| w.1).collect();
            assert_eq!(offsets.len(), 1, "source {s} epoch {e}: {offsets:?}");
            assert_eq!(e == 0, offsets.contains(&0), "source {s} epoch {e}");
            let mut sorted: Vec<u32> = epoch.iter().map(|w| w.0).collect();
            sorted.sort();
            assert_eq!(
                sorted,
                (0..n as u32).collect::<Vec<_>>(),
                "source {s} epoch {e}"
            );
        }
        assert!(
            epochs.windows(2).any(|p| p[0] != p[1]),
            "source {s}: every epoch in the same order"
        );
    }
}

#[test]
fn batches_do_not_depend_on_world_size_and_steps_can_be_jumped_to() {
    let tmp = tempfile::tempdir().unwrap();
    let sources: Vec<_> = [(40usize, 0.2), (500, 0.5), (9, 0.3)]
        .iter()
        .enumerate()
        .map(|(s, &(n, w))| (source(tmp.path(), s as u32, n), w))
        .collect();
    let global = 24;
    // The reference iterates steps in order from a loader that has served every step before.
    let iterating = mixture(&sources, spec(1, 0, global, global));
    let mut reference = vec![];
    for step in 0..60u64 {
        reference.push(iterating.micro_batch(step, 0).inputs);
    }
    for step in [0u64, 1, 17, 59] {
        let want: Vec<Vec<u32>> = reference[step as usize]
            .chunks(SEQ)
            .map(|r| r.to_vec())
            .collect();
        for (world, micro) in [(1, 24), (1, 4), (2, 3), (2, 12), (3, 2), (3, 8), (4, 1)] {
            assert_eq!(
                global_rows(&sources, world, micro, global, step),
                want,
                "world {world}, micro batch {micro}, step {step}"
            );
        }
    }
}

#[test]
fn one_source_mixture_is_the_plain_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = source(tmp.path(), 0, 100);
    let plain = Loader::new(ds.clone(), spec(2, 1, 3, 12)).unwrap();
    let mixed = mixture(&[(ds, 2.5)], spec(2, 1, 3, 12));
    for step in [0, 3, 1000] {
        for m in 0..plain.grad_accum() {
            assert_eq!(plain.micro_batch(step, m), mixed.micro_batch(step, m));
        }
    }
    assert_eq!(plain.state(4), mixed.state(4));
}

#[test]
fn resume_refuses_another_mixture_but_not_rescaled_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        source(tmp.path(), 0, 50),
        source(tmp.path(), 1, 80),
        source(tmp.path(), 2, 81),
    );
    let run = |s: &[(Arc<TokenDataset>, f64)]| mixture(s, spec(1, 0, 2, 4));
    let saved = run(&[(a.clone(), 0.25), (b.clone(), 0.75)]).state(30);
    let json = serde_json::to_string(&saved).unwrap();
    let saved: LoaderState = serde_json::from_str(&json).unwrap();
    assert_eq!(saved.mixture.len(), 2);
    assert_eq!(
        run(&[(a.clone(), 1.0), (b.clone(), 3.0)])
            .resume(&saved)
            .unwrap(),
        30
    );
    for (what, other) in [
        ("weights", run(&[(a.clone(), 0.3), (b.clone(), 0.7)])),
        ("order", run(&[(b.clone(), 0.75), (a.clone(), 0.25)])),
        ("data", run(&[(a.clone(), 0.25), (c, 0.75)])),
        ("sources", run(&[(a.clone(), 0.25)])),
    ] {
        let err = other.resume(&saved).unwrap_err().to_string();
        assert!(err.contains("checkpoint was trained on"), "{what}: {err}");
    }
    let single = run(&[(a, 1.0)]).state(3);
    let err = run(&[(b.clone(), 0.5), (b, 0.5)])
        .resume(&single)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a single data source"), "{err}");
}

/// Row source `s`: `rows` rows of `row` tokens, every third target counted.
fn row_source(dir: &Path, s: u32, rows: usize, row: usize) -> Arc<TokenDataset> {
    let dir = dir.join(format!("rows{s}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train_000000.bin");
    let tokens: Vec<u32> = (0..(rows * row) as u32).map(|p| s * BASE + p).collect();
    let mut w = ShardWriter::create(&path, 1 << 20, None).unwrap();
    w.push(&tokens).unwrap();
    w.finish().unwrap();
    let mut m = MaskWriter::create(&path.with_extension("mask"), row).unwrap();
    let mask: Vec<u8> = tokens
        .iter()
        .map(|&t| u8::from((t % BASE).is_multiple_of(3) || t / BASE == 1))
        .collect();
    m.push(&mask).unwrap();
    m.finish().unwrap();
    Arc::new(TokenDataset::open(&[path]).unwrap())
}

#[test]
fn masked_sources_count_their_targets_across_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let sources = [
        (row_source(tmp.path(), 0, 30, SEQ + 1), 0.5),
        (row_source(tmp.path(), 1, 11, SEQ + 1), 0.5),
    ];
    for step in [0u64, 5, 77] {
        let mut counted = 0;
        for rank in 0..2 {
            let loader = mixture(&sources, spec(2, rank, 2, 8));
            for m in 0..loader.grad_accum() {
                let batch = loader.micro_batch(step, m);
                // Source 1 counts every target, source 0 those at positions divisible by 3.
                let mask = batch.mask.as_ref().unwrap();
                for (t, &k) in batch.targets.iter().zip(mask) {
                    let want = (t % BASE).is_multiple_of(3) || t / BASE == 1;
                    assert_eq!(k, u8::from(want), "token {t}");
                }
                counted += batch.loss_targets() as u64;
            }
            assert_eq!(
                loader.step_loss_targets(step),
                counted_after(&sources, step)
            );
        }
        assert_eq!(counted, counted_after(&sources, step));
    }
}

/// Counted targets of a whole step from a one-rank loader, computed independently of
/// `step_loss_targets` by reading its batches' masks.
fn counted_after(sources: &[(Arc<TokenDataset>, f64)], step: u64) -> u64 {
    let loader = mixture(sources, spec(1, 0, 8, 8));
    loader.micro_batch(step, 0).loss_targets() as u64
}

#[test]
fn bad_mixtures_are_refused_with_the_source_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (source(tmp.path(), 0, 50), source(tmp.path(), 1, 50));
    let err = |s: Vec<(Arc<TokenDataset>, f64)>| {
        Loader::mixture(s, spec(1, 0, 2, 4))
            .unwrap_err()
            .to_string()
    };
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = err(vec![(a.clone(), 1.0), (b.clone(), w)]);
        assert!(e.contains("source 1") && e.contains("positive"), "{w}: {e}");
    }
    let e = err(vec![(a.clone(), 1.0), (b.clone(), 1e-6)]);
    assert!(
        e.contains("source 1") && e.contains("never be sampled"),
        "{e}"
    );
    assert!(err(vec![]).contains("at least one source"));

    let rows = row_source(tmp.path(), 2, 10, SEQ + 1);
    let e = err(vec![(a.clone(), 1.0), (rows.clone(), 1.0)]);
    assert!(
        e.contains("data source 1") && e.contains("rows2") && e.contains("plain token stream"),
        "{e}"
    );
    let long_rows = row_source(tmp.path(), 3, 10, SEQ + 3);
    let e = err(vec![(rows, 1.0), (long_rows, 1.0)]);
    assert!(
        e.contains("data source 1") && e.contains("seq_len 10"),
        "{e}"
    );
}
