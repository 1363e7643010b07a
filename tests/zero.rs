//! ZeRO-1 (`[dist] shard_optimizer`) under a real `mpirun`: sharded AdamW on 2 and 3 ranks
//! follows the replicated optimizer step for step while holding 1/N of its moments, a skipped
//! step stays skipped, and checkpoints resume at another world size and with the other kind
//! of optimizer.
#![cfg(feature = "mpi")]

mod common;
use common::{check, output, step_losses as losses, train_command};
use fucina_dist::mpirun_command;
use std::path::Path;
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_fucina");

const SHARD: &[&str] = &["--set", "dist.shard_optimizer=true"];

/// 12 sequences per step: divisible by 1, 2 and 3 ranks × micro-batches of 2.
fn write_config(dir: &Path) -> String {
    let path = dir.join("run.toml");
    let text = r#"out_dir = "unused"
seed = 21
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 20
global_batch_tokens = 384
micro_batch_size = 2
lr = 3e-3
min_lr = 3e-4
warmup_steps = 3
[eval]
every = 10
batches = 3
[checkpoint]
every = 10
keep = 0
"#;
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn train(np: usize, config: &str, out_dir: &Path, extra: &[&str]) -> Output {
    let mut command = train_command(np, config, out_dir, extra);
    command.env("RAYON_NUM_THREADS", "1");
    output(command)
}

fn assert_close(a: &[Option<f64>], b: &[Option<f64>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts differ");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        let close = match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-4 * y.abs(),
            (None, None) => true,
            _ => false,
        };
        assert!(close, "{what}, step {}: {x:?} vs {y:?}", step + 1);
    }
}

/// The bytes of AdamW moments per rank that the run's closing lines report.
fn optimizer_bytes(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("optimizer state: "))
        .unwrap_or_else(|| panic!("no optimizer state line:\n{stderr}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-r").arg(from).arg(to).status();
    assert!(status.unwrap().success());
}

#[test]
fn sharded_adamw_on_two_and_three_ranks_follows_the_replicated_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let replicated = tmp.path().join("replicated");
    let stderr = check(&train(1, &config, &replicated, &[]), "replicated, 1 rank");
    let full = optimizer_bytes(&stderr);
    let reference = losses(&replicated);
    assert_eq!(reference.len(), 20);
    // Two f32 moments per trainable value.
    assert_eq!(full % 8, 0);
    let values = full / 8;
    // Overlapped with the backward (the default: each block reduced to its rank as soon as
    // the backward has produced it), and on 2 ranks also after the whole backward; from host
    // memory (mpi-host) and by address (mpi-device, as a GPU's memory would be handed over).
    let runs = [(2, true), (3, true), (2, false)]
        .into_iter()
        .flat_map(|(np, overlap)| ["mpi-host", "mpi-device"].map(|t| (np, overlap, t)));
    for (np, overlap, transport) in runs {
        let dir = tmp
            .path()
            .join(format!("sharded{np}-{overlap}-{transport}"));
        let (o, t) = (
            format!("dist.overlap={overlap}"),
            format!("dist.transport={transport}"),
        );
        let set = format!("{o} {t}");
        let extra = [SHARD, &["--set", &o, "--set", &t]].concat();
        let stderr = check(
            &train(np, &config, &dir, &extra),
            &format!("{np} ranks, {set}"),
        );
        let line = format!("gradient transport: {transport} (");
        assert!(stderr.contains(&line), "missing {line:?}:\n{stderr}");
        // Every rank hashes its weights at each checkpoint and at the end; any difference fails.
        let line = format!("replicas identical on {np} ranks");
        assert!(stderr.contains(&line), "missing {line:?}:\n{stderr}");
        assert!(
            stderr.contains(&format!("sharded over {np} ranks")),
            "{stderr}"
        );
        assert_close(
            &losses(&dir),
            &reference,
            &format!("sharded on {np}, {set}, vs replicated"),
        );
        // Each rank holds its block of the flat vector, padded to a multiple of the ranks.
        let bytes = optimizer_bytes(&stderr);
        assert_eq!(bytes, 8 * values.div_ceil(np as u64), "{np} ranks");
        assert!(bytes * np as u64 - full < 8 * np as u64);
    }
}

#[test]
fn sharded_checkpoints_resume_at_other_world_sizes_and_unsharded() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let straight = tmp.path().join("straight");
    check(
        &train(2, &config, &straight, SHARD),
        "uninterrupted, 2 ranks",
    );
    let reference = losses(&straight);

    let half = tmp.path().join("half");
    let stop = ["--stop-after", "10"];
    check(
        &train(2, &config, &half, &[SHARD, &stop].concat()),
        "first half",
    );
    let state = half.join("checkpoints/step_00000010/state.json");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(state["optimizer"], "flat");
    // Each rank wrote its own part of the moments; none gathered them.
    assert_eq!(state["shards"], 2);
    let names = file_names(&half.join("checkpoints/step_00000010"));
    for rank in 0..2 {
        let part = format!("optim.shard-0000{rank}-of-00002.safetensors");
        assert!(names.contains(&part), "{names:?}");
    }
    assert!(
        !names.contains(&"optim.safetensors".to_string()),
        "{names:?}"
    );

    let resume = ["--resume", "auto"];
    let (three, one) = (tmp.path().join("three"), tmp.path().join("one"));
    copy_dir(&half, &three);
    copy_dir(&half, &one);
    let stderr = check(
        &train(3, &config, &three, &[SHARD, &resume].concat()),
        "second half, sharded on 3 ranks",
    );
    assert!(stderr.contains("replicas identical on 3 ranks"), "{stderr}");
    // The metrics file holds both halves, in order.
    assert_close(&losses(&three), &reference, "2 ranks then 3 vs 2 ranks");
    // One process with the replicated optimizer: the flat moments become burn's record.
    check(&train(1, &config, &one, &resume), "second half, replicated");
    assert_close(&losses(&one), &reference, "2 sharded then 1 replicated");

    // And back: a replicated checkpoint (burn's record) resumed sharded.
    let replicated = tmp.path().join("replicated");
    check(
        &train(1, &config, &replicated, &stop),
        "first half, replicated",
    );
    check(
        &train(2, &config, &replicated, &[SHARD, &resume].concat()),
        "second half, sharded on 2 ranks",
    );
    assert_close(
        &losses(&replicated),
        &reference,
        "1 replicated then 2 sharded",
    );
}

