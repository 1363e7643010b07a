//! Rotary position embeddings in Hugging Face's rotate-half convention: dimension i is paired
//! with i + head_dim/2 (not with its neighbour, as in the original RoFormer layout).

use crate::config::RopeScaling;
use crate::documents::Span;
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// [max_positions, head_dim]; constants, not parameters, so they are not saved.
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

/// Each pair's rotation speed θ^(-2i/head_dim), in f64, adjusted by `scaling` if given.
pub fn inv_freqs(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Vec<f64> {
    let base = (0..head_dim / 2).map(|i| theta.powf(-(2.0 * i as f64) / head_dim as f64));
    match scaling {
        None => base.collect(),
        Some(&RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let original = original_max_position_embeddings as f64;
            base.map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < original / high_freq_factor {
                    f
                } else if wavelen > original / low_freq_factor {
                    f / factor
                } else {
                    // 0 at the low-frequency end of the ramp, 1 at the high-frequency end.
                    let smooth = (original / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect()
        }
    }
}

/// The angle table [max_positions, head_dim], computed in f64 on the host so every backend
/// starts from identical values.
pub fn rope_angles(
    max_positions: usize,
    head_dim: usize,
    theta: f64,
    scaling: Option<&RopeScaling>,
) -> Vec<f64> {
    let freqs = inv_freqs(head_dim, theta, scaling);
    let mut angles = Vec::with_capacity(max_positions * head_dim);
    for pos in 0..max_positions {
        for j in 0..head_dim {
            angles.push(pos as f64 * freqs[j % freqs.len()]);
        }
    }
    angles
}

impl<B: Backend> Rope<B> {
    pub fn new(
        max_positions: usize,
        head_dim: usize,
        theta: f64,
        scaling: Option<&RopeScaling>,
        device: &B::Device,
    ) -> Self {
        let angles = rope_angles(max_positions, head_dim, theta, scaling);
        let half = head_dim / 2;
        let table = |f: &dyn Fn(usize, f64) -> f64| {
            let values: Vec<f32> = (angles.iter().enumerate())
                .map(|(i, &a)| f(i % head_dim, a) as f32)
                .collect();
            Tensor::from_data(TensorData::new(values, [max_positions, head_dim]), device)
        };
        Self {
            cos: table(&|_, a| a.cos()),
            // rotate_half(x)·sin = swap_halves(x)·(−sin | +sin): the sign lives in the table,
            // so applying it needs no negation pass.
            sin: table(&|j, a| if j < half { -a.sin() } else { a.sin() }),
        }
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// `x`: [batch, seq, heads, head_dim] (the projection's own layout), positions
    /// `start..start+seq`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        self.apply_scaled(x, start, 1.0)
    }

    /// `apply` or `apply_at` as `span` says, with the result multiplied by `scale`.
    pub fn apply_in(&self, x: Tensor<B, 4>, span: Span<B>, scale: f64) -> Tensor<B, 4> {
        match span {
            Span::From(start) => self.apply_scaled(x, start, scale),
            Span::Packed(docs) => self.apply_at(x, docs.positions(), scale),
        }
    }

    /// `apply_scaled` with each token at its own position: `positions` [batch·seq].
    pub fn apply_at(
        &self,
        x: Tensor<B, 4>,
        positions: Tensor<B, 1, Int>,
        scale: f64,
    ) -> Tensor<B, 4> {
        let [batch, seq, heads, head_dim] = x.dims();
        let dtype = x.dtype();
        let table = |t: &Tensor<B, 2>| {
            let rows = t.clone().select(0, positions.clone()).mul_scalar(scale);
            let rows = rows
                .reshape([batch, seq, 1, head_dim])
                .expand([batch, seq, heads, head_dim]);
            crate::fused::cast(rows, dtype)
        };
        x.clone() * table(&self.cos) + swap_halves(x) * table(&self.sin)
    }

    /// `apply`, with the result multiplied by `scale` at no extra cost.
    pub fn apply_scaled(&self, x: Tensor<B, 4>, start: usize, scale: f64) -> Tensor<B, 4> {
        let [batch, seq, heads, head_dim] = x.dims();
        let row = seq * heads * head_dim;
        // Each table becomes one row shared by every sequence of the batch: the CPU backend
        // multiplies that broadcast with SIMD, where a [seq, head_dim] table broadcast over
        // heads would go element by element through a strided iterator.
        let tile = |t: &Tensor<B, 2>| {
            t.clone()
                .narrow(0, start, seq)
                .unsqueeze_dim::<3>(1)
                .expand([seq, heads, head_dim])
                .reshape([1, row])
                .mul_scalar(scale)
        };
        // The tables are f32; the rotation runs in the dtype of q and k, as in Hugging
        // Face's apply_rotary_pos_emb.
        let dtype = x.dtype();
        let tile = |t: &Tensor<B, 2>| crate::fused::cast(tile(t), dtype);
        let rotated = x.clone().reshape([batch, row]) * tile(&self.cos)
            + swap_halves(x).reshape([batch, row]) * tile(&self.sin);
        rotated.reshape([batch, seq, heads, head_dim])
    }
}

/// Each head's two halves exchanged: the rotation's partner of every element.
fn swap_halves<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, seq, heads, head_dim] = x.dims();
    let half = head_dim / 2;
    let pairs = x.reshape([batch * seq * heads, 2, half]);
    let swapped = Tensor::cat(
        vec![pairs.clone().narrow(1, 1, 1), pairs.narrow(1, 0, 1)],
        1,
    );
    swapped.reshape([batch, seq, heads, head_dim])
}
