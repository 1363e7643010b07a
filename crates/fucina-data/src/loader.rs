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
        if dataset.len() < spec.seq_len + 1 {
            bail!(
                "dataset holds {} tokens, fewer than one sequence of {} + 1",
                dataset.len(),
                spec.seq_len
            );
        }
        let windows = ((dataset.len() - 1) / spec.seq_len) as u64;
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

    /// Windows per epoch.
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
        let mut batch = Batch {
            inputs: Vec::with_capacity(micro_batch * seq_len),
            targets: Vec::new(),
        };
        batch.targets.reserve(micro_batch * seq_len);
        let mut window = vec![0u32; seq_len + 1];
        for i in first..first + micro_batch {
            let start = self.window(step, i) as usize * seq_len;
            self.dataset.read(start, &mut window);
            batch.inputs.extend_from_slice(&window[..seq_len]);
            batch.targets.extend_from_slice(&window[1..]);
        }
        batch
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
