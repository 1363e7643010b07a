//! A rank that stops responding (the test-only FUCINA_TEST_HANG_STEP knob) leaves the others
//! blocked in the gradient all-reduce; the watchdog ends the whole job with a message naming the
//! rank, the operation and the step, instead of letting it hang until the wall time.
#![cfg(feature = "mpi")]

use fucina_dist::mpirun_command;
use std::time::{Duration, Instant};

const RUN: &str = r#"
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 20
global_batch_tokens = 256
micro_batch_size = 2
lr = 3e-3
[eval]
every = 0
[dist]
timeout_seconds = 3
"#;

#[test]
fn a_hung_rank_ends_the_job_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("run.toml");
    std::fs::write(&config, RUN).unwrap();
    let out_dir = format!("out_dir={}", tmp.path().join("out").display());
    let started = Instant::now();
    let out = mpirun_command(2, env!("CARGO_BIN_EXE_fucina"))
        .args(["train", config.to_str().unwrap(), "--sample-tokens", "0"])
        .args(["--set", &out_dir])
        .env("FUCINA_TEST_HANG_STEP", "3")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{stderr}");
    assert!(
        stderr.contains("rank 0: watchdog: gradient all-reduce at step 3"),
        "{stderr}"
    );
    // Rank 1's own watchdog ("forward/backward at step 3") may speak or be ended first by rank
    // 0's MPI_Abort: which fires first is a race, so only rank 0's line is required.
}

/// Start-up is watched too, under its own limit: a rank stuck before the first step (here while
/// opening the data) ends the job with a message naming the phase.
#[test]
fn a_rank_hung_in_start_up_ends_the_job_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("run.toml");
    std::fs::write(&config, RUN).unwrap();
    let out_dir = format!("out_dir={}", tmp.path().join("out").display());
    let started = Instant::now();
    let out = mpirun_command(2, env!("CARGO_BIN_EXE_fucina"))
        .args(["train", config.to_str().unwrap(), "--sample-tokens", "0"])
        .args(["--set", &out_dir])
        .args(["--set", "dist.timeout_seconds=0"])
        .args(["--set", "dist.startup_timeout_seconds=3"])
        .env("FUCINA_TEST_HANG_STEP", "0")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{stderr}");
    // Which rank's watchdog speaks first is a race; either names a start-up phase.
    let line = stderr
        .lines()
        .find(|l| l.contains("watchdog: "))
        .unwrap_or_else(|| panic!("no watchdog line:\n{stderr}"));
    assert!(
        line.contains("during start-up") && line.contains("[dist] startup_timeout_seconds"),
        "{line}"
    );
}
