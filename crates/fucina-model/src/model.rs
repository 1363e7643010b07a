//! The Llama-family decoder. Field names follow Hugging Face's module tree so that checkpoint
//! names map one-to-one (`layers.3.self_attn.q_proj`, `embed_tokens`, `lm_head`, ...).

use crate::documents::Span;
use crate::rope::Rope;
use crate::{attention::linear, attention::Attention, config::LlamaConfig, fused, mlp::Mlp};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::DType;

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    fn new(config: &LlamaConfig, device: &B::Device) -> Self {
        let norm = || {
            RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device)
        };
        Self {
            input_layernorm: norm(),
            self_attn: Attention::new(config, device),
            post_attention_layernorm: norm(),
            mlp: Mlp::new(config, device),
        }
    }

    /// `x`: [batch, seq, hidden], its tokens where `span` says, the residual stream, f32 in
    /// every precision; the branches compute in the weights' dtype and are added back in f32,
    /// as under PyTorch's autocast (a bf16 residual stream rounds every layer's contribution
    /// to 8 bits of the running sum).
    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope<B>, span: Span<B>) -> Tensor<B, 3> {
        self.forward_with(x, |h| self.self_attn.forward(h, rope, span))
    }

    /// `forward` with `attend` in place of the plain attention (generation's cached one).
    pub(crate) fn forward_with(
        &self,
        x: Tensor<B, 3>,
        attend: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let attn = attend(norm(&self.input_layernorm, x.clone()));
        let x = x + fused::cast(attn, dtype);
        let mlp = self
            .mlp
            .forward(norm(&self.post_attention_layernorm, x.clone()));
        x + fused::cast(mlp, dtype)
    }
}

#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    rope: Rope<B>,
}

impl<B: Backend> Llama<B> {
    /// A freshly initialised model; weights come from the backend's RNG (seed it first).
    pub fn new(config: &LlamaConfig, device: &B::Device) -> Self {
        let std = config.initializer_range;
        Self {
            embed_tokens: EmbeddingConfig::new(config.vocab_size, config.hidden_size)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            layers: (0..config.num_hidden_layers)
                .map(|_| Block::new(config, device))
                .collect(),
            norm: RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device),
            lm_head: (!config.tie_word_embeddings)
                .then(|| linear(config.hidden_size, config.vocab_size, std, device)),
            rope: Rope::new(
                config.max_position_embeddings,
                config.head_dim(),
                config.rope_theta,
                config.rope_scaling.as_ref(),
                device,
            ),
        }
    }

    /// The longest context the rotary table covers (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.rope.max_positions()
    }

    /// The rotary tables every block applies.
    pub fn rope(&self) -> &Rope<B> {
        &self.rope
    }

    /// Logits [batch, seq, vocab] for tokens [batch, seq] at positions `0..seq`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.logits_of(self.hidden(tokens))
    }

    /// `forward` for tokens where `span` says.
    pub fn forward_in(&self, tokens: Tensor<B, 2, Int>, span: Span<B>) -> Tensor<B, 3> {
        self.logits_of(self.hidden_in(tokens, span))
    }

    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.val().dims()[0]
    }

    /// The last block's output [batch, seq, hidden] for tokens [batch, seq].
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.hidden_in(tokens, Span::From(0))
    }

    /// `hidden` for tokens where `span` says.
    pub fn hidden_in(&self, tokens: Tensor<B, 2, Int>, span: Span<B>) -> Tensor<B, 3> {
        let mut x = self.embed(tokens);
        for layer in &self.layers {
            x = layer.forward(x, &self.rope, span);
        }
        x
    }

    /// The first block's input [batch, seq, hidden] for tokens [batch, seq].
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        // The residual stream starts in f32 whatever the weights' dtype (see `Block::forward`).
        fused::cast(self.embed_tokens.forward(tokens), DType::F32)
    }

    /// Logits [batch, seq, vocab] of the last block's output: the final norm and the head.
    pub fn logits_of(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        // One [batch·seq, hidden] gemm rather than a batch of per-row ones (see `project`).
        let logits = self.logits_rows(x.reshape([batch * seq, hidden]));
        let vocab = logits.dims()[1];
        logits.reshape([batch, seq, vocab])
    }

    /// Logits [rows, vocab] of rows [rows, hidden] of the last block's output: the final norm
    /// and the head, row by row, so a chunk of rows gives its own logits.
    pub fn logits_rows(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, hidden] = x.dims();
        let x = norm(&self.norm, x.reshape([1, rows, hidden])).reshape([rows, hidden]);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => x.matmul(self.embed_tokens.weight.val().transpose()),
        }
    }

    /// Mean next-token cross-entropy; `targets` has the shape of `tokens`.
    pub fn loss(&self, tokens: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        cross_entropy(self.forward(tokens), targets)
    }
}

/// Mean of -log softmax(logits)[target] over every position.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, seq, vocab] = logits.dims();
    fused::nll(
        logits.reshape([batch * seq, vocab]),
        targets.reshape([batch * seq]),
    )
    .mean()
}

/// burn's `RmsNorm` module holds the weights (and names them as checkpoints expect); the
/// arithmetic is the fused kernel's, in the dtype of the residual stream `x` (f32), and the
/// result is cast to the weights' dtype for the projections that follow.
fn norm<B: Backend>(norm: &RmsNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let gamma = norm.gamma.val();
    let dtype = gamma.dtype();
    let y = fused::rms_norm(x.clone(), fused::cast(gamma, x.dtype()), norm.epsilon);
    fused::cast(y, dtype)
}
