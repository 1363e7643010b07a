//! Helpers shared by the root tests that run the `fucina` binary.
#![allow(dead_code)]

use fucina_dist::mpirun_command;
use std::path::Path;
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_fucina");

/// `fucina train CONFIG` on `np` ranks (under mpirun above one), into `out_dir`, no sample.
pub fn train_command(np: usize, config: &str, out_dir: &Path, extra: &[&str]) -> Command {
    let mut command = if np == 1 {
        Command::new(EXE)
    } else {
        mpirun_command(np, EXE)
    };
    let out_dir = format!("out_dir={}", out_dir.display());
    command
        .args(["train", config, "--sample-tokens", "0", "--set", &out_dir])
        .args(extra);
    command
}

/// Runs `command` to its end.
pub fn output(mut command: Command) -> Output {
    command
        .output()
        .expect("mpirun is installed (scripts/setup.sh installs Open MPI)")
}

/// `train_command`, run to its end.
pub fn train(np: usize, config: &str, out_dir: &Path, extra: &[&str]) -> Output {
    output(train_command(np, config, out_dir, extra))
}

/// The stderr of a command that must have succeeded.
pub fn check(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// Training losses of a run (`None` for a skipped step), read back from its metrics file.
pub fn step_losses(run_dir: &Path) -> Vec<Option<f64>> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "train")
        .map(|e| e["loss"].as_f64())
        .collect()
}

/// Each training step's `name` field (`grad_norm`, `loss`, …) from a run's metrics.jsonl.
pub fn train_field(run_dir: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "train")
        .map(|e| e[name].as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Training losses of a run in which no step was skipped.
pub fn losses(run_dir: &Path) -> Vec<f64> {
    let losses = step_losses(run_dir).into_iter();
    losses.map(|l| l.expect("no skipped step")).collect()
}
