//! Gradients as one flat buffer: averaged over ranks in a single collective per step and
//! clipped by their **global** norm (burn's own clipping works tensor by tensor).

use anyhow::Result;
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_dist::Communicator;

/// What a step's synchronisation measured.
#[derive(Debug, Clone, Copy)]
pub struct SyncStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Seconds spent in the collective itself.
    pub comm_seconds: f64,
}

/// Averages `grads` over all ranks, clips the result to `max_norm` (0 = no clipping) and returns
/// the gradients to hand to the optimizer.
pub fn sync_and_clip<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    comm: &dyn Communicator,
    max_norm: f64,
) -> Result<(GradientsParams, SyncStats)> {
    let mut flatten = Flatten::<B> {
        grads: &mut grads,
        parts: Vec::new(),
        shapes: Vec::new(),
    };
    model.visit(&mut flatten);
    let Flatten { parts, shapes, .. } = flatten;
    let device = parts.first().map(|t| t.device()).unwrap_or_default();
    let flat = Tensor::cat(parts, 0);
    let mut host = flat
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("gradient download: {e:?}"))?;

    let started = std::time::Instant::now();
    comm.all_reduce_sum(&mut host)?;
    let comm_seconds = started.elapsed().as_secs_f64();

    let inv_world = 1.0 / comm.size() as f32;
    let sum_sq: f64 = host
        .iter()
        .map(|&g| (g * inv_world) as f64 * (g * inv_world) as f64)
        .sum();
    let grad_norm = sum_sq.sqrt();
    // PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) only when that is below 1.
    let clip = if max_norm > 0.0 && grad_norm.is_finite() {
        (max_norm / (grad_norm + 1e-6)).min(1.0) as f32
    } else {
        1.0
    };
    let scale = inv_world * clip;
    if scale != 1.0 {
        host.iter_mut().for_each(|g| *g *= scale);
    }

    let len = host.len();
    let flat = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(host, [len]), &device);
    let mut out = GradientsParams::new();
    let mut unflatten = Unflatten::<B> {
        grads: &mut out,
        flat,
        offset: 0,
        shapes: shapes.into_iter(),
    };
    model.visit(&mut unflatten);
    Ok((
        out,
        SyncStats {
            grad_norm,
            comm_seconds,
        },
    ))
}

struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    shapes: Vec<(ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
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
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
    shapes: std::vec::IntoIter<(ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
        let (id, dims) = self.shapes.next().expect("same parameters on both visits");
        let n: usize = dims.iter().product();
        let dims: [usize; D] = dims.try_into().expect("same rank on both visits");
        let grad = self.flat.clone().narrow(0, self.offset, n).reshape(dims);
        self.offset += n;
        self.grads.register::<B::InnerBackend, D>(id, grad);
    }
}
