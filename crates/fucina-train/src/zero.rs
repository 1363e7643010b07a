//! ZeRO-1: AdamW with its moments sharded over the ranks. The trainable parameters, in visit
//! order, form one flat vector padded to a multiple of the world size; rank r owns block r. A
//! step reduce-scatters the gradients (each rank receives the sum of its block), updates its
//! block of the weights on the host in f32, and all-gathers the blocks into every rank's model.
//! Reduce-scatter plus all-gather move the bytes of one all-reduce; the moments take 1/N.

use crate::flat_moments::FlatMoments;
use crate::grads::{
    clip_factor, download, flatten, sum_of_squares, trainable_shapes, AddressTransport, FlatGrads,
    SyncStats,
};
use crate::optim::{AdamW, HostSlices};
use crate::staged_grads::StagedGrads;
use crate::stages::Stages;
use anyhow::{bail, ensure, Result};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use fucina_dist::Communicator;
use fucina_model::fused::cast;
use fucina_model::Llama;
use std::ops::Range;
use std::time::Instant;

/// Shapes of the trainable parameters in visit order: what the flat vector is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout(pub Vec<Vec<usize>>);

impl Layout {
    pub fn of<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Self {
        Layout(
            trainable_shapes(model)
                .into_iter()
                .map(|(_, d)| d)
                .collect(),
        )
    }

    /// Values in the flat vector.
    pub fn len(&self) -> usize {
        self.0.iter().map(|d| d.iter().product::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each parameter's range in the flat vector, and whether AdamW decays it (matrices only).
    pub fn ranges(&self) -> Vec<(Range<usize>, bool)> {
        let mut offset = 0;
        self.0
            .iter()
            .map(|dims| {
                let n: usize = dims.iter().product();
                offset += n;
                (offset - n..offset, dims.len() >= 2)
            })
            .collect()
    }
}

/// One rank's share of a sharded AdamW, with the host buffers it reuses from step to step.
pub struct ZeroAdamW {
    adamw: AdamW,
    /// Clip the averaged gradients to this global norm; 0 disables clipping.
    max_norm: f64,
    layout: Layout,
    /// Values per rank: the flat vector's length divided by the world size, rounded up.
    block: usize,
    /// This rank's part of the flat vector, without padding.
    owned: Range<usize>,
    /// `owned` cut at parameter boundaries, in block coordinates, with the decay flag.
    segments: Vec<(Range<usize>, bool)>,
    /// The moments of this rank's block (padding included, so every rank holds `block`).
    moments: FlatMoments,
    /// `block × world` values: the gradients sent, then the weights gathered.
    flat: Vec<f32>,
    /// This rank's block of the averaged, clipped gradients of the step being taken.
    grads: Vec<f32>,
    /// This rank's block of the weights, updated on the host.
    weights: Vec<f32>,
    /// Mixed precision: `weights` are the f32 masters of this block, kept from step to step
    /// (read once, by `read_weights`); otherwise they are read from the model at every step.
    masters: bool,
    weights_read: bool,
    /// `flat` holds a partial sum of this step's micro-batch gradients.
    summing: bool,
    pending: bool,
    /// `mpi-device`/`nccl`: the blocks are reduced and gathered where the model is
    /// (`zero_address.rs`), and micro-batches are summed there rather than on the host.
    pub address: Option<AddressTransport>,
}

impl ZeroAdamW {
    pub fn new(
        adamw: AdamW,
        max_norm: f64,
        layout: Layout,
        (rank, world): (usize, usize),
        masters: bool,
    ) -> Self {
        let total = layout.len();
        // At least one value per rank, so that no collective gets an empty buffer.
        let block = total.div_ceil(world).max(1);
        let owned = (rank * block).min(total)..((rank + 1) * block).min(total);
        let segments = layout
            .ranges()
            .into_iter()
            .filter_map(|(range, decay)| {
                let (lo, hi) = (range.start.max(owned.start), range.end.min(owned.end));
                (lo < hi).then(|| (lo - owned.start..hi - owned.start, decay))
            })
            .collect();
        Self {
            adamw,
            max_norm,
            layout,
            block,
            owned,
            segments,
            moments: FlatMoments::zeros(block),
            flat: vec![0.0; block * world],
            grads: vec![0.0; block],
            weights: vec![0.0; block],
            masters,
            weights_read: false,
            summing: false,
            pending: false,
            address: None,
        }
    }

    /// Copies this rank's block of `model`'s trainable weights to the host; with masters, from
    /// the f32 model before it is cast to the compute dtype.
    pub fn read_weights<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
    ) -> Result<()> {
        let mut read = ReadBlock {
            owned: self.owned.clone(),
            offset: 0,
            out: &mut self.weights,
            error: None,
        };
        model.visit(&mut read);
        if let Some(e) = read.error {
            return Err(e);
        }
        self.weights_read = true;
        Ok(())
    }

    /// On rank 0, `model` with its trainable weights replaced by the f32 masters of every
    /// rank (`None` elsewhere). A collective.
    pub fn gather_masters<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        comm: &dyn Communicator,
    ) -> Result<Option<M>> {
        ensure!(
            self.weights_read,
            "the sharded optimizer holds no master weights yet"
        );
        comm.all_gather(&self.weights, &mut self.flat)?;
        Ok(comm.is_root().then(|| {
            model.clone().map(&mut WriteBack {
                flat: &self.flat,
                offset: 0,
                dtype: Some(DType::F32),
            })
        }))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Bytes of AdamW moments this rank holds.
    pub fn moment_bytes(&self) -> u64 {
        self.moments.bytes()
    }

    /// Sums this rank's block of the gradients over all ranks, averages and clips it by the
    /// global norm; the update waits for `apply`, so a non-finite step can still be skipped.
    pub fn sync<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        grads: GradientsParams,
        comm: &dyn Communicator,
    ) -> Result<SyncStats> {
        let started = Instant::now();
        if let Some(mut transport) = self.address.take() {
            let mut grads = grads;
            let FlatGrads { parts, .. } = flatten::<B, M>(model, &mut grads);
            let device = parts.first().map(|p| p.device()).unwrap_or_default();
            let mut parts: Vec<_> = parts.into_iter().map(Some).collect();
            let mut take = |i: usize| parts[i].take().expect("each gradient is taken once");
            let waited = self.reduce_by_address(&mut transport, &device, &mut take, comm);
            self.address = Some(transport);
            return self.clip(comm, started, waited?, 0.0);
        }
        self.accumulate::<B, M>(model, grads)?;
        self.summing = false;
        let blocked = Instant::now();
        comm.reduce_scatter_sum(&self.flat, &mut self.grads)?;
        let waited = blocked.elapsed().as_secs_f64();
        self.clip(comm, started, waited, 0.0)
    }

