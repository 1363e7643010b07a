//! A NaN injected on one rank (the test-only FUCINA_TEST_NAN_STEPS knob) is seen by every rank
//! after the all-reduce: skipped under `skip`, a clean stop under `abort`, never checkpointed.
#![cfg(feature = "mpi")]

use fucina_dist::mpirun_command;
use std::path::Path;
use std::process::Output;

const RUN: &str = r#"
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 6
global_batch_tokens = 256
micro_batch_size = 2
lr = 3e-3
[eval]
every = 0
[checkpoint]
every = 2
keep = 0
"#;

fn run(dir: &Path, policy: &str) -> Output {
    let config = dir.join("run.toml");
    std::fs::write(&config, RUN).unwrap();
    let out_dir = format!("out_dir={}", dir.join("out").display());
    let policy = format!("train.on_nonfinite={policy}");
    mpirun_command(2, env!("CARGO_BIN_EXE_fucina"))
        .args(["train", config.to_str().unwrap(), "--sample-tokens", "0"])
        .args(["--set", &out_dir, "--set", &policy])
        .env("FUCINA_TEST_NAN_STEPS", "3")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn losses(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("out/metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].clone())
        .collect()
}

#[test]
fn skip_policy_skips_the_poisoned_step_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), "skip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("step 3: non-finite loss"), "{stderr}");
    assert!(stderr.contains("replicas identical on 2 ranks"), "{stderr}");
    let losses = losses(tmp.path());
    assert_eq!(losses.len(), 6);
    assert!(
        losses[2].is_null(),
        "step 3 is recorded as not a number: {losses:?}"
    );
    assert!(losses.iter().enumerate().all(|(i, l)| i == 2 || l.is_f64()));
    let state =
        std::fs::read_to_string(tmp.path().join("out/checkpoints/step_00000006/state.json"));
    let state: serde_json::Value = serde_json::from_str(&state.unwrap()).unwrap();
    assert_eq!(state["skipped_steps"], 1);
}

#[test]
fn abort_policy_stops_cleanly_without_checkpointing_the_bad_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), "abort");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("on_nonfinite = \"abort\""), "{stderr}");
    // Every rank decided the same: a normal exit, not MPI_Abort.
    assert!(!stderr.contains("MPI_ABORT"), "{stderr}");
    let checkpoints: Vec<_> = std::fs::read_dir(tmp.path().join("out/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(checkpoints, vec!["step_00000002"]);
}
