//! Gradient synchronisation: gradients are packed into fusion buckets, copied to the host and
//! summed over ranks (copying bucket k+1 while bucket k is reduced), their **global** norm taken
//! for clipping (burn's own clipping works tensor by tensor), and handed back to burn with the
//! factor the optimizer takes them times (1/N and the clip, folded into AdamW's constants). One
//! process has nothing to sum and keeps them on the device.

use anyhow::{anyhow, Result};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
pub(crate) use fucina_dist::sum_of_squares;
use fucina_dist::{BucketTiming, Buckets, Communicator};
use fucina_model::fused::cast;
use rayon::prelude::*;
use std::time::Instant;

mod address;

pub(crate) use address::bind_device_on_thread;
pub use address::AddressTransport;

use crate::staged_grads::StagedGrads;
use crate::stages::Stages;
use fucina_model::Llama;

/// What a step's synchronisation measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncStats {
    /// Global gradient norm of the averaged gradients, before clipping.
    pub grad_norm: f64,
    /// The whole synchronisation: packing, copies, reductions, clipping, upload.
    pub sync_seconds: f64,
    /// Time blocked in communication that no copy was hiding.
    pub comm_seconds: f64,
    /// What the optimizer takes the returned gradients times: 1/N and the clip factor, which
    /// AdamW folds into its constants (`AdamW::set_grad_scale`) rather than a pass over them.
    pub grad_scale: f64,
}

/// Where the gradients are packed into buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// One download per gradient, packed on the host: on the CPU backend a download hands
    /// over the tensor's memory, and a bucket of one gradient is sent from it as it is.
    Host,
    /// One concatenation per bucket on the device, then one copy of the bucket (GPU backends:
    /// a transfer per gradient would pay a launch and a synchronisation each).
    Device,
    /// One concatenation per bucket on the device, whose memory the transport takes by
    /// address (`mpi-device`, `nccl`): no copy at all on a GPU.
    Address,
}

/// The gradient synchronisation of a run, with the host buffers it reuses from step to step.
pub struct GradSync {
    /// Clip the averaged gradients to this global norm; 0 disables clipping.
    pub max_norm: f64,
    pub bucket_bytes: usize,
    /// Hand the averaged gradients back in f32 (for f32 master weights) rather than in each
    /// parameter's own dtype.
    pub f32_grads: bool,
    pub packing: Packing,
    /// With `Packing::Address`: which transport takes the buckets.
    pub address: AddressTransport,
    buffers: Buckets,
    /// Host memory the address path reuses for its received buckets (CPU backends).
    spares: Vec<Option<Vec<f32>>>,
}

impl GradSync {
    pub fn new(max_norm: f64, bucket_bytes: usize) -> Self {
        Self {
            max_norm,
            bucket_bytes,
            f32_grads: false,
            packing: Packing::Host,
            address: AddressTransport::default(),
            buffers: Buckets::default(),
            spares: Vec::new(),
        }
    }

