//! A checkpoint resumed under another seed would silently change the data order: refused.
//! (Its own test binary: burn's CPU backends seed one process-wide generator, so runs in
//! parallel test threads would disturb each other's initial weights.)

mod common;

use common::tiny_run;
use fucina_dist::SingleProcess;
use fucina_train::{train, TrainOptions};

#[test]
fn resuming_with_another_seed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), &["train.steps=4", "checkpoint.every=2"]);
    train(run, &SingleProcess, TrainOptions::default()).unwrap();
    let other_seed = tiny_run(tmp.path(), &["train.steps=6", "seed=99"]);
    let resume = TrainOptions {
        resume: Some("auto".into()),
        ..Default::default()
    };
    let error = format!(
        "{:#}",
        train(other_seed, &SingleProcess, resume).unwrap_err()
    );
    assert!(error.contains("seed"), "{error}");
}
