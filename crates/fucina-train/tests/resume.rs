//! Stopping and resuming must not change the run: 20 straight steps equal 10 + resume + 10,
//! bit for bit on the CPU.

mod common;

use common::{param_bits, tiny_run, B};
use fucina_dist::SingleProcess;
use fucina_model::Llama;
use fucina_train::checkpoint;
use fucina_train::{train, TrainOptions};

fn final_weights(run: &fucina_train::RunConfig) -> Vec<u32> {
    let device = Default::default();
    let dir = checkpoint::resolve(&run.out_dir, "auto").unwrap();
    let model = Llama::<B>::new(&run.model_config().unwrap(), &device);
    param_bits(&checkpoint::load_model::<B, _>(&dir, model, &device).unwrap())
}

#[test]
fn twenty_steps_equal_ten_plus_resume_plus_ten() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tiny_run(&tmp.path().join("straight"), &[]);
    let whole = train(straight.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    assert_eq!(whole.losses.len(), 20);

    let split = tiny_run(&tmp.path().join("split"), &[]);
    // Stop after step 10 of the 20-step schedule: an interrupted run, not a shorter one.
    let stop = TrainOptions {
        stop_after: Some(10),
        ..Default::default()
    };
    let first_half = train(split.clone(), &SingleProcess, stop).unwrap();
    let resumed = train(
        split.clone(),
        &SingleProcess,
        TrainOptions {
            resume: Some("auto".into()),
            ..Default::default()
        },
    )
    .unwrap();

    let joined: Vec<u64> = first_half
        .losses
        .iter()
        .chain(&resumed.losses)
        .map(|l| l.to_bits())
        .collect();
    let expected: Vec<u64> = whole.losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(
        joined, expected,
        "losses differ:\n{:?}\n{:?}",
        first_half.losses, whole.losses
    );
    assert_eq!(
        final_weights(&straight),
        final_weights(&split),
        "final weights differ"
    );
    assert!(
        whole.final_loss < whole.losses[0],
        "the run must learn something"
    );
}
