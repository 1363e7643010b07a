//! The head (final norm, lm_head) and the loss over a chunk of rows at a time, so that at most
//! `train.logits_chunk_mb` of f32 logits are alive: a 128k vocabulary (Llama 3, EuroLLM) at
//! 8 × 4,096 tokens is 16 GiB of f32 logits, and the log-softmax and its gradient as much again.
//! Each chunk is a graph of its own with its rows of the last block's output as a leaf (as the
//! stages of block checkpointing); the gradient of that output, gathered chunk by chunk, then
//! goes back through the blocks. Nothing is computed twice.

use crate::checkpointing::add_grads;
use crate::loss::tokens_to_tensor;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_data::Batch;
use fucina_model::{fused, Llama};

/// Per target of a micro-batch part: the token, and the weight of its −log p in the loss.
pub struct RowLoss {
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
}

impl RowLoss {
    /// The weights `loss::logits_loss` gives the targets of `batch` (the masked sum times
    /// `scale`, or the mean), each times `factor`.
    pub fn of(batch: &Batch, scale: f64, factor: f64) -> Self {
        let n = batch.targets.len();
        let weights = match &batch.mask {
            Some(mask) => mask
                .iter()
                .map(|&m| (m as f64 * scale * factor) as f32)
                .collect(),
            None => vec![(factor / n.max(1) as f64) as f32; n],
        };
        RowLoss {
            targets: batch.targets.clone(),
            weights,
        }
    }
}

/// Rows per chunk: all whose f32 logits fit in `max_bytes` (one at least); 0 never chunks.
pub fn chunk_rows(vocab: usize, max_bytes: usize) -> usize {
    match max_bytes {
        0 => usize::MAX,
        _ => (max_bytes / (4 * vocab.max(1))).max(1),
    }
}

/// The head's step on `x` [rows, seq, hidden], the last block's output as a tensor of no
/// graph: ∂loss/∂x and the head's gradients, with all logits at once.
pub fn whole<B: AutodiffBackend>(
    model: &Llama<B>,
    x: Tensor<B::InnerBackend, 3>,
    loss_of: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 1>,
) -> (Tensor<B::InnerBackend, 3>, GradientsParams) {
    let mut grads = GradientsParams::new();
    let last = Tensor::<B, 3>::from_inner(x).require_grad();
    let mut backward = loss_of(model.logits_of(last.clone())).backward();
    let grad = last
        .grad(&backward)
        .expect("the loss depends on the last block");
    add_grads::<B, _>(&mut grads, &mut backward, model);
    (grad, grads)
}

/// As `whole`, `chunk` rows of `x` flattened to [rows·seq, hidden] at a time, for the loss
/// Σ weights ⊙ −log p(targets); also returns that loss.
pub fn chunked<B: AutodiffBackend>(
    model: &Llama<B>,
    x: Tensor<B::InnerBackend, 3>,
    loss: &RowLoss,
    chunk: usize,
) -> (f64, Tensor<B::InnerBackend, 3>, GradientsParams) {
    let [batch, seq, hidden] = x.dims();
    let rows = batch * seq;
    let device = x.device();
    let x = x.reshape([rows, hidden]);
    let mut grads = GradientsParams::new();
    let mut parts = Vec::with_capacity(rows.div_ceil(chunk));
    let mut total = 0.0;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let leaf = Tensor::<B, 2>::from_inner(x.clone().narrow(0, start, n)).require_grad();
        let targets =
            tokens_to_tensor::<B>(&loss.targets[start..start + n], 1, &device).reshape([n]);
        let weights = loss.weights[start..start + n].to_vec();
        let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
        let nll = fused::nll(model.logits_rows(leaf.clone()), targets);
        let chunk_loss = (nll * weights).sum();
        total += chunk_loss.clone().into_scalar().elem::<f64>();
        let mut backward = chunk_loss.backward();
        parts.push(leaf.grad(&backward).expect("the loss depends on its rows"));
        add_grads::<B, _>(&mut grads, &mut backward, model);
    }
    let grad = Tensor::cat(parts, 0).reshape([batch, seq, hidden]);
    (total, grad, grads)
}