    /// Where the step's micro-batches are summed: on the host, unless the blocks are reduced
    /// where the model is.
    pub fn accumulates_on_host(&self) -> bool {
        self.address.is_none()
    }

    pub(crate) fn block(&self) -> usize {
        self.block
    }

    pub(crate) fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// This rank's block of the summed gradients, reduced elsewhere.
    pub(crate) fn set_grads(&mut self, values: Vec<f32>) -> Result<()> {
        ensure!(
            values.len() == self.block,
            "a reduced block of {} values, not {}",
            values.len(),
            self.block
        );
        self.grads = values;
        Ok(())
    }

    /// As `sync`, for the step's last micro-batch with its backward still to run: block r of
    /// the gradients is reduced to rank r as soon as the backward has produced it, from the
    /// last block (the last layers, produced first) to the first, while the backward goes on.
    /// The time of the backward is not counted as sync.
    pub fn sync_staged<B: AutodiffBackend>(
        &mut self,
        model: &Llama<B>,
        stages: Stages<B>,
        earlier: Option<GradientsParams>,
        comm: &dyn Communicator,
    ) -> Result<SyncStats> {
        let started = Instant::now();
        let ranges = self.layout.ranges();
        let stage_of = Stages::stage_of(model);
        ensure!(
            stage_of.len() == ranges.len(),
            "the trainable parameters changed after the sharded optimizer was built"
        );
        let lens = ranges.iter().map(|(r, _)| r.len()).collect();
        if let Some(mut transport) = self.address.take() {
            let mut staged = StagedGrads::new(model, stages, earlier, lens);
            let device = staged.device();
            let mut take = |i: usize| staged.take(i);
            let waited = self.reduce_by_address(&mut transport, &device, &mut take, comm);
            self.address = Some(transport);
            return self.clip(comm, started, waited?, staged.backward_seconds);
        }
        ensure!(
            earlier.is_none(),
            "the sharded optimizer sums earlier micro-batches on the host"
        );
        let (block, summing) = (self.block, self.summing);
        // A gradient that spans two blocks, kept for the lower one after filling the upper.
        let mut kept: Vec<Option<Vec<f32>>> = vec![None; ranges.len()];
        let mut failure = None;
        let mut staged = StagedGrads::new(model, stages, None, lens);
        let mut fill = |r: usize, chunk: &mut [f32]| {
            let (lo, hi) = (r * block, (r + 1) * block);
            if !summing {
                chunk.fill(0.0);
            }
            for (i, (range, _)) in ranges.iter().enumerate().rev() {
                if range.end <= lo || range.start >= hi {
                    continue;
                }
                let values = match kept[i].take() {
                    Some(values) => values,
                    None => {
                        match download(staged.take(i)) {
                            Ok(values) => values,
                            Err(e) => {
                                // Zeros travel instead, so that no rank is left waiting.
                                failure.get_or_insert(e);
                                vec![0.0; range.len()]
                            }
                        }
                    }
                };
                let (from, to) = (range.start.max(lo), range.end.min(hi));
                let part = &values[from - range.start..to - range.start];
                let out = &mut chunk[from - lo..to - lo];
                match summing {
                    true => out.iter_mut().zip(part).for_each(|(o, v)| *o += v),
                    false => out.copy_from_slice(part),
                }
                if range.start < lo {
                    kept[i] = Some(values);
                }
            }
        };
        let waited = comm.reduce_blocks_to_owners(&mut self.flat, &mut self.grads, &mut fill)?;
        self.summing = false;
        if let Some(e) = failure {
            return Err(e);
        }
        self.clip(comm, started, waited, staged.backward_seconds)
    }

