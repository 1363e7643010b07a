//! How a step's gradients become new weights: replicated AdamW (gradients all-reduced, every
//! rank updating every parameter on the device) or sharded AdamW (ZeRO-1, `[dist]
//! shard_optimizer`). Both split the step in two, so that the loss and gradient norm can be
//! checked in between and a non-finite step skipped before anything changes.
//!
//! In mixed precision (`precision = "bf16"`) the optimizer owns the f32 master weights — the
//! replicated one a whole f32 model, the sharded one its block on the host — and the model
//! that trains is their bf16 cast, made anew after every update.

use crate::checkpoint::{
    record_from_bytes, record_to_bytes, OptimFormat, WeightsFormat, FLAT_OPTIM_FILE, MODEL_FILE,
    OPTIM_FILE, OPTIM_STEM, TRAINABLE_STEM,
};
use crate::config::{Precision, RunConfig};
use crate::flat_file::{shard_name, FlatPart};
use crate::flat_moments::{state_of, AdamRecord, FlatMoments};
use crate::grads::{AddressTransport, GradSync, SyncStats};
use crate::optim::AdamW;
use crate::precision::{cast_frozen, cast_params};
use crate::stages::Stages;
use crate::transport::{resolve, Probe, Transport};
use crate::zero::{read_trainable, Layout, ZeroAdamW};
use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_dist::Communicator;
use fucina_model::Llama;

pub struct Updater<B: AutodiffBackend, M: AutodiffModule<B>> {
    kind: Kind<B, M>,
    precision: Precision,
    /// `[dist] overlap`.
    overlap: bool,
    /// The gradient transport chosen, and why (several ranks).
    transport: Option<(Transport, String)>,
}

