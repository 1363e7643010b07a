//! Forward and backward of a micro-batch with its rows split over the threads of the rank's
//! rayon pool. burn runs one operation at a time and parallelises only inside large matrix
//! products, so a second core otherwise idles through every element-wise pass, softmax and
//! copy: measured, 2 threads gave 1.1× one. Each thread works on its rows with its own autodiff
//! graph, and the gradients are summed as micro-batch gradients are.

use crate::checkpointing;
use crate::config::Checkpointing;
use crate::head::{self, RowLoss};
use crate::loss::{documents, logits_loss, span, tokens_to_tensor};
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_data::Batch;
use fucina_model::Llama;
use rayon::prelude::*;

/// Tokens per part on a CPU: measured on the `mini` model (8 × 256 tokens per micro-batch), one
/// thread trains 15 % faster in parts of 512–1,024 tokens than in one piece (the SwiGLU
/// intermediates of a part fit the core's L2 cache; each part's graph is freed before the next).
const CPU_PART_TOKENS: usize = 1024;

/// How many parts a CPU rank splits a micro-batch of `rows` sequences into: one per thread at
/// least, and none above `CPU_PART_TOKENS`. GPU backends take the micro-batch whole (1).
pub fn cpu_parts(rows: usize, seq_len: usize) -> usize {
    let by_size = (rows * seq_len).div_ceil(CPU_PART_TOKENS);
    rayon::current_num_threads().max(by_size).min(rows).max(1)
}

/// The train section's memory options, as `forward_backward` takes them.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `train.activation_checkpointing`.
    pub checkpointing: Checkpointing,
    /// `train.logits_chunk_mb` in bytes: the head and the loss go over chunks of rows whose
    /// f32 logits fit in it (0: all rows at once).
    pub logits_chunk_bytes: usize,
}

impl Memory {
    pub fn of(train: &crate::config::TrainConfig) -> Self {
        Memory {
            checkpointing: train.activation_checkpointing,
            logits_chunk_bytes: (train.logits_chunk_mb * (1 << 20) as f64) as usize,
        }
    }
}

/// Accumulates into `grads` the gradient of the micro-batch's loss share (÷ `accum`) and
/// returns that loss. `rows` sequences in `parts` (see `cpu_parts`), `scale` as for
/// `micro_loss`; `widen`: bf16 gradients are widened to f32 before they are summed (see the
/// trainer); `poison` turns the loss into NaN (the fault injection of the non-finite tests);
/// `memory`: what the backward recomputes and how many logits it holds at once.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward<B: AutodiffBackend>(
    model: &Llama<B>,
    batch: &Batch,
    (rows, parts, widen): (usize, usize, bool),
    scale: f64,
    accum: usize,
    poison: bool,
    memory: Memory,
    grads: &mut GradientsAccumulator<Llama<B>>,
    device: &B::Device,
) -> f64 {
    let part = |model: &Llama<B>, batch: &Batch, part_rows: usize| {
        let loss = PartLoss::new(batch, (part_rows, rows), scale, accum, poison, memory);
        let tokens = tokens_to_tensor::<B>(&batch.inputs, part_rows, device);
        let docs = documents::<B>(batch, part_rows, device);
        match (memory.checkpointing, loss.chunked(model)) {
            (Checkpointing::None, false) => {
                let mut value = 0.0;
                let logits = model.forward_in(tokens, span(&docs));
                let loss = loss.loss_of(logits, &mut value, device);
                (value, GradientsParams::from_grads(loss.backward(), model))
            }
            (Checkpointing::None, true) => {
                let hidden = model.hidden_in(tokens, span(&docs));
                let (value, grad, mut grads) = loss.head(model, hidden.clone().inner(), device);
                let mut backward = (hidden * Tensor::from_inner(grad)).sum().backward();
                checkpointing::add_grads::<B, _>(&mut grads, &mut backward, model);
                (value, grads)
            }
            (Checkpointing::Block, _) => {
                let mut value = 0.0;
                let grads = checkpointing::gradients(model, tokens, docs.as_ref(), |x| {
                    let (v, grad, grads) = loss.head(model, x, device);
                    value = v;
                    (grad, grads)
                });
                (value, grads)
            }
        }
    };
    let widened = |part: GradientsParams| match widen {
        true => crate::precision::widen_grads(model, part),
        false => part,
    };
    if parts == 1 {
        let (value, part_grads) = part(model, batch, rows);
        grads.accumulate(model, widened(part_grads));
        return value;
    }
    let chunks = split_rows(batch, rows, parts);
    // Fresh autodiff leaves per thread (same ParamIds, no copy of the weights): graphs that
    // shared the model's leaves would merge into one, behind one lock.
    let replicas: Vec<Llama<B>> = (0..chunks.len())
        .map(|_| Llama::from_inner(model.valid()))
        .collect();
    let results: Vec<(f64, GradientsParams)> = replicas
        .into_par_iter()
        .zip(chunks.into_par_iter())
        .map(|(replica, (chunk, chunk_rows))| part(&replica, &chunk, chunk_rows))
        .collect();
    let mut total = 0.0;
    for (value, part) in results {
        total += value;
        grads.accumulate(model, widened(part));
    }
    total
}