    /// Averages `grads` over all ranks, clips the average, and returns what the optimizer gets.
    pub fn run<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        mut grads: GradientsParams,
        comm: &dyn Communicator,
    ) -> Result<(GradientsParams, SyncStats)> {
        let started = Instant::now();
        let FlatGrads { parts, shapes } = flatten::<B, M>(model, &mut grads);
        let device = parts.first().map(|t| t.device()).unwrap_or_default();
        let mut pending: Vec<Option<Tensor<B::InnerBackend, 1>>> =
            parts.into_iter().map(Some).collect();
        let mut take = |i: usize| pending[i].take().expect("each gradient is packed once");
        self.reduce::<B, M>(model, shapes, device, &mut take, comm, started)
    }

    /// As `run`, for the step's last micro-batch with its backward still to run: filling a
    /// bucket runs the backward's stages until its gradients are complete, so that the
    /// buckets filled before are reduced meanwhile. `earlier`: the gradients of the step's
    /// other micro-batches, added to these. The time of the backward is not counted as sync.
    pub fn run_staged<B: AutodiffBackend>(
        &mut self,
        model: &Llama<B>,
        stages: Stages<B>,
        earlier: Option<GradientsParams>,
        comm: &dyn Communicator,
    ) -> Result<(GradientsParams, SyncStats)> {
        let started = Instant::now();
        let shapes = trainable_shapes::<B, _>(model);
        let lens: Vec<usize> = shapes.iter().map(|(_, d)| d.iter().product()).collect();
        let mut staged = StagedGrads::new(model, stages, earlier, lens);
        let device = staged.device();
        let mut take = |i: usize| staged.take(i);
        let (grads, mut stats) =
            self.reduce::<B, _>(model, shapes, device, &mut take, comm, started)?;
        stats.sync_seconds -= staged.backward_seconds;
        Ok((grads, stats))
    }

    /// Reduces the gradients `take(i)` gives for each trainable parameter i (visit order) of
    /// `model`, whose ids and shapes are `shapes`.
    fn reduce<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        shapes: Vec<(ParamId, Vec<usize>)>,
        device: burn::tensor::Device<B::InnerBackend>,
        take: &mut dyn FnMut(usize) -> Tensor<B::InnerBackend, 1>,
        comm: &dyn Communicator,
        started: Instant,
    ) -> Result<(GradientsParams, SyncStats)> {
        if comm.size() == 1 {
            let parts = (0..shapes.len()).map(&mut *take).collect();
            let (ready, grad_norm) = self.on_the_device(parts)?;
            let stats = SyncStats {
                grad_norm,
                sync_seconds: started.elapsed().as_secs_f64(),
                comm_seconds: 0.0,
                grad_scale: clip_factor(self.max_norm, grad_norm),
            };
            return Ok((self.unflatten::<B, M>(model, ready, shapes, device), stats));
        }
        let lens: Vec<usize> = shapes.iter().map(|(_, d)| d.iter().product()).collect();
        // The backward produces the last layers' gradients first; the buckets follow it, as
        // DDP's do, so that the first bucket is the first one complete.
        let order: Vec<usize> = (0..lens.len()).rev().collect();
        let max_values = self.bucket_bytes / 4;
        let buckets = plan_buckets(&order, &lens, max_values, alone(self.packing, max_values));
        let sizes: Vec<usize> = buckets.iter().map(|b| b.len).collect();
        if self.packing == Packing::Address {
            return self
                .reduce_by_address::<B, M>(model, shapes, buckets, device, take, comm, started);
        }

        // Memory a fill swapped out of a bucket: it replaces the reduced values taken out.
        let mut spares: Vec<Option<Vec<f32>>> = vec![None; buckets.len()];
        // Downloaded gradients of shared buckets: the memory their averaged values go to.
        let mut hosts: Vec<Vec<f32>> = vec![Vec::new(); lens.len()];
        let mut failure = None;
        let packing = self.packing;
        let timing = comm.all_reduce_sum_buckets(&mut self.buffers, &sizes, &mut |k, buf| {
            let params = &buckets[k].params;
            // A bucket sent as one download hands that memory to MPI and keeps the old buffer.
            let whole = match (packing, &params[..]) {
                (Packing::Device, &[i]) => Some(cast(take(i), DType::F32)),
                (Packing::Device, _) => {
                    let parts: Vec<_> = params.iter().map(|&i| cast(take(i), DType::F32)).collect();
                    Some(Tensor::cat(parts, 0))
                }
                (Packing::Host, &[i]) => Some(take(i)),
                (Packing::Host, _) => None,
                (Packing::Address, _) => unreachable!("reduced by reduce_by_address"),
            };
            let result = match whole {
                Some(part) => {
                    download(part).map(|values| spares[k] = Some(std::mem::replace(buf, values)))
                }
                None => {
                    let mut offset = 0;
                    params.iter().try_for_each(|&i| {
                        let values = download(take(i))?;
                        buf[offset..offset + values.len()].copy_from_slice(&values);
                        offset += values.len();
                        hosts[i] = values;
                        Ok(())
                    })
                }
            };
            if let Err(e) = result {
                failure.get_or_insert(e);
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }

        let mut ready: Vec<Option<Ready<B::InnerBackend>>> =
            (0..lens.len()).map(|_| None).collect();
        for (k, bucket) in buckets.iter().enumerate() {
            let whole = spares[k]
                .take()
                .map(|spare| self.buffers.take_reduced(k, spare));
            match (whole, &bucket.params[..]) {
                (Some(values), &[i]) if packing == Packing::Host => {
                    ready[i] = Some(Ready::Host(values));
                }
                (Some(values), params) => {
                    let flat = Tensor::<B::InnerBackend, 1>::from_data(
                        TensorData::new(values, [bucket.len]),
                        (&device, DType::F32),
                    );
                    let mut offset = 0;
                    for &i in params {
                        let part = flat.clone().slice(offset..offset + lens[i]);
                        ready[i] = Some(Ready::Device(part));
                        offset += lens[i];
                    }
                }
                (None, params) => {
                    let reduced = self.buffers.reduced(k);
                    let mut offset = 0;
                    for &i in params {
                        let mut values = std::mem::take(&mut hosts[i]);
                        copy_into(&mut values, &reduced[offset..offset + lens[i]]);
                        ready[i] = Some(Ready::Host(values));
                        offset += lens[i];
                    }
                }
            }
        }
        let stats = self.averaged(timing, comm.size(), started);
        Ok((self.unflatten::<B, M>(model, ready, shapes, device), stats))
    }

    /// The stats of a sum over `world` ranks whose reduced values' Σx² is in `timing`: the
    /// norm of their average, and the factor (1/N and the clip) the optimizer takes them by.
    fn averaged(&self, timing: BucketTiming, world: usize, started: Instant) -> SyncStats {
        let inv_world = 1.0 / world as f64;
        let grad_norm = timing.sum_of_squares.sqrt() * inv_world;
        SyncStats {
            grad_norm,
            sync_seconds: started.elapsed().as_secs_f64(),
            comm_seconds: timing.blocked_seconds,
            grad_scale: inv_world * clip_factor(self.max_norm, grad_norm),
        }
    }

    /// One process has nothing to average: the norm's squares are summed where the gradients
    /// are and one small copy brings them to the host. (A round trip through host buffers would
    /// cost a GPU two copies of every gradient a step.)
    fn on_the_device<B: Backend>(
        &self,
        parts: Vec<Tensor<B, 1>>,
    ) -> Result<(Vec<Option<Ready<B>>>, f64)> {
        let parts: Vec<Tensor<B, 1>> = match self.f32_grads {
            true => parts.into_iter().map(|p| cast(p, DType::F32)).collect(),
            false => parts,
        };
        let squares: Vec<Tensor<B, 1>> = parts
            .iter()
            .map(|p| cast(p.clone(), DType::F32).powi_scalar(2).sum())
            .collect();
        // Summed in f64 here, as the host path sums its buckets.
        let grad_norm = match squares.is_empty() {
            true => 0.0,
            false => download(Tensor::cat(squares, 0))?
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>()
                .sqrt(),
        };
        let ready = parts.into_iter().map(|p| Some(Ready::Device(p))).collect();
        Ok((ready, grad_norm))
    }

    /// The averaged gradients, handed back to burn under their parameters' ids.
    fn unflatten<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        ready: Vec<Option<Ready<B::InnerBackend>>>,
        shapes: Vec<(ParamId, Vec<usize>)>,
        device: burn::tensor::Device<B::InnerBackend>,
    ) -> GradientsParams {
        let mut out = GradientsParams::new();
        let mut unflatten = Unflatten::<B> {
            grads: &mut out,
            ready: ready.into_iter(),
            f32_grads: self.f32_grads,
            device,
            shapes: shapes.into_iter(),
        };
        model.visit(&mut unflatten);
        out
    }
}

