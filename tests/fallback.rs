//! The binary end to end: a truncated newest checkpoint is detected, the one before is used with
//! a warning, and the run continues from there.

use std::process::Command;

const RUN: &str = r#"
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 6
global_batch_tokens = 128
micro_batch_size = 2
lr = 3e-3
[eval]
every = 0
[checkpoint]
every = 3
keep = 0
"#;

fn train(config: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> String {
    let (ok, stderr) = run(config, out, extra);
    assert!(ok, "{stderr}");
    stderr
}

fn run(config: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out_dir = format!("out_dir={}", out.display());
    let output = Command::new(env!("CARGO_BIN_EXE_fucina"))
        .args(["train", config.to_str().unwrap(), "--sample-tokens", "0"])
        .args(["--set", &out_dir])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

#[test]
fn resume_auto_skips_a_truncated_checkpoint_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("run.toml");
    std::fs::write(&config, RUN).unwrap();
    let out = tmp.path().join("run");
    train(&config, &out, &[]);
    let model = out.join("checkpoints/step_00000006/model.mpk");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();

    let resumed_from = out.join("checkpoints/step_00000003/model.mpk");
    let resumed_bytes = std::fs::read(&resumed_from).unwrap();
    let config_text = std::fs::read(&config).unwrap();
    let stderr = train(
        &config,
        &out,
        &["--resume", "auto", "--set", "train.steps=9"],
    );
    // Inputs are never modified: not the config, not the checkpoint resumed from. (The damaged
    // step 6 is the run's own output and is written anew when the run passes step 6 again.)
    assert!(std::fs::read(&resumed_from).unwrap() == resumed_bytes);
    assert!(std::fs::read(&config).unwrap() == config_text);
    assert!(
        stderr.contains("warning: checkpoint") && stderr.contains("step_00000006 is unusable"),
        "{stderr}"
    );
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains("step_00000003 at step 3"), "{stderr}");
    assert!(out.join("checkpoints/step_00000009/DONE").is_file());
}

#[test]
fn a_checkpoint_of_another_model_shape_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("run.toml");
    std::fs::write(&config, RUN).unwrap();
    let out = tmp.path().join("run");
    train(&config, &out, &["--set", "train.steps=3"]);
    let wider = ["--resume", "auto", "--set", "model.hidden_size=64"];
    let (ok, stderr) = run(&config, &out, &wider);
    assert!(!ok);
    assert!(
        stderr.contains("made for another model: hidden_size = 64 (checkpoint: 32)"),
        "{stderr}"
    );
}