/// The loss of one part of a micro-batch, as `forward_backward` weighs it.
pub(crate) struct PartLoss<'a> {
    batch: &'a Batch,
    rows: usize,
    /// The part's share of an unmasked micro-batch's mean, times NaN when poisoned.
    weight: f64,
    scale: f64,
    accum: usize,
    logits_chunk_bytes: usize,
}

impl<'a> PartLoss<'a> {
    /// For `batch`, the part of `part_rows` of the micro-batch's `rows`.
    pub fn new(
        batch: &'a Batch,
        (part_rows, rows): (usize, usize),
        scale: f64,
        accum: usize,
        poison: bool,
        memory: Memory,
    ) -> Self {
        // The unmasked loss is a mean over rows: a share of it weighs its rows.
        let share = match batch.mask {
            Some(_) => 1.0,
            None => part_rows as f64 / rows as f64,
        };
        let poison = if poison { f64::NAN } else { 1.0 };
        PartLoss {
            batch,
            rows: part_rows,
            weight: share * poison,
            scale,
            accum,
            logits_chunk_bytes: memory.logits_chunk_bytes,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the head goes over chunks of rows (`train.logits_chunk_mb`).
    pub fn chunked<B: Backend>(&self, model: &Llama<B>) -> bool {
        self.batch.targets.len() > head::chunk_rows(model.vocab_size(), self.logits_chunk_bytes)
    }

    /// The loss of `logits`, ÷ `accum` for the backward; its value (not divided) in `value`.
    pub fn loss_of<B: AutodiffBackend>(
        &self,
        logits: Tensor<B, 3>,
        value: &mut f64,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let loss = logits_loss(logits, self.batch, self.rows, self.scale, device);
        let loss = match self.weight == 1.0 {
            true => loss,
            false => loss.mul_scalar(self.weight),
        };
        *value = loss.clone().into_scalar().elem::<f64>();
        loss.div_scalar(self.accum as f64)
    }

    /// The head's step on the last block's output `x` (see `crate::head`): the loss value, its
    /// gradient with respect to `x` and the head's gradients.
    pub fn head<B: AutodiffBackend>(
        &self,
        model: &Llama<B>,
        x: Tensor<B::InnerBackend, 3>,
        device: &B::Device,
    ) -> (f64, Tensor<B::InnerBackend, 3>, GradientsParams) {
        if self.chunked(model) {
            // Σ weights ⊙ nll is the loss of `loss_of`, term by term.
            let factor = self.weight / self.accum as f64;
            let loss = RowLoss::of(self.batch, self.scale, factor);
            let chunk = head::chunk_rows(model.vocab_size(), self.logits_chunk_bytes);
            let (total, grad, grads) = head::chunked(model, x, &loss, chunk);
            return (total * self.accum as f64, grad, grads);
        }
        let mut value = 0.0;
        let (grad, grads) =
            head::whole(model, x, |logits| self.loss_of(logits, &mut value, device));
        (value, grad, grads)
    }
}

/// `parts` batches of consecutive rows, as even as possible, with their row counts.
pub(crate) fn split_rows(batch: &Batch, rows: usize, parts: usize) -> Vec<(Batch, usize)> {
    let cols = batch.targets.len() / rows;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let n = rows / parts + usize::from(p < rows % parts);
        let range = start * cols..(start + n) * cols;
        out.push((
            Batch {
                inputs: batch.inputs[range.clone()].to_vec(),
                targets: batch.targets[range.clone()].to_vec(),
                mask: batch.mask.as_ref().map(|m| m[range.clone()].to_vec()),
                starts: batch.starts.as_ref().map(|s| s[range].to_vec()),
            },
            n,
        ));
        start += n;
    }
    out
}
