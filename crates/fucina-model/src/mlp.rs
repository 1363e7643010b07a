//! SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases.

use crate::{attention::linear, config::LlamaConfig};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(config: &LlamaConfig, device: &B::Device) -> Self {
        let (h, f, std) = (
            config.hidden_size,
            config.intermediate_size,
            config.initializer_range,
        );
        Self {
            gate_proj: linear(h, f, std, device),
            up_proj: linear(h, f, std, device),
            down_proj: linear(f, h, std, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
