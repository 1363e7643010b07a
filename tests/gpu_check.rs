//! scripts/gpu-check.sh in its dry run (toy sizes on the CPU), as CI can run it: every step
//! passes, the figures it reports agree with independent sources (the fixtures' own
//! transformers losses), and a failing step is reported while the next ones still run.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const FIXTURES: [&str; 3] = ["llama-gqa", "llama3-tied", "mistral"];

fn gpu_check(out: &Path, extra: &[&str]) -> Output {
    gpu_check_within(out, extra, 8)
}

fn gpu_check_within(out: &Path, extra: &[&str], minutes: u32) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .args([
            "--dry-run",
            "--binary",
            env!("CARGO_BIN_EXE_fucina"),
            "--out",
        ])
        .arg(out)
        // The system interpreter: the PyTorch steps are skipped where it has no torch.
        .args(["--python", "python3"])
        .args(extra)
        .env("FUCINA_GPU_CHECK_MINUTES", minutes.to_string())
        .output()
        .unwrap()
}

fn report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("gpu-check.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report:#}"))
}

/// The step's own JSON (the one file it wrote).
fn figures(step: &Value) -> &Value {
    step["data"].as_object().unwrap().values().next().unwrap()
}

/// transformers' loss as scripts/hf-fixtures.sh recorded it, independent of fucina.
fn transformers_loss(fixture: &str) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(fixture)
        .join("meta.json");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    meta["summary"]["loss"].as_f64().unwrap()
}

#[test]
fn dry_run_passes_every_step_with_figures_that_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let result = gpu_check(tmp.path(), &[]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    let report = report(tmp.path());
    assert_eq!(report["failed"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["dry_run"], true);

    for fixture in FIXTURES {
        for (precision, tolerance) in [("f32", 1e-4), ("bf16", 1e-2)] {
            let step = step(&report, &format!("hf-{fixture}-{precision}"));
            assert_eq!(step["status"], "ok", "{step:#}");
            let loss = figures(step)["loss"].as_f64().unwrap();
            let want = transformers_loss(fixture);
            let relative = (loss - want).abs() / want;
            assert!(
                relative <= tolerance,
                "{fixture} {precision}: {loss} vs {want}"
            );
            assert!(
                stdout.contains(&format!("| {fixture} {precision} on cpu | loss {loss:.6}")),
                "{stdout}"
            );
        }
    }

    let mini = figures(step(&report, "mini-vs-cpu"));
    let (cpu, gpu) = (
        mini["cpu"].as_array().unwrap(),
        mini["gpu"].as_array().unwrap(),
    );
    assert_eq!((cpu.len(), gpu.len()), (5, 5), "{mini:#}");
    // Recomputed from the two runs' own metrics, not taken from the script's verdict.
    let metrics = |dir: &str| -> Vec<f64> {
        let text = std::fs::read_to_string(tmp.path().join(dir).join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["kind"] == "train" && e["step"].as_u64().unwrap() >= 2)
            .map(|e| e["loss"].as_f64().unwrap())
            .collect()
    };
    let gpu_losses = metrics("mini-gpu");
    assert_eq!(gpu_losses.len(), 5);
    for (a, b) in metrics("mini-cpu").iter().zip(&gpu_losses) {
        assert!((a - b).abs() / a <= 1e-3, "mini: cpu {a} vs continued {b}");
    }

    let train = figures(step(&report, "train-fucina-tiny"));
    assert!(train["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(train["precision"], "bf16");
    let losses = train["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 3);
    assert!(losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
    for name in [
        "attention-fucina-64",
        "attention-fucina-128",
        "matmul-fucina",
    ] {
        assert_eq!(step(&report, name)["status"], "ok");
    }
    // 2 ranks under mpirun through each transport the CPU has, the last line the figures.
    for name in ["allreduce-mpi-host", "allreduce-mpi-device"] {
        let step = step(&report, name);
        assert_eq!(step["status"], "ok", "{step:#}");
        assert!(
            step["detail"].as_str().unwrap().contains("1.0M"),
            "{step:#}"
        );
    }
    assert!(stdout.contains("## Training throughput"), "{stdout}");
    assert!(stdout.contains("| tiny | 64 × 2 |"), "{stdout}");
}

#[test]
fn a_failing_step_is_reported_and_the_next_ones_still_run() {
    if cfg!(feature = "cuda") {
        return; // this binary has cuda compiled in: the failure below would not happen
    }
    let tmp = tempfile::tempdir().unwrap();
    let result = gpu_check(tmp.path(), &["--backend", "cuda"]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(result.status.code(), Some(1), "{stdout}");
    let report = report(tmp.path());
    let doctor = step(&report, "doctor");
    assert_eq!(doctor["status"], "failed");
    assert!(
        doctor["detail"].as_str().unwrap().contains("not compiled"),
        "{doctor:#}"
    );
    for fixture in FIXTURES {
        assert_eq!(
            step(&report, &format!("hf-{fixture}-f32"))["status"],
            "failed"
        );
        // bf16 runs on the CPU in the dry run: after the failures, it still runs and passes.
        assert_eq!(step(&report, &format!("hf-{fixture}-bf16"))["status"], "ok");
    }
    assert_eq!(step(&report, "mini-gpu")["status"], "failed");
    assert_eq!(step(&report, "mini-vs-cpu")["status"], "skipped");
    assert_eq!(step(&report, "matmul-fucina")["status"], "ok");
    assert!(stdout.contains("| doctor | failed |"), "{stdout}");
}

#[test]
fn steps_past_the_time_budget_are_skipped_and_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let result = gpu_check_within(tmp.path(), &[], 0);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let report = report(tmp.path());
    for name in [
        "doctor",
        "hf-mistral-f32",
        "mini-cpu",
        "train-fucina-tiny",
        "matmul-fucina",
    ] {
        let step = step(&report, name);
        assert_eq!(step["status"], "skipped", "{step:#}");
        assert!(step["detail"].as_str().unwrap().contains("budget is spent"));
    }
}
