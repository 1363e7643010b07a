//! burn's own operations for what `fused` does in one kernel: used on every backend but Flex,
//! and by the tests as the independent computation the fused kernels must match.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, silu, softmax};

pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let groups = q.dims()[2] / k.dims()[2];
    // [batch, heads, seq, dim], each key/value head repeated for the query heads it serves.
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
    let (q, k, v) = (
        q.swap_dims(1, 2),
        repeat(k.swap_dims(1, 2)),
        repeat(v.swap_dims(1, 2)),
    );
    causal_softmax(q.matmul(k.swap_dims(2, 3)))
        .matmul(v)
        .swap_dims(1, 2)
}

pub fn causal_softmax<B: Backend, const D: usize>(scores: Tensor<B, D>) -> Tensor<B, D> {
    let dims = scores.dims();
    let (q, k) = (dims[D - 2], dims[D - 1]);
    let device = scores.device();
    // One additive row shared by every matrix, which backends broadcast without expanding.
    let mask: Vec<f32> = (0..q * k)
        .map(|i| match i % k > i / k + (k - q) {
            true => f32::NEG_INFINITY,
            false => 0.0,
        })
        .collect();
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [1, q * k]), &device);
    let rows = dims.iter().take(D - 2).product::<usize>();
    let masked = scores.reshape([rows, q * k]) + mask;
    softmax(masked.reshape(dims), D - 1)
}

pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    silu(gate) * up
}

pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    // As burn's `RmsNorm`: the mean square in f32 whatever the working precision.
    let dtype = x.dtype();
    let rms = (x
        .clone()
        .cast(burn::tensor::DType::F32)
        .square()
        .mean_dim(D - 1)
        + eps)
        .sqrt();
    (x / rms.cast(dtype)) * gamma.unsqueeze()
}

pub fn nll<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let rows = logits.dims()[0];
    let picked = log_softmax(logits, 1).gather(1, targets.reshape([rows, 1]));
    picked.reshape([rows]).neg()
}
