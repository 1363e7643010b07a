//! A rank spreads each micro-batch's rows over its threads (`fucina_train::threads`): the run
//! must not depend on how many there are, including an uneven split (4 rows over 3 threads).

mod common;
use common::losses;
use std::path::Path;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_fucina");

fn run(dir: &Path, threads: usize) -> Vec<f64> {
    let config = dir.join("run.toml");
    let out_dir = dir.join(format!("threads-{threads}"));
    std::fs::write(
        &config,
        r#"seed = 5
out_dir = "unused"
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 8
global_batch_tokens = 256
micro_batch_size = 4
lr = 1e-2
warmup_steps = 2
[eval]
every = 0
batches = 1
[checkpoint]
every = 0
keep = 1
"#,
    )
    .unwrap();
    let out = Command::new(EXE)
        .args(["train", config.to_str().unwrap(), "--sample-tokens", "0"])
        .args(["--set", &format!("out_dir={}", out_dir.display())])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{threads} threads: {stderr}");
    losses(&out_dir)
}

#[test]
fn losses_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let one = run(dir.path(), 1);
    let three = run(dir.path(), 3);
    assert_eq!(one.len(), 8);
    // Training moved: equal losses are not those of an untouched model.
    assert!(one[0] - one[7] > 0.05, "{one:?}");
    for (step, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {}: 1 thread {a}, 3 threads {b}",
            step + 1
        );
    }
}
