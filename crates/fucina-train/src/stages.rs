//! The backward of a micro-batch cut at its decoder blocks and run one stage at a time, so that
//! the all-reduce of the last layers' gradients runs while the earlier layers' backward goes
//! on (as DDP's autograd hooks let it). Stage 0 is the head (final norm, lm_head, loss), stage
//! 1 + i the i-th block from the last, the final stage the embedding.
//!
//! Each block keeps its own graph, from its input as a leaf: the same activations as one graph
//! of the whole model (or, with block checkpointing, only its input: the block runs again in
//! its stage, as in `crate::checkpointing`). A stage's backward differentiates
//! `Σ out ⊙ grad_out`, which gives the block's gradients and `grad_out` of the block before.
//! On a CPU the micro-batch's rows are split in parts over the rank's threads (see
//! `crate::threads`), each with its graphs; a stage runs on every part at once.

use crate::checkpointing::add_grads;
use crate::config::Checkpointing;
use crate::grads::trainable_shapes;
use crate::loss::{documents, span, tokens_to_tensor};
use crate::precision::widen_grads;
use crate::threads::{split_rows, Memory, PartLoss};
use burn::module::{AutodiffModule, Module, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_data::Batch;
use fucina_model::model::Block;
use fucina_model::{Documents, Llama};
use rayon::prelude::*;
use std::collections::HashMap;

/// A micro-batch whose forward and head have run, with its backward still to run stage by stage.
pub struct Stages<B: AutodiffBackend> {
    parts: Vec<Part<B>>,
    /// For summing the parts' gradients by parameter.
    model: Llama<B>,
    widen: bool,
    next: usize,
}

struct Part<B: AutodiffBackend> {
    /// Fresh leaves with the model's ParamIds: each part's graphs share no node with another's.
    model: Llama<B>,
    tokens: Tensor<B, 2, Int>,
    /// The rows' packed documents, for the blocks run again in the backward.
    docs: Option<Documents<B>>,
    kept: Vec<Option<Kept<B>>>,
    grad_out: Option<Tensor<B::InnerBackend, 3>>,
    head: Option<GradientsParams>,
}

enum Kept<B: AutodiffBackend> {
    /// Block checkpointing: the block's input, from which it runs again.
    Input(Tensor<B::InnerBackend, 3>),
    /// The block's graph.
    Graph {
        block: Box<Block<B>>,
        input: Tensor<B, 3>,
        out: Tensor<B, 3>,
    },
}

impl<B: AutodiffBackend> Stages<B> {
    /// Runs the forward and the head of `batch` (arguments as `threads::forward_backward`'s)
    /// and returns the micro-batch's loss with the stages of its backward.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        model: &Llama<B>,
        batch: &Batch,
        (rows, parts, widen): (usize, usize, bool),
        scale: f64,
        accum: usize,
        poison: bool,
        memory: Memory,
        device: &B::Device,
    ) -> (f64, Self) {
        let chunks = match parts {
            1 => vec![(batch.clone(), rows)],
            _ => split_rows(batch, rows, parts),
        };
        let results: Vec<(f64, Part<B>)> = chunks
            .into_par_iter()
            .map(|(chunk, part_rows)| {
                let loss = PartLoss::new(&chunk, (part_rows, rows), scale, accum, poison, memory);
                let replica = Llama::from_inner(model.valid());
                Part::forward(replica, &chunk, &loss, memory.checkpointing, device)
            })
            .collect();
        let (values, parts): (Vec<f64>, Vec<Part<B>>) = results.into_iter().unzip();
        let stages = Stages {
            parts,
            model: model.clone(),
            widen,
            next: 0,
        };
        (values.iter().sum(), stages)
    }

    /// How many stages the backward has.
    pub fn count(&self) -> usize {
        self.model.layers.len() + 2
    }

    /// Runs the next stage and returns the gradients it completed, summed over the parts.
    pub fn advance(&mut self) -> GradientsParams {
        let (stage, layers) = (self.next, self.model.layers.len());
        assert!(stage < self.count(), "every stage has run");
        self.next += 1;
        let mut grads: Vec<GradientsParams> = self
            .parts
            .par_iter_mut()
            .map(|part| part.advance(stage, layers))
            .collect();
        let widened = |g: GradientsParams| match self.widen {
            true => widen_grads(&self.model, g),
            false => g,
        };
        if grads.len() == 1 {
            return widened(grads.remove(0));
        }
        let mut sum = GradientsAccumulator::<Llama<B>>::new();
        for g in grads {
            sum.accumulate(&self.model, widened(g));
        }
        sum.grads()
    }

    /// The stage after which each of `model`'s trainable parameters has its whole gradient,
    /// in visit order.
    pub fn stage_of(model: &Llama<B>) -> Vec<usize> {
        let layers = model.layers.len();
        let mut stage: HashMap<ParamId, usize> = HashMap::new();
        for id in trainable_ids(&model.norm) {
            stage.insert(id, 0);
        }
        if let Some(head) = &model.lm_head {
            trainable_ids(head).into_iter().for_each(|id| {
                stage.insert(id, 0);
            });
        }
        for (j, layer) in model.layers.iter().enumerate() {
            for id in trainable_ids(layer) {
                stage.insert(id, layers - j);
            }
        }
        // A tied embedding has a part from the head too, and is complete only here.
        let last = layers + 1;
        trainable_ids(model)
            .into_iter()
            .map(|id| stage.get(&id).copied().unwrap_or(last))
            .collect()
    }
}

