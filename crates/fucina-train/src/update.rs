//! How a step's gradients become new weights: replicated AdamW (gradients all-reduced, every
//! rank updating every parameter on the device) or sharded AdamW (ZeRO-1, `[dist]
//! shard_optimizer`). Both split the step in two, so that the loss and gradient norm can be
//! checked in between and a non-finite step skipped before anything changes.

use crate::checkpoint::{record_from_bytes, record_to_bytes, OptimFormat};
use crate::config::RunConfig;
use crate::flat_moments::{state_of, AdamRecord, FlatMoments};
use crate::grads::{GradSync, SyncStats};
use crate::optim::AdamW;
use crate::zero::{Layout, ZeroAdamW};
use anyhow::{Context, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_dist::Communicator;

pub enum Updater<B: AutodiffBackend, M: AutodiffModule<B>> {
    Replicated {
        sync: GradSync,
        optimizer: OptimizerAdaptor<AdamW, M, B>,
        /// The averaged gradients between `sync` and `apply`.
        grads: Option<GradientsParams>,
    },
    Sharded(ZeroAdamW),
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Updater<B, M> {
    pub fn new(config: &RunConfig, model: &M, comm: &dyn Communicator) -> Self {
        let adamw = AdamW::new(&config.train);
        let max_norm = config.train.grad_clip;
        if config.dist.shard_optimizer {
            let layout = Layout::of::<B, M>(model);
            Self::Sharded(ZeroAdamW::new(
                adamw,
                max_norm,
                layout,
                comm.rank(),
                comm.size(),
            ))
        } else {
            Self::Replicated {
                sync: GradSync::new(max_norm, config.dist.bucket_bytes()),
                optimizer: adamw.init::<B, M>(),
                grads: None,
            }
        }
    }

    /// The form this optimizer's checkpoints take.
    pub fn format(&self) -> OptimFormat {
        match self {
            Self::Replicated { .. } => OptimFormat::BurnRecord,
            Self::Sharded(_) => OptimFormat::Flat,
        }
    }

    /// Reduces this rank's gradients over all ranks and clips them; nothing is updated yet.
    pub fn sync(
        &mut self,
        model: &M,
        step_grads: GradientsParams,
        comm: &dyn Communicator,
    ) -> Result<SyncStats> {
        match self {
            Self::Replicated { sync, grads, .. } => {
                let (averaged, stats) = sync.run(model, step_grads, comm)?;
                *grads = Some(averaged);
                Ok(stats)
            }
            Self::Sharded(zero) => zero.sync(model, step_grads, comm),
        }
    }

    /// Drops the gradients of a step that is skipped.
    pub fn skip(&mut self) {
        match self {
            Self::Replicated { grads, .. } => *grads = None,
            Self::Sharded(zero) => zero.skip(),
        }
    }

    /// Applies the gradients of the last `sync` at learning rate `lr`; the time spent
    /// communicating is added to `stats`.
    pub fn apply(
        &mut self,
        lr: f64,
        model: M,
        comm: &dyn Communicator,
        stats: &mut SyncStats,
    ) -> Result<M> {
        match self {
            Self::Replicated {
                optimizer, grads, ..
            } => {
                let grads = grads
                    .take()
                    .context("an optimizer step without synchronised gradients")?;
                Ok(optimizer.step(lr, model, grads))
            }
            Self::Sharded(zero) => {
                let (model, seconds) = zero.apply(lr, model, comm)?;
                stats.comm_seconds += seconds;
                stats.sync_seconds += seconds;
                Ok(model)
            }
        }
    }

    /// The optimizer state for a checkpoint, on rank 0 (`None` elsewhere). A collective: the
    /// sharded optimizer gathers its blocks.
    pub fn save(&mut self, comm: &dyn Communicator) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Replicated { optimizer, .. } if comm.is_root() => {
                Ok(Some(record_to_bytes::<B, _>(optimizer.to_record())?))
            }
            Self::Replicated { .. } => Ok(None),
            Self::Sharded(zero) => match zero.gather_moments(comm)? {
                Some(all) => Ok(Some(all.to_safetensors(zero.layout())?)),
                None => Ok(None),
            },
        }
    }

    /// Loads a checkpoint's optimizer state, converting it when it was written by the other
    /// kind of optimizer. `model` must already hold the checkpoint's weights (and ids).
    pub fn load(
        &mut self,
        model: &M,
        format: OptimFormat,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> Result<()> {
        let file = format.file_name();
        match (self, format) {
            (Self::Replicated { optimizer, .. }, OptimFormat::BurnRecord) => {
                let record = record_from_bytes::<B, AdamRecord<B, M>>(bytes, device)
                    .with_context(|| format!("{file} does not fit this model"))?;
                *optimizer = optimizer.clone().load_record(record);
            }
            (Self::Replicated { optimizer, .. }, OptimFormat::Flat) => {
                let layout = Layout::of::<B, M>(model);
                let record = FlatMoments::from_safetensors(&bytes, &layout)
                    .and_then(|all| all.into_record::<B, M>(model, &layout))
                    .with_context(|| format!("{file} (from a run with dist.shard_optimizer)"))?;
                *optimizer = optimizer.clone().load_record(record);
            }
            (Self::Sharded(zero), OptimFormat::Flat) => {
                let all = FlatMoments::from_safetensors(&bytes, zero.layout())
                    .with_context(|| file.to_string())?;
                zero.load_moments(&all)?;
            }
            (Self::Sharded(zero), OptimFormat::BurnRecord) => {
                let all = record_from_bytes::<B, AdamRecord<B, M>>(bytes, device)
                    .and_then(|record| FlatMoments::from_record::<B, M>(model, record))
                    .with_context(|| format!("{file} (from a run without dist.shard_optimizer)"))?;
                zero.load_moments(&all)?;
            }
        }
        Ok(())
    }

    /// Bytes of AdamW moments held by this rank.
    pub fn moment_bytes(&self, model: &M) -> u64 {
        match self {
            Self::Replicated { optimizer, .. } => replicated_moment_bytes(model, optimizer),
            Self::Sharded(zero) => zero.moment_bytes(),
        }
    }
}

/// What burn's record holds for the trainable parameters, at each moment's own dtype.
fn replicated_moment_bytes<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    optimizer: &OptimizerAdaptor<AdamW, M, B>,
) -> u64 {
    struct Count<B: AutodiffBackend, M: AutodiffModule<B>> {
        record: AdamRecord<B, M>,
        bytes: u64,
    }
    impl<B: AutodiffBackend, M: AutodiffModule<B>> ModuleVisitor<B> for Count<B, M> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(record) = self.record.remove(&param.id) else {
                return;
            };
            if let Ok(state) = state_of::<B, D>(record) {
                let m = state.momentum;
                for moment in [m.moment_1, m.moment_2] {
                    let n = moment.shape().num_elements();
                    self.bytes += (n * moment.dtype().size()) as u64;
                }
            }
        }
    }
    let mut count = Count::<B, M> {
        record: optimizer.to_record(),
        bytes: 0,
    };
    model.visit(&mut count);
    count.bytes
}
