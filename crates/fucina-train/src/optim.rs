//! AdamW with PyTorch's conventions stated explicitly, and the learning-rate schedule.

use crate::config::TrainConfig;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_model::fused::cast;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// AdamW as in `torch.optim.AdamW`: decoupled decay `w -= lr·wd·w`, bias-corrected moments,
/// `eps` added outside the square root. Decay applies to matrices only: a rank-1 parameter is
/// a norm weight (or a bias), which GPT practice leaves undecayed.
#[derive(Clone, Debug)]
pub struct AdamW {
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// The factor the gradients of the next steps are taken times (see `set_grad_scale`).
    grad_scale: Arc<AtomicU32>,
}

impl AdamW {
    pub fn new(config: &TrainConfig) -> Self {
        Self {
            beta1: config.beta1 as f32,
            beta2: config.beta2 as f32,
            eps: config.eps as f32,
            weight_decay: config.weight_decay as f32,
            grad_scale: Arc::new(AtomicU32::new(1f32.to_bits())),
        }
    }

    /// The next steps take their gradients times `scale` (the replicated optimizer's 1/N and
    /// clip factor), folded into the moments' constants: `m += (1−β₁)·s·g`, `v += (1−β₂)·s²·g²`.
    /// The same update as scaling the gradients first, without a pass over them. Clones of this
    /// optimizer (the one burn's adaptor holds) share the setting.
    pub fn set_grad_scale(&self, scale: f32) {
        self.grad_scale.store(scale.to_bits(), Ordering::Relaxed);
    }

    fn grad_scale(&self) -> f32 {
        f32::from_bits(self.grad_scale.load(Ordering::Relaxed))
    }

    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// Step `time` (from 1) of the same update on host slices, for the sharded optimizer: the
    /// operations of `step` below in the same order, so both give the same f32 results. Moments
    /// of a parameter's first step are zeros here (`None` below): `0·β + x` is exactly `x`.
    pub fn step_host(&self, lr: f64, time: usize, decay: bool, slices: HostSlices<'_>) {
        let (b1, b2) = (self.beta1, self.beta2);
        let t = time as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let keep = match decay {
            true if lr * self.weight_decay as f64 != 0.0 => {
                (1.0 - lr * self.weight_decay as f64) as f32
            }
            _ => 1.0,
        };
        let lr = lr as f32;
        let HostSlices {
            weights,
            grads,
            moment_1,
            moment_2,
        } = slices;
        let moments = moment_1.iter_mut().zip(moment_2.iter_mut());
        for ((w, g), (m, v)) in weights.iter_mut().zip(grads).zip(moments) {
            *m = *m * b1 + g * (1.0 - b1);
            *v = *v * b2 + g * g * (1.0 - b2);
            let update = (*m / c1) / ((*v / c2).sqrt() + self.eps);
            *w = *w * keep - update * lr;
        }
    }
}

/// Equal-length host slices of one parameter (or part of one) for `AdamW::step_host`.
pub struct HostSlices<'a> {
    pub weights: &'a mut [f32],
    pub grads: &'a [f32],
    pub moment_1: &'a mut [f32],
    pub moment_2: &'a mut [f32],
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (b1, b2) = (self.beta1, self.beta2);
        let scale = self.grad_scale();
        let (k1, k2) = ((1.0 - b1) * scale, (1.0 - b2) * scale * scale);
        // The moments keep their dtype (bf16-pure: bf16, or f32 after a resume); the update
        // lands in the weight's. In f32 and mixed precision every cast below is a no-op.
        let weight_dtype = tensor.dtype();
        let grad = match &state {
            Some(s) => cast(grad, s.momentum.moment_1.dtype()),
            None => grad,
        };
        let momentum = match state {
            Some(AdamWState { momentum: m }) => AdaptiveMomentumState::new(
                m.time + 1,
                m.moment_1.mul_scalar(b1).add(grad.clone().mul_scalar(k1)),
                m.moment_2.mul_scalar(b2).add(grad.square().mul_scalar(k2)),
            ),
            None => AdaptiveMomentumState::new(
                1,
                grad.clone().mul_scalar(k1),
                grad.square().mul_scalar(k2),
            ),
        };
        let t = momentum.time as i32;
        let m_hat = momentum.moment_1.clone().div_scalar(1.0 - b1.powi(t));
        let v_hat = momentum.moment_2.clone().div_scalar(1.0 - b2.powi(t));
        let update = m_hat.div(v_hat.sqrt().add_scalar(self.eps));
        let decay = if D >= 2 {
            lr * self.weight_decay as f64
        } else {
            0.0
        };
        let decayed = if decay == 0.0 {
            tensor
        } else {
            tensor.mul_scalar(1.0 - decay)
        };
        (
            decayed - cast(update.mul_scalar(lr), weight_dtype),
            Some(AdamWState::new(momentum)),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// Linear warm-up from 0 to `lr` over `warmup_steps`, then cosine decay to `min_lr` at the last
/// step. A pure function of the step, so resuming needs no scheduler state.
pub fn learning_rate(config: &TrainConfig, step: u64) -> f64 {
    let (lr, min_lr) = (config.lr, config.min_lr);
    if step < config.warmup_steps {
        return lr * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let decay_steps = config.steps.saturating_sub(config.warmup_steps).max(1);
    let progress = ((step - config.warmup_steps) as f64 / decay_steps as f64).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}
