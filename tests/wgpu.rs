//! Training on WGPU (in CI: Mesa's lavapipe, software Vulkan) agrees with the CPU backend. Both
//! continue the same checkpoint, so the weights and data are equal and only the arithmetic
//! differs: GPU reductions in another order, so a small relative tolerance. `mini` (head
//! dimension 64) runs its attention through the flash kernels (`fused::flash`) on WGPU and
//! through the Flex kernels on the CPU.
#![cfg(feature = "wgpu")]

use std::path::Path;
use std::process::Command;

const RUN: &str = r#"
seed = 7
[model]
preset = "mini"
[data]
dir = "builtin"
seq_len = 64
[train]
steps = 4
global_batch_tokens = 256
micro_batch_size = 4
lr = 3e-3
warmup_steps = 1
[eval]
every = 0
[checkpoint]
every = 2
keep = 0
"#;

fn train(config: &Path, out: &Path, extra: &[&str]) {
    let out_dir = format!("out_dir={}", out.display());
    let mut args = vec!["train", config.to_str().unwrap(), "--sample-tokens", "0"];
    args.extend(["--set", &out_dir]);
    args.extend(extra);
    let runtime = tempfile::tempdir().unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_fucina"))
        .args(&args)
        // Mesa's WSI looks for a runtime directory even when nothing is displayed.
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "fucina {args:?} failed:\n{stderr}");
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn wgpu_continues_a_cpu_checkpoint_with_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("run.toml");
    std::fs::write(&config, RUN).unwrap();
    let cpu = tmp.path().join("cpu");
    train(&config, &cpu, &["--set", "backend=cpu"]);
    let checkpoint = cpu.join("checkpoints/step_00000002");
    let gpu = tmp.path().join("wgpu");
    let resume = [
        "--set",
        "backend=wgpu",
        "--resume",
        checkpoint.to_str().unwrap(),
    ];
    train(&config, &gpu, &resume);

    // The head and loss over chunks of 16 rows (mini's 4,096-token vocabulary: 256 KiB).
    let chunked = tmp.path().join("wgpu-chunked");
    let chunk = ["--set", "train.logits_chunk_mb=0.25"];
    train(&config, &chunked, &[&resume[..], &chunk[..]].concat());

    let expected: Vec<_> = losses(&cpu).into_iter().filter(|(s, _)| *s > 2).collect();
    for (name, out) in [("wgpu", &gpu), ("wgpu, chunked loss", &chunked)] {
        let got = losses(out);
        assert_eq!(got.len(), 2, "{name}: steps 3 and 4: {got:?}");
        for ((step, want), (gstep, have)) in expected.iter().zip(&got) {
            assert_eq!(step, gstep);
            let rel = (want - have).abs() / want.abs();
            // Step 3 starts from the checkpoint's weights: only the forward's rounding differs.
            // Step 4 follows one AdamW update from differently rounded gradients, which Adam's
            // normalisation magnifies where gradients are tiny (3.3e-4 seen once the built-in
            // corpus's validation split changed).
            let bound = if *step == 3 { 1e-4 } else { 1e-3 };
            assert!(
                rel < bound,
                "{name}: step {step}: cpu {want}, {have} (rel {rel:.2e})"
            );
        }
    }
    assert!(gpu.join("checkpoints/step_00000004/DONE").is_file());
}