fn file_names(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap();
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// With `checkpoint.shard_weights` each rank also writes its part of the weights. Rank 1's part
/// of the newest checkpoint damaged: the resume on 3 ranks names it, takes the checkpoint
/// before and retraces the uninterrupted run from there.
#[test]
fn a_damaged_part_is_named_and_the_checkpoint_before_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let parts = [SHARD, &["--set", "checkpoint.shard_weights=true"]].concat();
    let run = tmp.path().join("run");
    check(&train(2, &config, &run, &parts), "2 ranks");
    let reference = losses(&run);
    let newest = run.join("checkpoints/step_00000020");
    let names = file_names(&newest);
    assert!(
        !names.contains(&"model.mpk".to_string()) && names.len() == 8,
        "two parts of the weights and two of the moments, no whole model: {names:?}"
    );
    let damaged = "trainable.shard-00001-of-00002.safetensors";
    let mut bytes = std::fs::read(newest.join(damaged)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(newest.join(damaged), bytes).unwrap();

    let stderr = check(
        &train(
            3,
            &config,
            &run,
            &[&parts[..], &["--resume", "auto"]].concat(),
        ),
        "resumed on 3 ranks",
    );
    let warning = stderr
        .lines()
        .find(|l| l.contains("step_00000020 is unusable"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(warning.contains(damaged), "{warning}");
    assert!(stderr.contains("step_00000010 at step 10"), "{stderr}");
    // The metrics file now holds steps 1-20, then 11-20 again from the resume.
    let all = losses(&run);
    assert_close(
        &all[20..],
        &reference[10..],
        "resumed from step 10 on 3 ranks",
    );
}

#[test]
fn a_skipped_step_leaves_sharded_weights_and_moments_as_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let short = ["--set", "train.steps=6", "--set", "checkpoint.every=0"];
    let run = |dir: &Path, extra: &[&str]| {
        let mut command = mpirun_command(2, EXE);
        let out_dir = format!("out_dir={}", dir.display());
        command
            .args(["train", &config, "--sample-tokens", "0", "--set", &out_dir])
            .args(short)
            .args(extra)
            .env("FUCINA_TEST_NAN_STEPS", "3")
            .env("RAYON_NUM_THREADS", "1");
        check(&command.output().unwrap(), "a run with a poisoned step")
    };
    let (sharded, replicated) = (tmp.path().join("sharded"), tmp.path().join("replicated"));
    let stderr = run(&sharded, SHARD);
    assert!(stderr.contains("step 3: non-finite loss"), "{stderr}");
    run(&replicated, &[]);
    let curve = losses(&sharded);
    assert!(curve[2].is_none(), "{curve:?}");
    // An update (or a moment, or the step count) changed by the skipped step would show here.
    assert_close(
        &curve,
        &losses(&replicated),
        "sharded vs replicated, step 3 skipped",
    );
}

/// Mixed precision across ranks: 2 ranks follow 1 rank, replicated and sharded. One thread per
/// rank, so every micro-batch is computed in the same parts (bf16 gradients round per part);
/// what remains is the order of f32 sums, which can flip a weight's bf16 rounding.
#[test]
fn mixed_precision_on_two_ranks_follows_one_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let bf16 = ["--set", "precision=bf16"];
    let single = tmp.path().join("bf16-np1");
    check(&train(1, &config, &single, &bf16), "bf16, 1 rank");
    let reference = losses(&single);
    let by_address = [SHARD, &["--set", "dist.transport=mpi-device"]].concat();
    for (name, extra) in [
        ("replicated", &[][..]),
        ("sharded", SHARD),
        ("sharded by address", &by_address),
    ] {
        let dir = tmp.path().join(format!("bf16-np2-{name}"));
        let args: Vec<&str> = bf16.iter().chain(extra).copied().collect();
        let stderr = check(&train(2, &config, &dir, &args), name);
        assert!(stderr.contains("replicas identical on 2 ranks"), "{stderr}");
        let curve = losses(&dir);
        // A flipped bf16 rounding moves a weight by one bf16 ULP (2⁻⁸ of itself) in one
        // step: 1e-3 of the loss bounds a few such flips over 20 steps, far below what a
        // lost gradient or a wrong average would do (see the f32 tests: 1e-4).
        assert_eq!(curve.len(), reference.len());
        for (step, (x, y)) in curve.iter().zip(&reference).enumerate() {
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(
                (x - y).abs() <= 1e-3 * y,
                "{name}, step {}: {x} vs {y}",
                step + 1
            );
        }
    }
}