/// An averaged gradient on its way back to burn.
enum Ready<B: Backend> {
    Host(Vec<f32>),
    Device(Tensor<B, 1>),
}

/// Chunks of this many values are copied by one thread of the pool.
const COPY_CHUNK: usize = 1 << 16;

fn copy_into(out: &mut [f32], src: &[f32]) {
    out.par_chunks_mut(COPY_CHUNK)
        .zip(src.par_chunks(COPY_CHUNK))
        .for_each(|(out, src)| out.copy_from_slice(src));
}

struct Bucket {
    /// Indices into the parameters, in the order the bucket holds them.
    params: Vec<usize>,
    len: usize,
}

/// The smallest gradient that is a bucket of its own. A gradient sent from its own memory needs
/// neither the copy into a shared bucket nor the copy back out. Host packing: from 1 MiB up a
/// message's latency is lost in its transfer time. Device packing: from 4 MiB up a transfer's
/// fixed cost (a launch and a synchronisation, ~10-20 µs) is under a tenth of its time over PCIe.
fn alone(packing: Packing, max_values: usize) -> usize {
    max_values.min(match packing {
        Packing::Host => 1 << 18,
        Packing::Device | Packing::Address => 1 << 20,
    })
}

/// The sizes (values) of the buckets `GradSync` makes of gradients of `lens`, in that order.
pub(crate) fn bucket_sizes(lens: &[usize], max_values: usize, packing: Packing) -> Vec<usize> {
    let order: Vec<usize> = (0..lens.len()).collect();
    plan_buckets(&order, lens, max_values, alone(packing, max_values))
        .into_iter()
        .map(|b| b.len)
        .collect()
}

