//! Gradient synchronisation: gradients are packed into fusion buckets, copied to the host and
//! averaged over ranks (copying bucket k+1 while bucket k is reduced), clipped by their
//! **global** norm (burn's own clipping works tensor by tensor), and handed back to burn.

use anyhow::{anyhow, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use fucina_dist::{Buckets, Communicator};
use fucina_model::fused::cast;
use std::time::Instant;

/// What a step's synchronisation measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncStats {
    /// Global gradient norm of the averaged gradients, before clipping.
    pub grad_norm: f64,
    /// The whole synchronisation: packing, copies, reductions, clipping, upload.
    pub sync_seconds: f64,
    /// Time blocked in communication that no copy was hiding.
    pub comm_seconds: f64,
}

/// The gradient synchronisation of a run, with the host buffers it reuses from step to step.
pub struct GradSync {
    /// Clip the averaged gradients to this global norm; 0 disables clipping.
    pub max_norm: f64,
    pub bucket_bytes: usize,
    /// Hand the averaged gradients back in f32 (for f32 master weights) rather than in each
    /// parameter's own dtype.
    pub f32_grads: bool,
    buffers: Buckets,
}

impl GradSync {
    pub fn new(max_norm: f64, bucket_bytes: usize) -> Self {
        Self {
            max_norm,
            bucket_bytes,
            f32_grads: false,
            buffers: Buckets::default(),
        }
    }

    /// Averages `grads` over all ranks, clips the average, and returns what the optimizer gets.
    pub fn run<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        grads: GradientsParams,
        comm: &dyn Communicator,
    ) -> Result<(GradientsParams, SyncStats)> {
        sync_and_clip(
            model,
            grads,
            comm,
            self.max_norm,
            self.bucket_bytes,
            self.f32_grads,
            &mut self.buffers,
        )
    }
}

fn sync_and_clip<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    comm: &dyn Communicator,
    max_norm: f64,
    bucket_bytes: usize,
    f32_grads: bool,
    buffers: &mut Buckets,
) -> Result<(GradientsParams, SyncStats)> {
    let started = Instant::now();
    let FlatGrads { parts, shapes } = flatten::<B, M>(model, &mut grads);
    let device = parts.first().map(|t| t.device()).unwrap_or_default();

    let buckets = plan_buckets(&shapes, bucket_bytes / 4);
    let sizes: Vec<usize> = buckets.iter().map(|b| b.len).collect();
    let mut pending: Vec<Option<Tensor<B::InnerBackend, 1>>> =
        parts.into_iter().map(Some).collect();
    let mut failure = None;
    // The downloaded gradients' memory is kept and later receives the averaged values, so
    // no step allocates (and page-faults) fresh gradient-sized buffers.
    let mut hosts: Vec<Vec<f32>> = Vec::with_capacity(pending.len());
    let timing = comm.all_reduce_sum_buckets(buffers, &sizes, &mut |k, host| {
        let mut offset = 0;
        for i in buckets[k].params.clone() {
            let part = pending[i].take().expect("each gradient is packed once");
            match download(part) {
                Ok(values) => {
                    host[offset..offset + values.len()].copy_from_slice(&values);
                    hosts.push(values);
                }
                Err(e) => failure = Some(e),
            }
            offset += shapes[i].1.iter().product::<usize>();
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }

    let inv_world = 1.0 / comm.size() as f64;
    let reduced: Vec<&[f32]> = (0..buffers.len()).map(|k| buffers.reduced(k)).collect();
    let grad_norm = reduced
        .iter()
        .map(|b| sum_of_squares(b))
        .sum::<f64>()
        .sqrt()
        * inv_world;
    let scale = (inv_world * clip_factor(max_norm, grad_norm)) as f32;

    // Each gradient is uploaded from its slice of the reduced bucket, scaled on the way: one
    // pass over the memory (slicing a device tensor instead copied each parameter twice).
    let mut out = GradientsParams::new();
    let mut slices = Vec::with_capacity(shapes.len());
    for (k, bucket) in buckets.iter().enumerate() {
        let mut offset = 0;
        for i in bucket.params.clone() {
            let n: usize = shapes[i].1.iter().product();
            slices.push((k, offset..offset + n));
            offset += n;
        }
    }
    let mut unflatten = Unflatten::<B> {
        grads: &mut out,
        reduced: &reduced,
        hosts: hosts.into_iter(),
        scale,
        f32_grads,
        device,
        places: slices.into_iter().zip(shapes),
    };
    model.visit(&mut unflatten);
    let stats = SyncStats {
        grad_norm,
        sync_seconds: started.elapsed().as_secs_f64(),
        comm_seconds: timing.blocked_seconds,
    };
    Ok((out, stats))
}

struct Bucket {
    params: std::ops::Range<usize>,
    len: usize,
}

/// Consecutive parameters fill a bucket until it would exceed `max_values`; a parameter larger
/// than that gets a bucket of its own.
fn plan_buckets(shapes: &[(ParamId, Vec<usize>)], max_values: usize) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = Vec::new();
    for (i, (_, dims)) in shapes.iter().enumerate() {
        let n: usize = dims.iter().product();
        match buckets.last_mut() {
            Some(b) if b.len + n <= max_values.max(1) => {
                b.params.end = i + 1;
                b.len += n;
            }
            _ => buckets.push(Bucket {
                params: i..i + 1,
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
    reduced: &'a [&'a [f32]],
    /// Each parameter's downloaded gradient, in visit order: the memory the result goes to.
    hosts: std::vec::IntoIter<Vec<f32>>,
    scale: f32,
    f32_grads: bool,
    device: burn::tensor::Device<B::InnerBackend>,
    /// Bucket and range of each parameter, with its id and shape, in visit order.
    places: std::iter::Zip<std::vec::IntoIter<Slice>, std::vec::IntoIter<(ParamId, Vec<usize>)>>,
}

type Slice = (usize, std::ops::Range<usize>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.val().is_require_grad() {
            return;
        }
        let ((bucket, range), (id, dims)) =
            self.places.next().expect("same parameters on both visits");
        let mut values = self.hosts.next().expect("one download per parameter");
        for (out, g) in values.iter_mut().zip(&self.reduced[bucket][range]) {
            *out = g * self.scale;
        }
        let dims: [usize; D] = dims.try_into().expect("same rank on both visits");
        let grad = Tensor::from_data(TensorData::new(values, dims), (&self.device, DType::F32));
        let grad = match self.f32_grads {
            true => grad,
            false => cast(grad, param.val().dtype()),
        };
        self.grads.register::<B::InnerBackend, D>(id, grad);
    }
}

/// Σx² in f64, summed in f32 lanes the compiler can vectorise (a plain f32 fold cannot be).
pub(crate) fn sum_of_squares(values: &[f32]) -> f64 {
    values
        .chunks(1 << 14)
        .map(|chunk| {
            let mut lanes = [0f32; 16];
            let mut exact = chunk.chunks_exact(16);
            for group in &mut exact {
                for (lane, v) in lanes.iter_mut().zip(group) {
                    *lane += v * v;
                }
            }
            let tail: f64 = exact
                .remainder()
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
        })
        .sum()
}
