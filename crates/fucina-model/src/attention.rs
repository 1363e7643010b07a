//! Causal self-attention with grouped-query heads (Llama, Mistral).

use crate::lora::{project, Lora};
use crate::{config::LlamaConfig, documents::Span, fused, rope::Rope};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    /// LoRA adapters on the projections (see `lora`); `None` in a plain model.
    pub q_lora: Option<Lora<B>>,
    pub k_lora: Option<Lora<B>>,
    pub v_lora: Option<Lora<B>>,
    pub o_lora: Option<Lora<B>>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std })
        .init(device)
}

impl<B: Backend> Attention<B> {
    pub fn new(config: &LlamaConfig, device: &B::Device) -> Self {
        let (h, hd, std) = (
            config.hidden_size,
            config.head_dim(),
            config.initializer_range,
        );
        let (nh, nkv) = (config.num_attention_heads, config.kv_heads());
        Self {
            q_proj: linear(h, nh * hd, std, device),
            k_proj: linear(h, nkv * hd, std, device),
            v_proj: linear(h, nkv * hd, std, device),
            o_proj: linear(nh * hd, h, std, device),
            q_lora: None,
            k_lora: None,
            v_lora: None,
            o_lora: None,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
        }
    }

    /// Query heads, key/value heads and the width of each.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.n_heads, self.n_kv_heads, self.head_dim)
    }

    /// `x`: [batch, seq, hidden], its tokens where `span` says.
    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope<B>, span: Span<B>) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let heads = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, self.head_dim]);
        let q = project(&self.q_proj, &self.q_lora, x.clone());
        let k = project(&self.k_proj, &self.k_lora, x.clone());
        let v = project(&self.v_proj, &self.v_lora, x);
        // The 1/√d score scale rides on q's rotation tables: no pass over q or the scores.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let q = rope.apply_in(heads(q, self.n_heads), span, scale);
        let k = rope.apply_in(heads(k, self.n_kv_heads), span, 1.0);
        let v = heads(v, self.n_kv_heads);
        let out = fused::attention(q, k, v, span.documents());
        let out = out.reshape([batch, seq, self.n_heads * self.head_dim]);
        project(&self.o_proj, &self.o_lora, out)
    }
}