impl<B: AutodiffBackend> Part<B> {
    fn forward(
        model: Llama<B>,
        batch: &Batch,
        loss: &PartLoss,
        checkpointing: Checkpointing,
        device: &B::Device,
    ) -> (f64, Self) {
        let tokens = tokens_to_tensor::<B>(&batch.inputs, loss.rows(), device);
        let docs = documents::<B>(batch, loss.rows(), device);
        let inner_docs = docs.as_ref().map(Documents::inner);
        let inner = model.valid();
        let mut x = inner.embed(tokens.clone().inner());
        let mut kept = Vec::with_capacity(inner.layers.len());
        let rope = inner.rope().clone();
        // By value: a clone of a parameter forgets that it trains (burn 0.21's `Param::clone`).
        for layer in inner.layers {
            let (next, keep) = match checkpointing {
                Checkpointing::Block => {
                    let out = layer.forward(x.clone(), &rope, span(&inner_docs));
                    (out, Kept::Input(x))
                }
                Checkpointing::None => {
                    let block = Block::<B>::from_inner(layer);
                    let input = Tensor::<B, 3>::from_inner(x).require_grad();
                    let out = block.forward(input.clone(), model.rope(), span(&docs));
                    let block = Box::new(block);
                    (out.clone().inner(), Kept::Graph { block, input, out })
                }
            };
            kept.push(Some(keep));
            x = next;
        }
        let (value, grad_out, head) = loss.head(&model, x, device);
        let part = Part {
            model,
            tokens,
            docs,
            kept,
            grad_out: Some(grad_out),
            head: Some(head),
        };
        (value, part)
    }

    fn advance(&mut self, stage: usize, layers: usize) -> GradientsParams {
        let mut grads = GradientsParams::new();
        if stage == 0 {
            return self.head.take().expect("the head's stage runs once");
        }
        if stage <= layers {
            let j = layers - stage;
            let (block, input, out) = match self.kept[j].take().expect("each block runs once") {
                Kept::Graph { block, input, out } => (*block, input, out),
                Kept::Input(x) => {
                    let block = Block::<B>::from_inner(self.model.layers[j].valid());
                    let input = Tensor::<B, 3>::from_inner(x).require_grad();
                    let out = block.forward(input.clone(), self.model.rope(), span(&self.docs));
                    (block, input, out)
                }
            };
            let grad_out = self.grad_out.take().expect("the stage after runs first");
            let mut backward = (out * Tensor::from_inner(grad_out)).sum().backward();
            self.grad_out = Some(
                input
                    .grad(&backward)
                    .expect("a block's output depends on its input"),
            );
            add_grads::<B, _>(&mut grads, &mut backward, &block);
            return grads;
        }
        let embedding = &self.model.embed_tokens;
        // Frozen (LoRA): `embed` would build no graph to differentiate.
        if let (true, Some(grad_out)) = (embedding.weight.is_require_grad(), self.grad_out.take()) {
            let out = self.model.embed(self.tokens.clone());
            let mut backward = (out * Tensor::from_inner(grad_out)).sum().backward();
            add_grads::<B, _>(&mut grads, &mut backward, embedding);
        }
        grads
    }
}

/// The ids of `module`'s trainable parameters, in visit order.
fn trainable_ids<B: AutodiffBackend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    trainable_shapes(module)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}