enum Kind<B: AutodiffBackend, M: AutodiffModule<B>> {
    Replicated {
        sync: GradSync,
        optimizer: OptimizerAdaptor<AdamW, M, B>,
        /// Shares its gradient scale with `optimizer`'s copy.
        adamw: AdamW,
        /// The summed gradients between `sync` and `apply`, with the factor to take them times.
        grads: Option<(GradientsParams, f64)>,
        /// Mixed precision: the f32 weights the optimizer updates.
        master: Option<M>,
    },
    Sharded(ZeroAdamW),
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Updater<B, M> {
    /// A collective when several ranks replicate the optimizer: they agree on the transport.
    pub fn new(config: &RunConfig, model: &M, comm: &dyn Communicator) -> Result<Self> {
        let adamw = AdamW::new(&config.train);
        let max_norm = config.train.grad_clip;
        let masters = config.precision.keeps_masters();
        let mut transport = None;
        let kind = if config.dist.shard_optimizer {
            let layout = Layout::of::<B, M>(model);
            let ranks = (comm.rank(), comm.size());
            let mut zero = ZeroAdamW::new(adamw, max_norm, layout, ranks, masters);
            if comm.size() > 1 {
                let probe = Probe::of(config.backend, comm)?;
                let (chosen, why) = resolve(config.dist.transport, config.backend, &probe)?;
                let (how, address) = match chosen {
                    Transport::MpiHost => ("the blocks travel from host memory", None),
                    nccl => (
                        "the blocks are reduced and gathered there, only this rank's crosses \
                         to the host",
                        Some(AddressTransport::new(nccl == Transport::Nccl)),
                    ),
                };
                zero.address = address;
                transport = Some((chosen, format!("{why}; sharded optimizer: {how}")));
            }
            Kind::Sharded(zero)
        } else {
            let mut sync = GradSync::new(max_norm, config.dist.bucket_bytes());
            sync.f32_grads = masters;
            if comm.size() > 1 {
                let probe = Probe::of(config.backend, comm)?;
                let (chosen, why) = resolve(config.dist.transport, config.backend, &probe)?;
                sync.packing = chosen.packing(config.backend);
                sync.address.nccl = chosen == Transport::Nccl;
                transport = Some((chosen, why));
            }
            Kind::Replicated {
                sync,
                optimizer: adamw.clone().init::<B, M>(),
                adamw,
                grads: None,
                master: None,
            }
        };
        Ok(Self {
            kind,
            precision: config.precision,
            overlap: config.dist.overlap,
            transport,
        })
    }

    /// The gradient transport over several ranks, and why.
    pub fn transport(&self) -> Option<&(Transport, String)> {
        self.transport.as_ref()
    }

    /// Takes the f32 model the run starts from (fresh, from Hugging Face or from a checkpoint)
    /// and returns the model that trains: in mixed precision the optimizer keeps `model` as
    /// its masters and hands back their bf16 cast; in bf16-pure the weights become bf16.
    pub fn adopt(&mut self, model: M) -> Result<M> {
        let dtype = self.precision.compute_dtype();
        if self.precision.keeps_masters() {
            let model = cast_frozen::<B, M>(model, dtype);
            match &mut self.kind {
                Kind::Replicated { master, .. } => *master = Some(model.clone()),
                Kind::Sharded(zero) => zero.read_weights::<B, M>(&model)?,
            }
            return Ok(cast_params::<B, M>(model, dtype));
        }
        Ok(cast_params::<B, M>(model, dtype))
    }

    /// The weights a `model.mpk` holds, on rank 0 (`None` elsewhere): the f32 masters in mixed
    /// precision, else the model's own. A collective with the sharded optimizer in mixed
    /// precision (it gathers the blocks).
    pub fn weights_to_save(&mut self, model: &M, comm: &dyn Communicator) -> Result<Option<M>> {
        let weights = match (&mut self.kind, self.precision.keeps_masters()) {
            (Kind::Sharded(zero), true) => return zero.gather_masters::<B, M>(model, comm),
            (
                Kind::Replicated {
                    master: Some(m), ..
                },
                true,
            ) => m,
            _ => model,
        };
        Ok(comm.is_root().then(|| weights.clone()))
    }

    /// The form this optimizer's checkpoints take, given the weights': flat whenever the
    /// weights are (their parameter ids are not kept, which burn's record is keyed by).
    pub fn format(&self, weights: WeightsFormat) -> OptimFormat {
        match (&self.kind, weights) {
            (Kind::Replicated { .. }, WeightsFormat::Record) => OptimFormat::BurnRecord,
            _ => OptimFormat::Flat,
        }
    }

    /// The ranks that write their part of a checkpoint (0: rank 0 writes whole files).
    pub fn shards(&self, comm: &dyn Communicator) -> usize {
        match self.kind {
            Kind::Sharded(_) => comm.size(),
            Kind::Replicated { .. } => 0,
        }
    }

    /// This rank's files of a checkpoint, as bytes in host memory: the sharded optimizer's
    /// part of the moments (and, for `WeightsFormat::Trainable`, of the weights) on every
    /// rank; whole files on rank 0 otherwise. The weights are the f32 masters in mixed
    /// precision. A collective when the sharded optimizer gathers masters for `model.mpk`.
    pub fn checkpoint_files(
        &mut self,
        model: &M,
        weights: WeightsFormat,
        comm: &dyn Communicator,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        if weights == WeightsFormat::Record {
            if let Some(whole) = self.weights_to_save(model, comm)? {
                let bytes = record_to_bytes::<B, _>(whole.into_record())?;
                files.push((MODEL_FILE.into(), bytes));
            }
        }
        let masters = self.precision.keeps_masters();
        match &mut self.kind {
            Kind::Sharded(zero) => {
                let (rank, world) = (comm.rank(), comm.size());
                let (layout, owned) = (zero.layout().clone(), zero.owned());
                let moments = FlatPart::moments(&layout, owned.clone(), zero.owned_moments())?;
                files.push((shard_name(OPTIM_STEM, rank, world), moments.encode()?));
                if weights == WeightsFormat::Trainable {
                    let mine = zero.owned_weights::<B, M>(model)?;
                    let part = FlatPart::trainable(&layout, owned, mine)?;
                    files.push((shard_name(TRAINABLE_STEM, rank, world), part.encode()?));
                }
            }
            Kind::Replicated { .. } if !comm.is_root() => {}
            Kind::Replicated {
                optimizer, master, ..
            } => {
                let whole = match (master.as_ref(), masters) {
                    (Some(m), true) => m,
                    _ => model,
                };
                match weights {
                    WeightsFormat::Record => {
                        let bytes = record_to_bytes::<B, _>(optimizer.to_record())?;
                        files.push((OPTIM_FILE.into(), bytes));
                    }
                    WeightsFormat::Trainable => {
                        let layout = Layout::of::<B, M>(whole);
                        let values = read_trainable::<B, M>(whole)?;
                        let part = FlatPart::trainable(&layout, 0..layout.len(), &values)?;
                        files.push((format!("{TRAINABLE_STEM}.safetensors"), part.encode()?));
                        let moments =
                            FlatMoments::from_record::<B, M>(whole, optimizer.to_record())?;
                        files.push((FLAT_OPTIM_FILE.into(), moments.to_safetensors(&layout)?));
                    }
                }
            }
        }
        Ok(files)
    }

    /// Reduces this rank's gradients over all ranks and clips them; nothing is updated yet.
    pub fn sync(
        &mut self,
        model: &M,
        step_grads: GradientsParams,
        comm: &dyn Communicator,
    ) -> Result<SyncStats> {
        match &mut self.kind {
            Kind::Replicated { sync, grads, .. } => {
                let (summed, stats) = sync.run(model, step_grads, comm)?;
                *grads = Some((summed, stats.grad_scale));
                Ok(stats)
            }
            Kind::Sharded(zero) => zero.sync(model, step_grads, comm),
        }
    }

    /// Whether micro-batch gradients go to `accumulate` (the host's f32 sum of the sharded
    /// optimizer) rather than being summed on the device.
    pub fn accumulates_on_host(&self) -> bool {
        matches!(&self.kind, Kind::Sharded(zero) if zero.accumulates_on_host())
    }

    /// Adds one micro-batch's gradients to the step's host sum (see `accumulates_on_host`);
    /// `sync` adds the last one.
    pub fn accumulate(&mut self, model: &M, grads: GradientsParams) -> Result<()> {
        match &mut self.kind {
            Kind::Sharded(zero) => zero.accumulate::<B, M>(model, grads),
            Kind::Replicated { .. } => {
                bail!("the replicated optimizer sums gradients on the device")
            }
        }
    }

    /// Drops the gradients of a step that is skipped.
    pub fn skip(&mut self) {
        match &mut self.kind {
            Kind::Replicated { grads, .. } => *grads = None,
            Kind::Sharded(zero) => zero.skip(),
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
        let dtype = self.precision.compute_dtype();
        match &mut self.kind {
            Kind::Replicated {
                optimizer,
                adamw,
                grads,
                master,
                ..
            } => {
                let (grads, scale) = grads
                    .take()
                    .context("an optimizer step without synchronised gradients")?;
                adamw.set_grad_scale(scale as f32);
                match master.take() {
                    None => Ok(optimizer.step(lr, model, grads)),
                    Some(weights) => {
                        // The bf16 weights are stale from here on: free them before the cast.
                        drop(model);
                        let weights = optimizer.step(lr, weights, grads);
                        *master = Some(weights.clone());
                        Ok(cast_params::<B, M>(weights, dtype))
                    }
                }
            }
            Kind::Sharded(zero) => {
                let (model, seconds) = zero.apply(lr, model, comm)?;
                stats.comm_seconds += seconds;
                stats.sync_seconds += seconds;
                Ok(model)
            }
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
        match (&mut self.kind, format) {
            (Kind::Replicated { optimizer, .. }, OptimFormat::BurnRecord) => {
                let record = record_from_bytes::<B, AdamRecord<B, M>>(bytes, device)
                    .with_context(|| format!("{file} does not fit this model"))?;
                *optimizer = optimizer.clone().load_record(record);
            }
            (Kind::Replicated { optimizer, .. }, OptimFormat::Flat) => {
                let layout = Layout::of::<B, M>(model);
                let record = FlatMoments::from_safetensors(&bytes, &layout)
                    .and_then(|all| all.into_record::<B, M>(model, &layout))
                    .with_context(|| format!("{file} (from a run with dist.shard_optimizer)"))?;
                *optimizer = optimizer.clone().load_record(record);
            }
            (Kind::Sharded(zero), OptimFormat::Flat) => {
                let all = FlatMoments::from_safetensors(&bytes, zero.layout())
                    .with_context(|| file.to_string())?;
                zero.load_moments(&all)?;
            }
            (Kind::Sharded(zero), OptimFormat::BurnRecord) => {
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
        match &self.kind {
            Kind::Replicated { optimizer, .. } => replicated_moment_bytes(model, optimizer),
            Kind::Sharded(zero) => zero.moment_bytes(),
        }
    }
}

impl<B: AutodiffBackend> Updater<B, Llama<B>> {
    /// Whether the step's last micro-batch goes to `sync_staged` rather than through
    /// `forward_backward` and `sync`: on several ranks, unless `[dist] overlap` is off. (One
    /// rank has nothing to overlap.)
    pub fn overlaps(&self, comm: &dyn Communicator) -> bool {
        self.overlap && comm.size() > 1
    }

    /// As `sync`, running the backward of the last micro-batch (`stages`) while the buckets
    /// it completes are reduced; `earlier`: the sum of the step's other micro-batches.
    pub fn sync_staged(
        &mut self,
        model: &Llama<B>,
        stages: Stages<B>,
        earlier: Option<GradientsParams>,
        comm: &dyn Communicator,
    ) -> Result<SyncStats> {
        match &mut self.kind {
            Kind::Replicated { sync, grads, .. } => {
                let (summed, stats) = sync.run_staged(model, stages, earlier, comm)?;
                *grads = Some((summed, stats.grad_scale));
                Ok(stats)
            }
            Kind::Sharded(zero) => zero.sync_staged(model, stages, earlier, comm),
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
