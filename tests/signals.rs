//! SIGTERM, SIGUSR1 and SIGINT stop every rank after the same step, at a checkpoint, with exit
//! code 75; the resumed run ends with weights bit-identical to an uninterrupted run's.
#![cfg(feature = "mpi")]

mod common;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn write_config(dir: &Path) -> String {
    let path = dir.join("run.toml");
    let text = r#"seed = 5
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 40
global_batch_tokens = 384
micro_batch_size = 2
lr = 3e-3
warmup_steps = 3
[eval]
every = 0
[checkpoint]
every = 1000
"#;
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn train(np: usize, config: &str, out: &Path, extra: &[&str]) -> Command {
    let mut command = common::train_command(np, config, out, extra);
    command
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn steps_done(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Waits until the run has taken a few steps, then signals the processes `pids` returns.
fn signal_midway(
    child: Child,
    out: &Path,
    signal: &str,
    mut pids: impl FnMut(u32) -> Vec<u32>,
) -> Output {
    let started = Instant::now();
    while steps_done(out) < 5 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids(child.id()) {
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
    }
    // A stop the ranks do not agree on leaves some waiting in a collective: fail, do not hang.
    let mut child = child;
    let signalled = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if signalled.elapsed() > Duration::from_secs(60) {
            for pid in children(child.id()) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            let _ = child.kill();
            panic!("still running 60 s after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn parameter_hash(stderr: &str) -> String {
    let at = stderr
        .find("parameter hash ")
        .unwrap_or_else(|| panic!("no parameter hash in\n{stderr}"));
    stderr[at..].split_whitespace().nth(2).unwrap().to_string()
}

fn finish(np: usize, config: &str, out: &Path, extra: &[&str]) -> String {
    let output = train(np, config, out, extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

fn stopped_step(stderr: &str) -> u64 {
    let at = stderr
        .find("after step ")
        .unwrap_or_else(|| panic!("no stop line in\n{stderr}"));
    stderr[at + 11..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn sigterm_to_every_rank_checkpoints_and_resumes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let reference = finish(3, &config, &tmp.path().join("reference"), &[]);

    // Slurm signals every task of the step, as here.
    let out = tmp.path().join("stopped");
    let child = train(3, &config, &out, &[]).spawn().unwrap();
    let output = signal_midway(child, &out, "TERM", children);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    let step = stopped_step(&stderr);
    assert!(step < 40, "{stderr}");
    let checkpoint = out.join(format!("checkpoints/step_{step:08}/DONE"));
    assert!(
        checkpoint.is_file(),
        "no checkpoint at the stop step:\n{stderr}"
    );
    assert!(stderr.contains("resume with: fucina train"), "{stderr}");

    let resumed = finish(3, &config, &out, &["--resume", "auto"]);
    assert!(resumed.contains(&format!("at step {step}")), "{resumed}");
    assert_eq!(parameter_hash(&resumed), parameter_hash(&reference));
}

#[test]
fn sigusr1_to_one_rank_stops_them_all_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let out = tmp.path().join("run");
    let child = train(2, &config, &out, &[]).spawn().unwrap();
    // Only the last rank hears it; the all-reduce tells rank 0.
    let output = signal_midway(child, &out, "USR1", |pid| {
        children(pid).into_iter().max().into_iter().collect()
    });
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("stopped by a signal to another rank"),
        "{stderr}"
    );
    let step = stopped_step(&stderr);
    assert!(out
        .join(format!("checkpoints/step_{step:08}/DONE"))
        .is_file());
}

#[test]
fn sigint_stops_a_single_process() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let out = tmp.path().join("run");
    let child = train(1, &config, &out, &[]).spawn().unwrap();
    let output = signal_midway(child, &out, "INT", |pid| vec![pid]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("stopped by SIGINT"), "{stderr}");
}

#[test]
fn kill_9_of_one_rank_ends_the_job_and_a_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    // Long enough that the kill lands mid-run.
    let every = ["--set", "checkpoint.every=4", "--set", "train.steps=200"];
    let reference = finish(3, &config, &tmp.path().join("reference"), &every);

    let out = tmp.path().join("killed");
    let child = train(3, &config, &out, &every).spawn().unwrap();
    let started = Instant::now();
    let mut killed_at = None;
    let output = signal_midway(child, &out, "KILL", |pid| {
        killed_at = Some(Instant::now());
        children(pid).into_iter().nth(1).into_iter().collect()
    });
    let took = killed_at.unwrap_or(started).elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} to end:\n{stderr}"
    );
    assert!(
        stderr.contains("signal 9"),
        "no message naming the killed rank:\n{stderr}"
    );

    let resumed = finish(
        3,
        &config,
        &out,
        &[&every[..], &["--resume", "auto"]].concat(),
    );
    assert!(resumed.contains("resuming from"), "{resumed}");
    assert_eq!(parameter_hash(&resumed), parameter_hash(&reference));
}

/// `kill -9` of the whole job while checkpoint 8 is being written in the background (its
/// writers held after their first file): checkpoint 4 stays usable, `--resume auto` takes it,
/// clears the half-written one and ends as the uninterrupted run does.
#[test]
fn kill_9_during_a_background_write_leaves_the_checkpoint_before() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let set = [
        "--set",
        "checkpoint.every=4",
        "--set",
        "train.steps=12",
        "--set",
        "dist.shard_optimizer=true",
    ];
    let reference = finish(2, &config, &tmp.path().join("reference"), &set);

    let out = tmp.path().join("killed");
    let mut command = train(2, &config, &out, &set);
    let child = command.env("FUCINA_TEST_STALL_WRITE", "8").spawn().unwrap();
    let checkpoints = out.join("checkpoints");
    let writing = checkpoints.join(".tmp_step_00000008");
    let started = Instant::now();
    let in_progress = || {
        let files = std::fs::read_dir(&writing).map_or(0, |d| d.count());
        files > 0 && checkpoints.join("step_00000004/DONE").is_file()
    };
    while !in_progress() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no write began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut pids = children(child.id());
    pids.push(child.id());
    for pid in pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(!checkpoints.join("step_00000008").exists());

    let resumed = finish(
        2,
        &config,
        &out,
        &[&set[..], &["--resume", "auto"]].concat(),
    );
    assert!(
        resumed.contains("step_00000004 at step 4"),
        "not resumed from step 4:\n{resumed}"
    );
    assert!(
        !writing.exists(),
        "the half-written checkpoint is still there"
    );
    assert_eq!(parameter_hash(&resumed), parameter_hash(&reference));
}