    /// Averages and clips this rank's reduced block by the global norm (one all-reduce of a
    /// single number). `waited`: the seconds spent in the reduction so far.
    fn clip(
        &mut self,
        comm: &dyn Communicator,
        started: Instant,
        waited: f64,
        backward_seconds: f64,
    ) -> Result<SyncStats> {
        let blocked = Instant::now();
        let mut squares = [sum_of_squares(&self.grads) as f32];
        comm.all_reduce_sum(&mut squares)?;
        let comm_seconds = waited + blocked.elapsed().as_secs_f64();

        let inv_world = 1.0 / comm.size() as f64;
        let grad_norm = (squares[0] as f64).sqrt() * inv_world;
        let scale = (inv_world * clip_factor(self.max_norm, grad_norm)) as f32;
        for g in &mut self.grads {
            *g *= scale;
        }
        self.pending = true;
        Ok(SyncStats {
            grad_norm,
            sync_seconds: started.elapsed().as_secs_f64() - backward_seconds,
            comm_seconds,
            // Scaled above: the host update reads them as they are.
            grad_scale: 1.0,
        })
    }

    /// Adds a micro-batch's gradients into the host's f32 sum of the step (the buffer the
    /// reduce-scatter sends): on a GPU, accumulation over micro-batches then needs no f32
    /// gradient-sized buffer on the device, only one micro-batch's bf16 gradients.
    pub fn accumulate<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        mut grads: GradientsParams,
    ) -> Result<()> {
        let FlatGrads { parts, shapes } = flatten::<B, M>(model, &mut grads);
        let same = shapes.len() == self.layout.0.len()
            && shapes.iter().zip(&self.layout.0).all(|((_, a), b)| a == b);
        if !same {
            bail!("the trainable parameters changed shape after the sharded optimizer was built");
        }
        let mut offset = 0;
        for part in parts {
            let values = download(part)?;
            let sum = &mut self.flat[offset..offset + values.len()];
            match self.summing {
                true => sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v),
                false => sum.copy_from_slice(&values),
            }
            offset += values.len();
        }
        if !self.summing {
            self.flat[offset..].fill(0.0);
        }
        self.summing = true;
        Ok(())
    }

    /// Forgets the synchronised gradients of a skipped step.
    pub fn skip(&mut self) {
        self.pending = false;
    }

    /// Updates this rank's block with the gradients of the last `sync` and gives every rank the
    /// whole updated model. Returns the model and the seconds spent in the all-gather.
    pub fn apply<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        model: M,
        comm: &dyn Communicator,
    ) -> Result<(M, f64)> {
        ensure!(
            self.pending,
            "an optimizer step without synchronised gradients"
        );
        match self.masters {
            true => ensure!(self.weights_read, "no master weights were read"),
            false => self.read_weights(&model)?,
        }
        let time = self.moments.time + 1;
        for (range, decay) in &self.segments {
            let slices = HostSlices {
                weights: &mut self.weights[range.clone()],
                grads: &self.grads[range.clone()],
                moment_1: &mut self.moments.moment_1[range.clone()],
                moment_2: &mut self.moments.moment_2[range.clone()],
            };
            self.adamw.step_host(lr, time, *decay, slices);
        }
        self.moments.time = time;
        self.pending = false;

        if let Some(mut transport) = self.address.take() {
            let gathered = self.gather_by_address::<B, M>(&mut transport, model, comm);
            self.address = Some(transport);
            return gathered;
        }
        let blocked = Instant::now();
        comm.all_gather(&self.weights, &mut self.flat)?;
        let comm_seconds = blocked.elapsed().as_secs_f64();
        let model = model.map(&mut WriteBack {
            flat: &self.flat,
            offset: 0,
            dtype: None,
        });
        Ok((model, comm_seconds))
    }

    /// The moments of every rank, on rank 0 (`None` elsewhere). A collective.
    pub fn gather_moments(&mut self, comm: &dyn Communicator) -> Result<Option<FlatMoments>> {
        let total = self.layout.len();
        comm.all_gather(&self.moments.moment_1, &mut self.flat)?;
        let moment_1 = comm.is_root().then(|| self.flat[..total].to_vec());
        comm.all_gather(&self.moments.moment_2, &mut self.flat)?;
        Ok(moment_1.map(|moment_1| FlatMoments {
            time: self.moments.time,
            moment_1,
            moment_2: self.flat[..total].to_vec(),
        }))
    }

    /// Where this rank's block lies in the flat vector (without padding).
    pub fn owned(&self) -> Range<usize> {
        self.owned.clone()
    }

    /// This rank's block of the moments (without padding) and the AdamW step count.
    pub fn owned_moments(&self) -> (&[f32], &[f32], usize) {
        let n = self.owned.len();
        let m = &self.moments;
        (&m.moment_1[..n], &m.moment_2[..n], m.time)
    }

    /// This rank's block of the trainable weights (without padding): the f32 masters, or read
    /// from `model` when it holds the weights itself.
    pub fn owned_weights<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
    ) -> Result<&[f32]> {
        if !self.masters {
            self.read_weights(model)?;
        }
        ensure!(self.weights_read, "no master weights were read");
        Ok(&self.weights[..self.owned.len()])
    }

    /// Takes this rank's block of the moments of all trainable parameters.
    pub fn load_moments(&mut self, all: &FlatMoments) -> Result<()> {
        let total = self.layout.len();
        ensure!(
            all.moment_1.len() == total && all.moment_2.len() == total,
            "optimizer state of {} values for {total} trainable values",
            all.moment_1.len()
        );
        let n = self.owned.len();
        let mut mine = FlatMoments::zeros(self.block);
        mine.time = all.time;
        mine.moment_1[..n].copy_from_slice(&all.moment_1[self.owned.clone()]);
        mine.moment_2[..n].copy_from_slice(&all.moment_2[self.owned.clone()]);
        self.moments = mine;
        Ok(())
    }
}

