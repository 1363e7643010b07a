//! A job script written by `fucina launch` for the `local-slurm` profile, submitted to a real
//! Slurm on this machine (scripts/slurm-local.sh starts munge, slurmctld and slurmd): sbatch →
//! srun with 2 tasks → a 2-rank training that writes its checkpoint.
//!
//! Without Slurm the test says so and passes, unless FUCINA_REQUIRE_SLURM=1 (set by
//! scripts/test.sh, so CI cannot skip it silently).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUN: &str = r#"
out_dir = "out"
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 4
global_batch_tokens = 256
micro_batch_size = 2
lr = 3e-3
[eval]
every = 0
[checkpoint]
every = 2
"#;

fn slurm_is_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up && std::env::var("FUCINA_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!("FUCINA_REQUIRE_SLURM=1 but Slurm is not up: run scripts/slurm-local.sh");
    }
    up
}

fn job_state(id: &str) -> Option<String> {
    let out = Command::new("scontrol")
        .args(["show", "job", id])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name).map(str::to_string))
    };
    Some(format!("{} {}", field("JobState=")?, field("ExitCode=")?))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

#[test]
fn sbatch_runs_a_two_rank_training_from_a_generated_script() {
    if !slurm_is_up() {
        eprintln!("skipped: no Slurm here (scripts/slurm-local.sh starts one)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("run.toml"), RUN).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fucina"))
        .args(["launch", "run.toml", "--factory", "local-slurm"])
        .args(["--nodes", "1", "--time", "00:15:00", "--submit"])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "launch failed:\n{stderr}");
    let id = stdout
        .split_whitespace()
        .last()
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .to_string();

    let started = Instant::now();
    let state = loop {
        let state = job_state(&id).unwrap_or_default();
        if !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", ""]
            .contains(&state.split(' ').next().unwrap_or(""))
        {
            break state;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = Command::new("scancel").arg(&id).status();
            panic!("job {id} still {state} after 10 minutes");
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let log = read(&dir.join(format!("out/slurm-{id}.out")));
    assert_eq!(state, "COMPLETED 0:0", "job {id}; its output:\n{log}");
    assert!(
        log.contains("replicas identical on 2 ranks"),
        "not a 2-rank run:\n{log}"
    );
    let checkpoint = dir.join("out/checkpoints/step_00000004");
    assert!(checkpoint.join("DONE").is_file(), "no checkpoint:\n{log}");
    let state: serde_json::Value =
        serde_json::from_str(&read(&checkpoint.join("state.json"))).unwrap();
    assert_eq!(state["world_size"], 2, "{state}");
}

fn launch(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fucina"))
        .arg("launch")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn the_local_profile_runs_its_script_here() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("run.toml"), RUN).unwrap();
    let out = launch(dir, &["run.toml", "--factory", "local", "--submit"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(dir.join("out/job-local.sh").is_file());
    assert!(
        dir.join("out/checkpoints/step_00000004/DONE").is_file(),
        "{stderr}"
    );
}

#[test]
fn launch_refuses_what_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("run.toml"), RUN).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--factory", "lumi-g", "--binary", "/opt/f"],
            "placeholder: pass --account",
        ),
        (&["--factory", "lumi"], "no factory profile \"lumi\""),
        (
            &[
                "--factory",
                "local-slurm",
                "--set",
                "train.global_batch_tokens=96",
            ],
            "not divisible by world size 2",
        ),
        (
            &[
                "--factory",
                "local",
                "--set",
                "model.preset=llama-7b",
                "--set",
                "data.seq_len=128",
            ],
            "exceeds the 8 GiB",
        ),
        (
            &[
                "--factory",
                "leonardo-booster",
                "--account",
                "a",
                "--debug",
                "--time",
                "1:00:00",
                "--binary",
                "/opt/f",
            ],
            "exceeds the debug limit",
        ),
        (
            &["--factory", "leonardo-booster", "--account", "a"],
            "no cuda backend",
        ),
        (&["--factory", "local", "--nodes", "2"], "--nodes 1"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["run.toml", "--set", "train.micro_batch_size=1"];
        all.extend_from_slice(args);
        let out = launch(dir, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} should fail");
        assert!(
            stderr.contains(expected),
            "{all:?}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn scripts_resubmit_on_the_code_training_exits_with() {
    assert_eq!(fucina_launch::EXIT_RESUME, fucina_train::stop::EXIT_RESUME);
}

/// Llama-3-8B full fine-tuning at seq 8192 (torchtitan's) on MareNostrum 5's 64 GB H100s: with
/// ZeRO-1 and block checkpointing in mixed precision the estimate fits; without them, launch
/// names the change that would make it fit.
#[test]
fn an_8b_model_fits_mn5_with_zero1_and_block_checkpointing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("run.toml"), RUN).unwrap();
    let base = [
        "run.toml",
        "--factory",
        "mn5-acc",
        "--account",
        "ehpc01",
        "--binary",
        "/opt/f",
        "--set",
        "model.preset=llama-3-8b",
        "--set",
        "data.seq_len=8192",
        "--set",
        "train.micro_batch_size=1",
        "--set",
        "train.global_batch_tokens=1048576",
    ];
    let gib = |stderr: &str| -> f64 {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("memory per rank"))
            .unwrap_or_else(|| panic!("no memory line in {stderr}"));
        let at = line.find("): ").unwrap() + 3;
        line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let fit: Vec<&str> = base
        .iter()
        .copied()
        .chain([
            "--set",
            "dist.shard_optimizer=true",
            "--set",
            "train.activation_checkpointing=block",
        ])
        .collect();
    let out = launch(dir, &fit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let need = gib(&stderr);
    // 2 bytes of bf16 weights and 2 of gradients per parameter (8.03 B), the f32 masters and
    // moments on the host, and the checkpointed activations: ~37 GiB.
    assert!((30.0..60.0).contains(&need), "{stderr}");

    let plain: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--set", "dist.shard_optimizer=true"])
        .collect();
    let out = launch(dir, &plain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--set train.activation_checkpointing=block would make it fit"),
        "{stderr}"
    );
    let out = launch(dir, &base);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--set train.activation_checkpointing=block --set dist.shard_optimizer=true would make it fit"
        ),
        "{stderr}"
    );
}
