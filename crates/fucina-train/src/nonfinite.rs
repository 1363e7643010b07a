//! Steps whose loss or gradient norm is NaN or infinite. Both numbers come out of all-reduces,
//! so every rank sees the same values and takes the same decision without talking.

use crate::checkpoint::TrainState;
use crate::config::{NonFinite, TrainConfig};
use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use fucina_dist::{CollectiveError, Communicator};

pub enum Verdict {
    Apply,
    Skip,
}

/// Whether to apply step `step` (1-based); an error (raised on every rank at once) when the
/// policy or the skip budget says stop.
pub fn check(
    train: &TrainConfig,
    state: &mut TrainState,
    step: u64,
    loss: f64,
    grad_norm: f64,
    root: bool,
) -> Result<Verdict> {
    if loss.is_finite() && grad_norm.is_finite() {
        return Ok(Verdict::Apply);
    }
    let what = format!("step {step}: non-finite loss {loss} / gradient norm {grad_norm}");
    if train.on_nonfinite == NonFinite::Abort {
        return Err(CollectiveError(format!(
            "{what}; train.on_nonfinite = \"abort\": stopped without a checkpoint of these weights"
        ))
        .into());
    }
    state.skipped_steps += 1;
    if state.skipped_steps > train.max_nonfinite_skips {
        return Err(CollectiveError(format!(
            "{what}; {} steps skipped, more than train.max_nonfinite_skips = {}: stopped \
             (lower train.lr, check the data, or resume from an earlier checkpoint)",
            state.skipped_steps, train.max_nonfinite_skips
        ))
        .into());
    }
    if root {
        eprintln!(
            "warning: {what}; skipped, weights unchanged ({} of {} allowed)",
            state.skipped_steps, train.max_nonfinite_skips
        );
    }
    Ok(Verdict::Skip)
}

/// Test-only knob: `FUCINA_TEST_NAN_STEPS=3,4` poisons the loss of those steps on the last rank,
/// as a bad batch or an overflow would. Read once, before the loop.
pub fn poisoned_steps(comm: &dyn Communicator) -> Vec<u64> {
    if comm.rank() + 1 != comm.size() {
        return Vec::new();
    }
    std::env::var("FUCINA_TEST_NAN_STEPS")
        .map(|steps| {
            steps
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every float parameter is finite: a checkpoint must never hold NaN weights.
pub fn all_finite<B: Backend, M: Module<B>>(model: &M) -> bool {
    struct Finite(bool);
    impl<B: Backend> ModuleVisitor<B> for Finite {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            // x - x is 0 for every finite x and NaN for NaN and ±inf, so the sum is 0 exactly
            // when all are finite: one reduction where the weights are, one value copied back.
            if self.0 {
                let w = param.val();
                let sum = (w.clone() - w).sum().into_data().convert::<f32>();
                self.0 = sum.as_slice::<f32>().is_ok_and(|v| v == [0.0]);
            }
        }
    }
    let mut visitor = Finite(true);
    model.visit(&mut visitor);
    visitor.0
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::nn::LinearConfig;
    use burn::prelude::*;

    #[test]
    fn a_single_nan_weight_is_found() {
        let device = Default::default();
        let mut linear = LinearConfig::new(3, 2).init::<Flex>(&device);
        assert!(super::all_finite::<Flex, _>(&linear));
        let values = [1.0, 2.0, 3.0, 4.0, f32::NAN, 6.0];
        let weight = Tensor::<Flex, 1>::from_floats(values, &device).reshape([3, 2]);
        linear.weight = Param::from_tensor(weight);
        assert!(!super::all_finite::<Flex, _>(&linear));
        let values = [1.0, 2.0, f32::NEG_INFINITY, 4.0, 5.0, 6.0];
        let weight = Tensor::<Flex, 1>::from_floats(values, &device).reshape([3, 2]);
        linear.weight = Param::from_tensor(weight);
        assert!(!super::all_finite::<Flex, _>(&linear));
    }
}
