//! The training loader: a pure function of (seed, step, micro-step, rank,
//! world size), so it needs no state beyond the step counter, can jump to any
//! step instantly, and gives every world size the same global batches.
//!
//! Sampling: the token stream is cut into `n = (len − 1) / seq_len` windows
//! of `seq_len + 1` tokens starting at multiples of `seq_len` (consecutive
//! windows share one token: the last target of one is the first input of
//! the next). Global sample `g = step × global_batch_seqs + i` reads window
//! `perm(seed, g / n)(g mod n)`, a fresh pseudo-random permutation per
//! epoch, so each epoch visits every window exactly once. Within a step,
//! rank `r` at micro-step `m` takes `i ∈ [(m × world + r) × micro_batch, +micro_batch)`:
//! the union over ranks and micro-steps is `0..global_batch_seqs` for every
//! world size, which makes training results independent of it.
//!
//! Row data (chat examples, see `TokenDataset`) is sampled the same way with
//! the rows as windows: `n` is the number of rows, window `w` is row `w`,
//! and `seq_len + 1` must equal the row length. Batches then carry the mask
//! of their targets, and `step_loss_targets` counts the targets that count
//! in a whole step, so every rank can divide its loss sum by the same number.

mod eval;
mod permutation;
mod spec;

pub use eval::{sequential_batch, sequential_batch_count};
pub use permutation::{splitmix64, Permutation};
pub use spec::BatchSpec;

use crate::dataset::TokenDataset;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `micro_batch × seq_len` token ids each, row-major; `targets` is `inputs`
/// shifted left by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// For masked (chat) data, one 0/1 byte per target: 1 where the target
    /// counts in the loss (assistant replies), 0 elsewhere (prompts,
    /// padding). `None` means every target counts.
    pub mask: Option<Vec<u8>>,
}

impl Batch {
    /// How many targets count in the loss: the ones in `mask`, or all of them.
    pub fn loss_targets(&self) -> usize {
        match &self.mask {
            Some(mask) => mask.iter().filter(|&&m| m != 0).count(),
            None => self.targets.len(),
        }
    }
}

/// Appends window `w` (of `seq_len + 1` tokens) to `batch` as one input row
/// and one target row, with the targets' mask when the dataset has one.
pub(crate) fn push_window(
    dataset: &TokenDataset,
    seq_len: usize,
    w: usize,
    window: &mut Vec<u32>,
    mask: &mut Vec<u8>,
    batch: &mut Batch,
) {
    let start = dataset.window_start(seq_len, w);
    window.resize(seq_len + 1, 0);
    dataset.read(start, window);
    batch.inputs.extend_from_slice(&window[..seq_len]);
    batch.targets.extend_from_slice(&window[1..]);
    if let Some(out) = &mut batch.mask {
        mask.resize(seq_len, 0);
        dataset.read_mask(start + 1, mask);
        out.extend_from_slice(mask);
    }
}

/// An empty batch with room for `rows` rows, with a mask if the dataset has one.
pub(crate) fn empty_batch(dataset: &TokenDataset, rows: usize, seq_len: usize) -> Batch {
    Batch {
        inputs: Vec::with_capacity(rows * seq_len),
        targets: Vec::with_capacity(rows * seq_len),
        mask: dataset
            .has_mask()
            .then(|| Vec::with_capacity(rows * seq_len)),
    }
}

/// The loader's cursor, saved in checkpoints. Because batches are a pure
/// function of the step, this is all there is: resuming at `step` yields
/// exactly the batches an uninterrupted run would have, never replaying or
/// skipping data, whatever the world size of either run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    /// The next optimizer step to run (= steps completed).
    pub step: u64,
}

#[derive(Debug)]
pub struct Loader {
    dataset: Arc<TokenDataset>,
    spec: BatchSpec,
    grad_accum: usize,
    windows: u64,
}

impl Loader {
    /// Accepts a `TokenDataset` or an `Arc` of one (e.g. shared between ranks in a process).
    pub fn new(dataset: impl Into<Arc<TokenDataset>>, spec: BatchSpec) -> Result<Self> {
        let dataset = dataset.into();
        let grad_accum = spec.validate()?;
        dataset.check_seq_len(spec.seq_len)?;
        if dataset.len() < spec.seq_len + 1 {
            bail!(
                "dataset holds {} tokens, fewer than one sequence of {} + 1",
                dataset.len(),
                spec.seq_len
            );
        }
        let windows = dataset.windows(spec.seq_len) as u64;
        Ok(Self {
            dataset,
            spec,
            grad_accum,
            windows,
        })
    }

    pub fn spec(&self) -> &BatchSpec {
        &self.spec
    }

    pub fn grad_accum(&self) -> usize {
        self.grad_accum
    }

    /// Windows (rows, for row data) per epoch.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    pub fn dataset(&self) -> &Arc<TokenDataset> {
        &self.dataset
    }

    /// The window read by sequence `i` of the global batch of `step`.
    pub fn window(&self, step: u64, i: usize) -> u64 {
        let g = step * self.spec.global_batch_seqs as u64 + i as u64;
        Permutation::new(self.windows, self.spec.seed, g / self.windows).apply(g % self.windows)
    }

    /// This rank's share of micro-step `micro` of optimizer step `step`.
    ///
    /// # Panics
    /// If `micro >= grad_accum()`.
    pub fn micro_batch(&self, step: u64, micro: usize) -> Batch {
        assert!(
            micro < self.grad_accum,
            "micro-step {micro} outside grad accumulation {}",
            self.grad_accum
        );
        let BatchSpec {
            seq_len,
            micro_batch,
            world_size,
            rank,
            ..
        } = self.spec;
        let first = (micro * world_size + rank) * micro_batch;
        let mut batch = empty_batch(&self.dataset, micro_batch, seq_len);
        let (mut window, mut mask) = (Vec::new(), Vec::new());
        for i in first..first + micro_batch {
            let w = self.window(step, i) as usize;
            push_window(
                &self.dataset,
                seq_len,
                w,
                &mut window,
                &mut mask,
                &mut batch,
            );
        }
        batch
    }

    /// Targets that count in the loss over the whole global batch of `step`
    /// (every rank, every micro-step): the mask's ones for masked data, else
    /// `global_batch_seqs × seq_len`. The same on every rank, so dividing
    /// each rank's summed loss by it and summing over ranks gives the mean
    /// over the step's counted targets whatever the world size.
    pub fn step_loss_targets(&self, step: u64) -> u64 {
        let BatchSpec {
            seq_len,
            global_batch_seqs,
            ..
        } = self.spec;
        if !self.dataset.has_mask() {
            return (global_batch_seqs * seq_len) as u64;
        }
        let mut mask = vec![0u8; seq_len];
        (0..global_batch_seqs)
            .map(|i| {
                let w = self.window(step, i) as usize;
                self.dataset
                    .read_mask(self.dataset.window_start(seq_len, w) + 1, &mut mask);
                mask.iter().map(|&m| m as u64).sum::<u64>()
            })
            .sum()
    }

    /// The cursor to checkpoint before running `next_step`.
    pub fn state(&self, next_step: u64) -> LoaderState {
        LoaderState {
            seed: self.spec.seed,
            step: next_step,
        }
    }

    /// The step to resume at, refusing a state saved with another seed,
    /// which would silently change the data order.
    pub fn resume(&self, state: &LoaderState) -> Result<u64> {
        if state.seed != self.spec.seed {
            bail!(
                "checkpoint loader seed {} differs from the configured seed {}",
                state.seed,
                self.spec.seed
            );
        }
        Ok(state.step)
    }
}