/// Parameters, taken in `order`, fill a bucket until it would exceed `max_values`; a
/// parameter of `alone` values or more gets a bucket of its own.
fn plan_buckets(order: &[usize], lens: &[usize], max_values: usize, alone: usize) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = Vec::new();
    let shared = |n: usize| n < alone.max(1);
    for &i in order {
        let n = lens[i];
        match buckets.last_mut() {
            Some(b) if shared(n) && shared(lens[b.params[0]]) && b.len + n <= max_values.max(1) => {
                b.params.push(i);
                b.len += n;
            }
            _ => buckets.push(Bucket {
                params: vec![i],
                len: n,
            }),
        }
    }
    buckets
}

/// PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) only when that is below 1;
/// `max_norm` 0 disables clipping.
pub(crate) fn clip_factor(max_norm: f64, grad_norm: f64) -> f64 {
    if max_norm > 0.0 && grad_norm.is_finite() {
        (max_norm / (grad_norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

/// The trainable parameters' gradients, each reshaped to one dimension, in visit order, with
/// the id and shape of their parameter. Frozen parameters are left out.
pub(crate) struct FlatGrads<B: AutodiffBackend> {
    pub parts: Vec<Tensor<B::InnerBackend, 1>>,
    pub shapes: Vec<(ParamId, Vec<usize>)>,
}

/// Takes the gradients of `model`'s trainable parameters out of `grads`, in visit order.
pub(crate) fn flatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
) -> FlatGrads<B> {
    let mut flatten = Flatten::<B> {
        grads,
        parts: Vec::new(),
        shapes: Vec::new(),
    };
    model.visit(&mut flatten);
    FlatGrads {
        parts: flatten.parts,
        shapes: flatten.shapes,
    }
}

/// The ids and shapes of `module`'s trainable parameters, in visit order.
pub(crate) fn trainable_shapes<B: AutodiffBackend, M: Module<B>>(
    module: &M,
) -> Vec<(ParamId, Vec<usize>)> {
    struct Shapes(Vec<(ParamId, Vec<usize>)>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0.push((param.id, value.dims().to_vec()));
            }
        }
    }
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}

/// Moves the gradients in `grads` into `done`, flat, at their parameter's visit index among
/// the trainable ones; one already there is added to (a tied embedding's two parts).
pub(crate) fn collect<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
    done: &mut [Option<Tensor<B::InnerBackend, 1>>],
) {
    struct Collect<'a, B: AutodiffBackend> {
        grads: GradientsParams,
        done: &'a mut [Option<Tensor<B::InnerBackend, 1>>],
        index: usize,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if !value.is_require_grad() {
                return;
            }
            let n: usize = value.dims().iter().product();
            if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let grad = grad.reshape([n]);
                let slot = &mut self.done[self.index];
                *slot = Some(match slot.take() {
                    Some(earlier) => earlier + grad,
                    None => grad,
                });
            }
            self.index += 1;
        }
    }
    model.visit(&mut Collect::<B> {
        grads,
        done,
        index: 0,
    });
}

