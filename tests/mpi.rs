//! Data parallelism under a real `mpirun`: the same run on 1, 2 and 3 ranks gives the same
//! losses, replicas stay bit-identical, and a rank with a different config stops the job.
#![cfg(feature = "mpi")]

mod common;
use common::{check, losses, train, train_field};
use fucina_dist::mpirun_command;
use std::path::Path;

const EXE: &str = env!("CARGO_BIN_EXE_fucina");

/// 12 sequences per step: divisible by 1, 2 and 3 ranks × micro-batches of 2; small buckets so
/// that parameters straddle several of them.
fn write_config(dir: &Path, micro_batch: usize) -> String {
    let path = dir.join(format!("run-{micro_batch}.toml"));
    let text = format!(
        r#"out_dir = "{}"
seed = 21
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 20
global_batch_tokens = {tokens}
micro_batch_size = {micro_batch}
lr = 3e-3
min_lr = 3e-4
warmup_steps = 3
# Below most steps' norms (0.43 to 0.94 on one rank): clipping is part of what must agree.
grad_clip = 0.5
[eval]
every = 10
batches = 3
[checkpoint]
every = 10
keep = 0
[dist]
bucket_mb = 0.013
"#,
        dir.join("unused").display(),
        tokens = if micro_batch == 2 { 12 * 32 } else { 8 * 32 },
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts differ");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs(),
            "{what}, step {}: {x} vs {y}",
            step + 1
        );
    }
}

#[test]
fn two_and_three_ranks_follow_the_single_process_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), 2);
    let (mut curves, mut norms) = (Vec::new(), Vec::new());
    // Both transports that run without a GPU; mpi-device packs the buckets with the backend
    // and hands MPI that memory, as it would a GPU's.
    for transport in ["mpi-host", "mpi-device"] {
        for np in [1, 2, 3] {
            let dir = tmp.path().join(format!("{transport}-np{np}"));
            let set = format!("dist.transport={transport}");
            let what = format!("{np} ranks over {transport}");
            let stderr = check(&train(np, &config, &dir, &["--set", &set]), &what);
            if np > 1 {
                // Every rank hashes its weights at each checkpoint and at the end; any difference fails.
                for line in [
                    format!("replicas identical on {np} ranks"),
                    format!("gradient transport: {transport} ("),
                ] {
                    assert!(
                        stderr.contains(&line),
                        "{what}: missing {line:?}:\n{stderr}"
                    );
                }
            }
            curves.push((what.clone(), losses(&dir)));
            // The global norm is summed over the buckets as they land: a bucket left out
            // shows here before clipping makes it show in the losses.
            norms.push((what, train_field(&dir, "grad_norm")));
        }
    }
    let (_, one) = &curves[0];
    assert_eq!(one.len(), 20);
    for (what, curve) in &curves[1..] {
        assert_close(curve, one, &format!("{what} vs 1 rank over mpi-host"));
    }
    for (what, norm) in &norms[1..] {
        assert_close(norm, &norms[0].1, &format!("{what}: gradient norms"));
    }
    assert!(one[19] < one[0] - 0.2, "the run must learn: {one:?}");
}

#[test]
fn two_ranks_of_two_micro_batches_equal_one_rank_of_four() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 sequences per step in micro-batches of 2: 1 rank accumulates 4, each of 2 ranks 2.
    let config = write_config(tmp.path(), 2);
    let eight = ["--set", "train.global_batch_tokens=256"];
    check(
        &train(1, &config, &tmp.path().join("one"), &eight),
        "1 rank × 4",
    );
    check(
        &train(2, &config, &tmp.path().join("two"), &eight),
        "2 ranks × 2",
    );
    assert_close(
        &losses(&tmp.path().join("two")),
        &losses(&tmp.path().join("one")),
        "2×2 vs 1×4",
    );
}

#[test]
fn a_rank_with_a_different_config_stops_the_job_naming_rank_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), 2);
    let out_dir = tmp.path().join("mismatch");
    // Rank 1 alone gets another learning rate, as a stray environment on one node would.
    let script = format!(
        "lr=0.003; [ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && lr=0.005; exec {EXE} train {config} --sample-tokens 0 --set out_dir={} --set train.lr=$lr",
        out_dir.display()
    );
    let mut command = mpirun_command(2, "bash");
    let out = command.args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job must fail:\n{stderr}");
    assert!(
        stderr.contains("rank 1") && stderr.contains("train.lr"),
        "{stderr}"
    );
    assert!(!out_dir.join("metrics.jsonl").exists(), "no step may run");
}

#[test]
fn a_one_rank_checkpoint_resumes_on_three_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), 2);
    let straight = tmp.path().join("straight");
    check(&train(1, &config, &straight, &[]), "uninterrupted");
    let split = tmp.path().join("split");
    check(
        &train(1, &config, &split, &["--stop-after", "10"]),
        "first half on 1 rank",
    );
    let stderr = check(
        &train(3, &config, &split, &["--resume", "auto"]),
        "second half on 3 ranks",
    );
    assert!(stderr.contains("resuming from"), "{stderr}");
    // The metrics file holds both halves, in order.
    assert_close(
        &losses(&split),
        &losses(&straight),
        "1 rank then 3 vs 1 rank",
    );
}

#[test]
fn a_two_rank_checkpoint_resumes_on_three_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), 2);
    let straight = tmp.path().join("straight");
    check(
        &train(2, &config, &straight, &[]),
        "uninterrupted on 2 ranks",
    );
    let split = tmp.path().join("split");
    check(
        &train(2, &config, &split, &["--stop-after", "10"]),
        "first half on 2 ranks",
    );
    let stderr = check(
        &train(3, &config, &split, &["--resume", "auto"]),
        "second half on 3 ranks",
    );
    assert!(stderr.contains("replicas identical on 3 ranks"), "{stderr}");
    assert_close(
        &losses(&split),
        &losses(&straight),
        "2 ranks then 3 vs 2 ranks",
    );
}
