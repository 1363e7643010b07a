//! Activation checkpointing per decoder block, as stages of ordinary autodiff graphs, so it runs
//! on every backend (the Flex fused kernels included) without an autodiff op of its own:
//!
//! 1. the blocks run forward on the inner backend (no graph), keeping only each block's input;
//! 2. the head (final norm, lm_head, loss) runs with a graph from the last block's output as a
//!    leaf: its backward gives the head's gradients and the gradient of that output;
//! 3. from the last block to the first, the block is recomputed from its kept input (a leaf)
//!    and `Σ out ⊙ grad_out` is differentiated, which gives the block's gradients and
//!    `grad_out` of the block before;
//! 4. the embedding's gradient comes from block 0's input gradient.
//!
//! At any time one block's graph is alive besides the kept inputs. The result is keyed by the
//! model's ParamIds, as `GradientsParams::from_grads(loss.backward(), model)` would be.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_model::model::Block;
use fucina_model::{Documents, Llama, Span};

/// The gradients of the loss, for tokens [rows, seq] (packed as `docs` says). `head` is step 2: given the last block's
/// output (no graph), the loss's gradient with respect to it and the head's gradients (see
/// `crate::head`).
pub fn gradients<B: AutodiffBackend>(
    model: &Llama<B>,
    tokens: Tensor<B, 2, Int>,
    docs: Option<&Documents<B>>,
    head: impl FnOnce(Tensor<B::InnerBackend, 3>) -> (Tensor<B::InnerBackend, 3>, GradientsParams),
) -> GradientsParams {
    let inner = model.valid();
    let inner_docs = docs.map(Documents::inner);
    let inner_span = inner_docs.as_ref().map_or(Span::From(0), Span::Packed);
    let span = docs.map_or(Span::From(0), Span::Packed);
    let mut inputs = Vec::with_capacity(inner.layers.len());
    let mut x = inner.embed(tokens.clone().inner());
    for layer in &inner.layers {
        let next = layer.forward(x.clone(), inner.rope(), inner_span);
        inputs.push(x);
        x = next;
    }

    let (mut grad_out, mut grads) = head(x);

    for (layer, input) in inner.layers.into_iter().zip(inputs).rev() {
        // Fresh leaves with the same ParamIds: this graph shares no node with the others.
        let block = Block::<B>::from_inner(layer);
        let input = Tensor::<B, 3>::from_inner(input).require_grad();
        let out = block.forward(input.clone(), model.rope(), span);
        let mut backward = (out * Tensor::from_inner(grad_out)).sum().backward();
        grad_out = input
            .grad(&backward)
            .expect("a block's output depends on its input");
        add_grads::<B, _>(&mut grads, &mut backward, &block);
    }

    let embedding = &model.embed_tokens;
    // Frozen (LoRA): `embed` would build no graph to differentiate.
    if embedding.weight.is_require_grad() {
        let out = model.embed(tokens);
        let mut backward = (out * Tensor::from_inner(grad_out)).sum().backward();
        add_grads::<B, _>(&mut grads, &mut backward, embedding);
    }
    grads
}

/// Moves the gradients of `module`'s parameters from `backward` into `grads`, adding to any
/// already there (a tied embedding gets one from the head and one from the lookup).
pub(crate) fn add_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: &mut GradientsParams,
    backward: &mut B::Gradients,
    module: &M,
) {
    struct Add<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        backward: &'a mut B::Gradients,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Add<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(grad) = param.val().grad_remove(self.backward) else {
                return;
            };
            let grad = match self.grads.remove::<B::InnerBackend, D>(param.id) {
                Some(earlier) => earlier + grad,
                None => grad,
            };
            self.grads.register(param.id, grad);
        }
    }
    module.visit(&mut Add::<B> { grads, backward });
}
