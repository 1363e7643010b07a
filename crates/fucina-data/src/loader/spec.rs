//! Batch geometry shared by every rank.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How one optimizer step's global batch is cut across ranks and
/// gradient-accumulation micro-steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// Tokens per sequence (targets are the next `seq_len` tokens).
    pub seq_len: usize,
    /// Sequences per optimizer step, summed over all ranks and micro-steps.
    pub global_batch_seqs: usize,
    /// Sequences per rank per micro-step.
    pub micro_batch: usize,
    pub world_size: usize,
    pub rank: usize,
    pub seed: u64,
}

impl BatchSpec {
    /// Micro-steps per optimizer step: `global_batch_seqs / (world_size × micro_batch)`.
    pub fn grad_accum(&self) -> Result<usize> {
        if self.world_size == 0 || self.micro_batch == 0 || self.global_batch_seqs == 0 {
            bail!(
                "world size ({}), micro batch ({}) and global batch ({}) must all be positive",
                self.world_size,
                self.micro_batch,
                self.global_batch_seqs
            );
        }
        let per_micro_step = self.world_size * self.micro_batch;
        if !self.global_batch_seqs.is_multiple_of(per_micro_step) {
            bail!(
                "global batch of {} sequences is not divisible by world size {} × micro batch {} = {}; \
                 use a global batch that is a multiple of {per_micro_step} (e.g. {}) or change the micro batch",
                self.global_batch_seqs,
                self.world_size,
                self.micro_batch,
                per_micro_step,
                self.global_batch_seqs.div_ceil(per_micro_step) * per_micro_step
            );
        }
        Ok(self.global_batch_seqs / per_micro_step)
    }

    /// Checks everything `Loader::new` relies on besides the dataset length.
    pub fn validate(&self) -> Result<usize> {
        if self.seq_len == 0 {
            bail!("sequence length must be positive");
        }
        if self.rank >= self.world_size {
            bail!(
                "rank {} is outside world size {}",
                self.rank,
                self.world_size
            );
        }
        self.grad_accum()
    }
}
