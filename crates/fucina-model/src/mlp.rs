//! SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases.

use crate::lora::{project, Lora};
use crate::{attention::linear, config::LlamaConfig, fused};
use burn::nn::Linear;
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    pub gate_lora: Option<Lora<B>>,
    pub up_lora: Option<Lora<B>>,
    pub down_lora: Option<Lora<B>>,
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
            gate_lora: None,
            up_lora: None,
            down_lora: None,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = project(&self.gate_proj, &self.gate_lora, x.clone());
        let up = project(&self.up_proj, &self.up_lora, x);
        project(&self.down_proj, &self.down_lora, fused::swiglu(gate, up))
    }
}
