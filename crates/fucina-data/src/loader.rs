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
//!
//! Later epochs of a plain stream read shifted windows: epoch `e ≥ 1` moves
//! every window start by `shift(seed, e) ∈ [1, seq_len)` and reads the `n ×
//! seq_len` tokens the windows cover as a ring, so the one window that runs
//! past the end continues at the start. Without it every epoch would cut the
//! text at the same places, and a model trained for many epochs on a small
//! corpus learns each fixed window by heart (training loss 0.8 while text
//! offset by a few tokens still scores 3 to 4) instead of the language. Epoch
//! 0 is unshifted, so runs that read their data once are unaffected; row
//! (chat) data is never shifted, its rows being the examples.
//!
//! A weighted mixture of datasets (`Loader::mixture`) first maps global
//! sample `g` to (source `s`, its `k`-th sample) by a fixed block layout
//! (see `mixture`), then reads window `perm(seed_s, k / n_s)(k mod n_s)` of
//! source `s` exactly as above, with a seed of its own. A source smaller
//! than its share simply starts another epoch, a fresh permutation of its
//! windows, each time it has served all of them; the others are unaffected.
//! With one source this is the single-dataset loader, batch for batch.
//!
//! Batches carry document starts (`Batch::starts`) when rows hold several
//! documents: row data whose masks mark them (`prepare --pack`), or plain
//! streams cut after each end-of-text token once asked to
//! (`Loader::with_document_mask`). Neither changes which windows are read.

mod eval;
mod mixture;
mod permutation;
mod spec;
mod window;

pub use eval::{sequential_batch, sequential_batch_count, sequential_batch_with_document_mask};
pub use mixture::{slots as mixture_slots, SourceState, BLOCK as MIXTURE_BLOCK};
pub use permutation::{splitmix64, Permutation};
pub use spec::BatchSpec;

use crate::dataset::TokenDataset;
use anyhow::{bail, Result};
use mixture::Plan;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use window::WindowReader;

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
    /// When rows hold several documents, for each input token (row-major,
    /// like `inputs`) the index within its row of its document's first
    /// token: 0 for a row's first token, then either the token's own index
    /// (it starts a document) or its predecessor's value. Attention should
    /// stay within a document and positions restart at its start. `None`
    /// means each row is one document.
    pub starts: Option<Vec<u32>>,
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

/// The loader's cursor, saved in checkpoints. Because batches are a pure
/// function of the step, this is all there is: resuming at `step` yields
/// exactly the batches an uninterrupted run would have, never replaying or
/// skipping data, whatever the world size of either run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    /// The next optimizer step to run (= steps completed).
    pub step: u64,
    /// Each source of a mixture of two or more, in order; empty for one dataset (so a
    /// one-source mixture and a single dataset resume each other).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixture: Vec<SourceState>,
}

#[derive(Debug)]
struct Source {
    dataset: Arc<TokenDataset>,
    windows: u64,
    seed: u64,
}

#[derive(Debug)]
pub struct Loader {
    sources: Vec<Source>,
    plan: Plan,
    spec: BatchSpec,
    grad_accum: usize,
    /// Plain streams are cut into documents after this token.
    document_eos: Option<u32>,
}

/// Where epoch `epoch`'s windows start within the first `seq_len` tokens: 0 for the first,
/// elsewhere for every later one, so none cuts the text where the first did.
pub fn epoch_shift(seed: u64, epoch: u64, seq_len: usize) -> usize {
    match (epoch, seq_len) {
        (0, _) | (_, 0 | 1) => 0,
        (e, n) => {
            let hash = splitmix64(splitmix64(seed ^ 0x5348_4946_5445_4421) ^ e);
            1 + (hash % (n as u64 - 1)) as usize
        }
    }
}

/// Source 0 keeps the run's seed, so that a one-source mixture is the plain loader.
fn source_seed(seed: u64, source: usize) -> u64 {
    match source {
        0 => seed,
        s => splitmix64(seed ^ splitmix64(s as u64)),
    }
}

