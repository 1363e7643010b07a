//! burn's own operations for what `fused` does in one kernel: used on every backend but Flex
//! (and on Flex for bf16 tensors), and by the tests as the independent computation the fused
//! kernels must match. Whatever the dtype of their inputs, softmax, log-softmax and the RMS
//! statistics are computed in f32, as PyTorch's autocast does: their exponentials and sums of
//! squares lose too much in bf16's 8-bit mantissa.

use super::{cast, mask};
use crate::documents::Documents;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::DType;

/// With `docs`, query i sees keys `start(i)..=i` only (see `Documents`).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    docs: Option<&Documents<B>>,
) -> Tensor<B, 4> {
    let (q, k, v) = heads_first(q, k, v);
    let dtype = q.dtype();
    // Scores and probabilities in f32; the products with q, k and v in the inputs' dtype.
    let scores = cast(q.matmul(k.swap_dims(2, 3)), DType::F32);
    let probs = match docs {
        None => causal_softmax(scores),
        Some(docs) => softmax(scores + document_mask(docs), 3),
    };
    cast(probs, dtype).matmul(v).swap_dims(1, 2)
}

/// q, k, v [batch, seq, heads, dim] as [batch, heads, seq, dim], each key/value head repeated
/// for the query heads it serves.
pub(crate) fn heads_first<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let groups = q.dims()[2] / k.dims()[2];
    let repeat = |t: Tensor<B, 4>| {
        let [batch, kv, seq, dim] = t.dims();
        match groups {
            1 => t,
            _ => t
                .unsqueeze_dim::<5>(2)
                .expand([batch, kv, groups, seq, dim])
                .reshape([batch, kv * groups, seq, dim]),
        }
    };
    (
        q.swap_dims(1, 2),
        repeat(k.swap_dims(1, 2)),
        repeat(v.swap_dims(1, 2)),
    )
}

/// [batch, 1, seq, seq] in f32: 0 where query i sees key j (start(i) ≤ j ≤ i), −∞ elsewhere;
/// built on the device from the starts, broadcast over heads.
pub fn document_mask<B: Backend>(docs: &Documents<B>) -> Tensor<B, 4> {
    let (batch, seq) = docs.shape();
    let shape = [batch, 1, seq, seq];
    let starts = docs.starts_tensor();
    let device = starts.device();
    let index = || Tensor::<B, 1, Int>::arange(0..seq as i64, &device).float();
    let keys = index().reshape([1, 1, 1, seq]).expand(shape);
    let queries = index().reshape([1, 1, seq, 1]).expand(shape);
    let starts = starts.reshape([batch, 1, seq, 1]).expand(shape);
    let hidden = (keys.clone().greater(queries)).bool_or(keys.lower(starts));
    Tensor::<B, 4>::zeros(shape, (&device, DType::F32)).mask_fill(hidden, f32::NEG_INFINITY)
}

/// In f32, returned in the dtype of `scores`.
pub fn causal_softmax<B: Backend, const D: usize>(scores: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = scores.dtype();
    let scores = cast(scores, DType::F32);
    let dims = scores.dims();
    let (q, k) = (dims[D - 2], dims[D - 1]);
    let mask = mask::causal::<B>(q, k, &scores.device());
    let rows = dims.iter().take(D - 2).product::<usize>();
    let masked = scores.reshape([rows, q * k]) + mask;
    cast(softmax(masked.reshape(dims), D - 1), dtype)
}

pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    silu(gate) * up
}

pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    // As Hugging Face's LlamaRMSNorm: normalised in f32, then cast back and scaled by gamma.
    let dtype = x.dtype();
    let x = cast(x, DType::F32);
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    cast(x / rms, dtype) * cast(gamma, dtype).unsqueeze()
}

/// In f32 whatever the dtype of `logits`.
pub fn nll<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let rows = logits.dims()[0];
    let logits = cast(logits, DType::F32);
    let picked = log_softmax(logits, 1).gather(1, targets.reshape([rows, 1]));
    picked.reshape([rows]).neg()
}