/// One device→host copy, in f32 whatever the backend's float: bf16 runs (cuda/rocm) reduce
/// and update in f32, since the sum of many ranks needs the bits.
pub(crate) fn download<B: Backend>(part: Tensor<B, 1>) -> Result<Vec<f32>> {
    part.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow!("copy to the host: {e:?}"))
}

struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    shapes: Vec<(ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        // Frozen weights (the base under LoRA) are neither sent nor updated.
        if !value.is_require_grad() {
            return;
        }
        let dims = value.dims();
        let n: usize = dims.iter().product();
        // A parameter the loss does not reach has no gradient: it contributes zeros.
        let grad = self
            .grads
            .remove::<B::InnerBackend, D>(param.id)
            .map(|g| g.reshape([n]))
            .unwrap_or_else(|| Tensor::zeros([n], &value.device()));
        self.parts.push(grad);
        self.shapes.push((param.id, dims.to_vec()));
    }
}

struct Unflatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    /// Each trainable parameter's averaged gradient, in visit order.
    ready: std::vec::IntoIter<Option<Ready<B::InnerBackend>>>,
    f32_grads: bool,
    device: burn::tensor::Device<B::InnerBackend>,
    shapes: std::vec::IntoIter<(ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.val().is_require_grad() {
            return;
        }
        let (id, dims) = self.shapes.next().expect("same parameters on both visits");
        let ready = self.ready.next().flatten().expect("every gradient reduced");
        let dims: [usize; D] = dims.try_into().expect("same rank on both visits");
        let grad = match ready {
            Ready::Host(values) => {
                Tensor::from_data(TensorData::new(values, dims), (&self.device, DType::F32))
            }
            Ready::Device(flat) => flat.reshape(dims),
        };
        let grad = match self.f32_grads {
            true => grad,
            false => cast(grad, param.val().dtype()),
        };
        self.grads.register::<B::InnerBackend, D>(id, grad);
    }
}

#[cfg(test)]
mod tests {
    use super::plan_buckets;

    #[test]
    fn large_gradients_travel_alone_and_small_ones_share_buckets_up_to_the_limit() {
        // In backward order: two small, one large, three small, one larger than a bucket.
        let lens = [3, 4, 100, 5, 6, 7, 500];
        let order: Vec<usize> = (0..lens.len()).collect();
        let plan: Vec<Vec<usize>> = plan_buckets(&order, &lens, 12, 50)
            .into_iter()
            .map(|b| b.params)
            .collect();
        assert_eq!(plan, [vec![0, 1], vec![2], vec![3, 4], vec![5], vec![6]]);
        // The threshold is inclusive; a shared bucket may grow past it, up to the bucket size.
        let plan = plan_buckets(&order[..2], &lens, 12, 4);
        assert_eq!(plan.len(), 2);
        let plan = plan_buckets(&[0, 1, 3], &lens, 100, 10);
        assert_eq!(plan.len(), 1);
    }
}
