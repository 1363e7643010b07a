//! Gradient accumulation is exact: 4 micro-batches of 2 sequences train the same model as one
//! micro-batch of 8, step by step.

mod common;

use fucina_dist::SingleProcess;
use fucina_train::{train, TrainOptions};

#[test]
fn four_micro_batches_equal_one_big_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, micro: &str| {
        let config = common::tiny_run(
            &tmp.path().join(name),
            &["train.steps=8", micro, "checkpoint.every=0"],
        );
        train(config, &SingleProcess, TrainOptions::default())
            .unwrap()
            .losses
    };
    let accumulated = run("accumulated", "train.micro_batch_size=2");
    let whole = run("whole", "train.micro_batch_size=8");
    for (step, (a, w)) in accumulated.iter().zip(&whole).enumerate() {
        assert!((a - w).abs() <= 1e-4 * w.abs(), "step {step}: {a} vs {w}");
    }
    assert!(whole.last() < whole.first());
}
