//! Generation with a key/value cache: each new token's queries attend to the keys and values
//! of every earlier token, kept per layer, instead of the whole context being recomputed for
//! every token. The prompt goes through once (causally masked), then one token per call.

use crate::attention::Attention;
use crate::documents::Span;
use crate::fused;
use crate::fused::reference::{causal_softmax, heads_first};
use crate::lora::project;
use crate::model::Llama;
use crate::rope::Rope;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::DType;

/// Keys and values [batch, seen, kv_heads, head_dim] of each layer, and how many tokens
/// they hold.
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    seen: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
            seen: 0,
        }
    }

    /// Tokens already in the cache: the position of the next one.
    pub fn len(&self) -> usize {
        self.seen
    }

    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }
}

impl<B: Backend> Llama<B> {
    /// Logits [batch, vocab] of the last of `tokens` [batch, new], which follow the tokens
    /// already in `cache`; their keys and values join it.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 2> {
        let [batch, new] = tokens.dims();
        let start = cache.seen;
        let mut x = self.embed(tokens);
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward_with(x, |h| {
                layer.self_attn.forward_cached(h, self.rope(), start, kv)
            });
        }
        cache.seen += new;
        let hidden = x.dims()[2];
        let last = x
            .slice([0..batch, new - 1..new, 0..hidden])
            .reshape([batch, hidden]);
        self.logits_rows(last)
    }
}

impl<B: Backend> Attention<B> {
    fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        start: usize,
        kv: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let [batch, new, _] = x.dims();
        let (heads, kv_heads, head_dim) = self.shape();
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, new, n, head_dim]);
        let q = project(&self.q_proj, &self.q_lora, x.clone());
        let k = project(&self.k_proj, &self.k_lora, x.clone());
        let v = project(&self.v_proj, &self.v_lora, x);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let q = rope.apply_in(split(q, heads), Span::From(start), scale);
        let k = rope.apply_in(split(k, kv_heads), Span::From(start), 1.0);
        let v = split(v, kv_heads);
        let (k, v) = match kv.take() {
            Some((k0, v0)) => (Tensor::cat(vec![k0, k], 1), Tensor::cat(vec![v0, v], 1)),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let out = attend(q, k, v, start);
        project(
            &self.o_proj,
            &self.o_lora,
            out.reshape([batch, new, heads * head_dim]),
        )
    }
}

/// Queries [batch, new, heads, dim] at positions `start..start + new` against keys and values
/// [batch, start + new, kv_heads, dim]: query i sees keys `0..=start + i`.
fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    start: usize,
) -> Tensor<B, 4> {
    let (q, k, v) = heads_first(q, k, v);
    let dtype = q.dtype();
    let scores = fused::cast(q.matmul(k.swap_dims(2, 3)), DType::F32);
    let probs = match start {
        // The prompt alone: causal, as in training.
        0 => causal_softmax(scores),
        // Later tokens see every earlier key; several at once also mask their own future.
        _ => {
            let [_, _, new, total] = scores.dims();
            let device = scores.device();
            let keys =
                Tensor::<B, 1, Int>::arange(0..total as i64, &device).reshape([1, 1, 1, total]);
            let queries = Tensor::<B, 1, Int>::arange(start as i64..(start + new) as i64, &device)
                .reshape([1, 1, new, 1]);
            let hidden = keys.greater(queries).expand(scores.dims());
            softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 3)
        }
    };
    fused::cast(probs, dtype).matmul(v).swap_dims(1, 2)
}