fn describe(dataset: &TokenDataset) -> String {
    dataset.shards()[0]
        .path()
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

impl Loader {
    /// Accepts a `TokenDataset` or an `Arc` of one (e.g. shared between ranks in a process).
    pub fn new(dataset: impl Into<Arc<TokenDataset>>, spec: BatchSpec) -> Result<Self> {
        Self::mixture(vec![(dataset.into(), 1.0)], spec)
    }

    /// Samples the datasets in proportion to their weights (normalised: they need not sum
    /// to 1). All must be plain token streams, or all row (chat) data of rows `seq_len + 1`
    /// long: a mixed batch would hold some masked and some unmasked rows.
    pub fn mixture(sources: Vec<(Arc<TokenDataset>, f64)>, spec: BatchSpec) -> Result<Self> {
        let grad_accum = spec.validate()?;
        let weights: Vec<f64> = sources.iter().map(|(_, w)| *w).collect();
        let plan = Plan::new(&weights)?;
        let single = sources.len() == 1;
        let named = |i: usize, d: &TokenDataset| match single {
            true => String::new(),
            false => format!("data source {i} ({}): ", describe(d)),
        };
        let mut out = Vec::with_capacity(sources.len());
        for (i, (dataset, _)) in sources.into_iter().enumerate() {
            let at = named(i, &dataset);
            dataset
                .check_seq_len(spec.seq_len)
                .map_err(|e| anyhow::anyhow!("{at}{e}"))?;
            if dataset.len() < spec.seq_len + 1 {
                bail!(
                    "{at}dataset holds {} tokens, fewer than one sequence of {} + 1",
                    dataset.len(),
                    spec.seq_len
                );
            }
            if let Some(first) = out
                .first()
                .filter(|f: &&Source| f.dataset.has_mask() != dataset.has_mask())
            {
                let kind = |d: &TokenDataset| match d.has_mask() {
                    true => "chat row data (with .mask files)",
                    false => "a plain token stream",
                };
                bail!(
                    "data source {i} ({}) is {} but data source 0 ({}) is {}: a mixture must be all one or the \
                     other; prepare the plain text as chat data, or train on them in separate runs",
                    describe(&dataset),
                    kind(&dataset),
                    describe(&first.dataset),
                    kind(&first.dataset)
                );
            }
            let windows = dataset.windows(spec.seq_len) as u64;
            out.push(Source {
                dataset,
                windows,
                seed: source_seed(spec.seed, i),
            });
        }
        Ok(Self {
            sources: out,
            plan,
            spec,
            grad_accum,
            document_eos: None,
        })
    }

    /// Cuts plain token streams into documents after each `eos_id` (the run
    /// option `data.document_mask`): batches then carry `starts`, the token
    /// after an EOS starting a new document. Row (chat) data is unaffected:
    /// its masks say where documents start (`prepare --pack`), and EOS may
    /// occur inside a conversation. Batches hold the same tokens either way.
    pub fn with_document_mask(mut self, eos_id: u32) -> Self {
        self.document_eos = Some(eos_id);
        self
    }

    /// The token plain streams are cut after, if `with_document_mask` was called.
    pub fn document_eos(&self) -> Option<u32> {
        self.document_eos
    }

    pub fn spec(&self) -> &BatchSpec {
        &self.spec
    }

    pub fn grad_accum(&self) -> usize {
        self.grad_accum
    }

    /// How many datasets the loader samples from.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Windows (rows, for row data) per epoch of source 0, the only one without a mixture.
    pub fn windows(&self) -> u64 {
        self.source_windows(0)
    }

    pub fn source_windows(&self, source: usize) -> u64 {
        self.sources[source].windows
    }

    /// Source 0's dataset, the only one without a mixture.
    pub fn dataset(&self) -> &Arc<TokenDataset> {
        self.source_dataset(0)
    }

    pub fn source_dataset(&self, source: usize) -> &Arc<TokenDataset> {
        &self.sources[source].dataset
    }

    /// The (source, window) read by sequence `i` of the global batch of `step`.
    pub fn sample(&self, step: u64, i: usize) -> (usize, u64) {
        let (s, w, _) = self.place(step, i);
        (s, w)
    }

    /// `sample`, and how far the window's start is shifted in its epoch (see the module docs).
    fn place(&self, step: u64, i: usize) -> (usize, u64, usize) {
        let g = step * self.spec.global_batch_seqs as u64 + i as u64;
        let (s, k) = self.plan.sample(g);
        let Source {
            windows,
            seed,
            ref dataset,
        } = self.sources[s];
        let epoch = k / windows;
        let shift = match dataset.has_mask() {
            true => 0,
            false => epoch_shift(seed, epoch, self.spec.seq_len),
        };
        (
            s,
            Permutation::new(windows, seed, epoch).apply(k % windows),
            shift,
        )
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
        let mut reader = WindowReader::new(seq_len, self.document_eos);
        let datasets = self.sources.iter().map(|s| &*s.dataset);
        let mut batch = reader.empty_batch(datasets, micro_batch);
        for i in first..first + micro_batch {
            let (s, w, shift) = self.place(step, i);
            let source = &self.sources[s];
            reader.push_shifted(
                &source.dataset,
                source.windows as usize,
                w as usize,
                shift,
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
        if !self.dataset().has_mask() {
            return (global_batch_seqs * seq_len) as u64;
        }
        let mut mask = vec![0u8; seq_len];
        (0..global_batch_seqs)
            .map(|i| {
                let (s, w) = self.sample(step, i);
                let dataset = &self.sources[s].dataset;
                dataset.read_mask(dataset.window_start(seq_len, w as usize) + 1, &mut mask);
                mask.iter().map(|&m| m as u64).sum::<u64>()
            })
            .sum()
    }

    /// What a checkpoint records of the mixture (nothing for a single source).
    fn mixture_state(&self) -> Vec<SourceState> {
        if self.sources.len() < 2 {
            return Vec::new();
        }
        self.sources
            .iter()
            .zip(self.plan.slots())
            .map(|(s, &slots)| SourceState {
                slots,
                windows: s.windows,
            })
            .collect()
    }

    /// The cursor to checkpoint before running `next_step`.
    pub fn state(&self, next_step: u64) -> LoaderState {
        LoaderState {
            seed: self.spec.seed,
            step: next_step,
            mixture: self.mixture_state(),
        }
    }

    /// The step to resume at, refusing a state saved with another seed or
    /// another mixture, which would silently change the data order. A mixture
    /// is the same when every source, in order, has as many windows and the
    /// same share of slots: scaling all weights by one factor, renaming or
    /// moving a source's directory are harmless.
    pub fn resume(&self, state: &LoaderState) -> Result<u64> {
        if state.seed != self.spec.seed {
            bail!(
                "checkpoint loader seed {} differs from the configured seed {}",
                state.seed,
                self.spec.seed
            );
        }
        let now = self.mixture_state();
        if state.mixture != now {
            let show = |m: &[SourceState]| match m {
                [] => "a single data source".to_string(),
                m => m
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        format!(
                            "source {i}: {}/{} of the samples, {} windows",
                            s.slots,
                            mixture::BLOCK,
                            s.windows
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            bail!(
                "the checkpoint was trained on {} but this run's data is {}: the data of every \
                 later step would differ from the interrupted run's. Resume with the [data] \
                 section of the checkpoint's config.toml, or start a new run",
                show(&state.mixture),
                show(&now)
            );
        }
        Ok(state.step)
    }
}
