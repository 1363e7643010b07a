//! Validation asked for is never silently skipped: a set smaller than one micro-batch is
//! evaluated as a partial batch (the loss equals evaluating it in batches of one row), the
//! metrics say how many targets it covers, and a set without one sequence is refused up front.

mod common;

use fucina_data::{ShardWriter, TokenDataset};
use fucina_dist::SingleProcess;
use fucina_train::metrics::{read_events, Event, METRICS_FILE};
use fucina_train::{train, RunConfig, TrainOptions};
use std::path::Path;

fn shard(path: &Path, n: u32) {
    let mut w = ShardWriter::create(path, 256, Some(0)).unwrap();
    w.push(&(0..n).map(|i| 1 + (i * 37) % 255).collect::<Vec<u32>>())
        .unwrap();
    w.finish().unwrap();
}

fn run(dir: &Path, val_tokens: u32) -> RunConfig {
    std::fs::create_dir_all(dir).unwrap();
    shard(&dir.join("train.bin"), 3000);
    shard(&dir.join("val.bin"), val_tokens);
    let text = format!(
        r#"out_dir = "{dir}/out"
seed = 3
[model]
preset = "tiny"
[data]
dir = ""
tokenizer = "builtin"
train_files = ["{dir}/train.bin"]
val_files = ["{dir}/val.bin"]
seq_len = 16
[train]
steps = 2
global_batch_tokens = 160
micro_batch_size = 5
lr = 1e-3
[eval]
every = 2
batches = 4
[checkpoint]
every = 2
"#,
        dir = dir.display()
    );
    RunConfig::from_toml_str(&text, &[]).unwrap()
}

#[test]
fn a_validation_set_smaller_than_a_batch_is_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    // One window of 17 tokens: 16 targets, against micro-batches of 5 rows.
    let config = run(tmp.path(), 20);
    let summary = train(config.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    let val_loss = summary
        .val_loss
        .expect("the one-row validation set was evaluated");
    let events = read_events(&config.out_dir.join(METRICS_FILE)).unwrap();
    let tokens: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Val { tokens, .. } => Some(*tokens),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, [16]);

    // The same window as a full batch of one row, on the checkpointed weights.
    let device = Default::default();
    let dir = fucina_train::export::checkpoint_dir(&config.out_dir).unwrap();
    let model = fucina_train::export::trained_model::<burn::backend::Autodiff<common::B>>(
        &dir, &config, &device,
    )
    .unwrap();
    let val = TokenDataset::open(&[tmp.path().join("val.bin")]).unwrap();
    let alone = fucina_train::trainer::evaluate(&model, &val, 16, 1, 4, &SingleProcess, &device)
        .unwrap()
        .unwrap();
    assert!((alone - val_loss).abs() < 1e-5, "{alone} vs {val_loss}");
}

#[test]
fn a_validation_set_without_one_sequence_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = run(tmp.path(), 10);
    let err = format!(
        "{:#}",
        train(config, &SingleProcess, TrainOptions::default()).unwrap_err()
    );
    assert!(
        err.contains("holds no sequence of 17 tokens") && err.contains("eval.every = 0"),
        "{err}"
    );
    // Nothing was written: no empty run directory is left behind.
    assert!(!tmp.path().join("out").exists());
}
