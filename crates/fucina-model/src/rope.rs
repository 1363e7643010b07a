//! Rotary position embeddings in Hugging Face's rotate-half convention: dimension i is paired
//! with i + head_dim/2 (not with its neighbour, as in the original RoFormer layout).

use burn::prelude::*;

#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// [max_positions, head_dim]; constants, not parameters, so they are not saved.
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

/// The angle table, computed in f64 on the host so every backend starts from identical values.
pub fn rope_angles(max_positions: usize, head_dim: usize, theta: f64) -> Vec<f64> {
    let half = head_dim / 2;
    let mut angles = Vec::with_capacity(max_positions * head_dim);
    for pos in 0..max_positions {
        for j in 0..head_dim {
            let i = j % half;
            let inv_freq = theta.powf(-(2.0 * i as f64) / head_dim as f64);
            angles.push(pos as f64 * inv_freq);
        }
    }
    angles
}

impl<B: Backend> Rope<B> {
    pub fn new(max_positions: usize, head_dim: usize, theta: f64, device: &B::Device) -> Self {
        let angles = rope_angles(max_positions, head_dim, theta);
        let table = |f: fn(f64) -> f64| {
            let values: Vec<f32> = angles.iter().map(|&a| f(a) as f32).collect();
            Tensor::from_data(TensorData::new(values, [max_positions, head_dim]), device)
        };
        Self {
            cos: table(f64::cos),
            sin: table(f64::sin),
        }
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// `x`: [batch, heads, seq, head_dim], positions `start..start+seq`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let [_, _, seq, head_dim] = x.dims();
        let half = head_dim / 2;
        let cos = self.cos.clone().narrow(0, start, seq).unsqueeze::<4>();
        let sin = self.sin.clone().narrow(0, start, seq).unsqueeze::<4>();
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}