/// All trainable weights of `model` as one flat f32 vector in visit order.
pub fn read_trainable<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Result<Vec<f32>> {
    let n = Layout::of::<B, M>(model).len();
    let mut out = vec![0.0; n];
    let mut read = ReadBlock {
        owned: 0..n,
        offset: 0,
        out: &mut out,
        error: None,
    };
    model.visit(&mut read);
    match read.error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `model` with its trainable weights replaced by `flat` (visit order), each in its own dtype
/// and keeping its id.
pub fn write_trainable<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    flat: &[f32],
) -> Result<M> {
    let n = Layout::of::<B, M>(&model).len();
    ensure!(
        flat.len() == n,
        "{} trainable values for a model that trains {n}",
        flat.len()
    );
    Ok(model.map(&mut WriteBack {
        flat,
        offset: 0,
        dtype: None,
    }))
}

/// Copies the part of the trainable weights in `owned` to the host, slicing on the device so
/// that only this rank's block crosses.
struct ReadBlock<'a> {
    owned: Range<usize>,
    offset: usize,
    out: &'a mut [f32],
    error: Option<anyhow::Error>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ReadBlock<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let n: usize = value.dims().iter().product();
        let start = self.offset;
        self.offset += n;
        let (lo, hi) = (start.max(self.owned.start), (start + n).min(self.owned.end));
        if lo >= hi || self.error.is_some() {
            return;
        }
        let part = value.inner().reshape([n]).narrow(0, lo - start, hi - lo);
        match download(part) {
            Ok(values) => {
                let at = lo - self.owned.start;
                self.out[at..at + values.len()].copy_from_slice(&values);
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// Replaces every trainable weight with its slice of the gathered flat vector, keeping the
/// parameter's id (which keys checkpoints) and its gradient requirement.
struct WriteBack<'a> {
    flat: &'a [f32],
    offset: usize,
    /// The dtype of the new weights; `None`: each weight's own.
    dtype: Option<DType>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for WriteBack<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let values = self.flat[self.offset..self.offset + n].to_vec();
        self.offset += n;
        let data = TensorData::new(values, dims);
        let dtype = self.dtype.unwrap_or(tensor.dtype());
        // Made in f32 and cast as `precision::cast_params` casts, so a resumed run's bf16
        // weights (cast from the checkpoint's masters) are bit for bit those of this path.
        let inner = Tensor::<B::InnerBackend, D>::from_data(data, (&tensor.device(), DType::F32));
        let inner = cast(inner, dtype);
        let updated = Tensor::from_inner(inner).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}
