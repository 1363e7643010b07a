//! `data.document_mask = true`: in pre-training text, attention stops at end-of-text. The run
//! reads the same tokens as without it (gradient accumulation stays exact under the mask, and
//! validation runs under it too), and it trains differently, since the built-in corpus's
//! 32-token windows often hold the end of one document and the start of the next.

mod common;

use fucina_dist::SingleProcess;
use fucina_train::{train, TrainOptions, TrainSummary};

#[test]
fn document_mask_cuts_attention_at_end_of_text() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, micro: usize, mask: bool| -> TrainSummary {
        let micro = format!("train.micro_batch_size={micro}");
        let mask = format!("data.document_mask={mask}");
        let extra = [
            "train.steps=8",
            &micro,
            &mask,
            "checkpoint.every=0",
            "eval.every=8",
        ];
        let config = common::tiny_run(&tmp.path().join(name), &extra);
        train(config, &SingleProcess, TrainOptions::default()).unwrap()
    };
    let accumulated = run("accumulated", 2, true);
    let whole = run("whole", 8, true);
    for (step, (a, w)) in accumulated.losses.iter().zip(&whole.losses).enumerate() {
        assert!((a - w).abs() <= 1e-4 * w.abs(), "step {step}: {a} vs {w}");
    }
    let plain = run("plain", 8, false);
    // Rounding alone moves these losses by ~1e-7; eight steps of a tiny model learn little.
    let differ = |a: f64, b: f64| (a - b).abs() > 2e-4 * b.abs();
    assert!(
        differ(whole.final_loss, plain.final_loss),
        "masked {:?} vs plain {:?}",
        whole.losses,
        plain.losses
    );
    let (masked_val, plain_val) = (whole.val_loss.unwrap(), plain.val_loss.unwrap());
    assert!(differ(masked_val, plain_val), "{masked_val} vs {plain_val}");
    assert!(whole.losses.last() < whole.losses.first());
}
