//! Validation: the mean loss over each validation set's first batches (the last one partial),
//! shared by the ranks, and the check that validation asked for can run at all.

use crate::config::RunConfig;
use crate::loss::eval_sums;
use anyhow::Result;
use burn::prelude::*;
use fucina_data::{sequential_batch_count, sequential_batch_with_document_mask, TokenDataset};
use fucina_dist::Communicator;
use fucina_model::Llama;

/// Mean loss over the first `batches` validation batches, taken in order; the ranks share the
/// batches, so the result does not depend on the world size. A collective: every rank calls it.
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    val: &TokenDataset,
    seq_len: usize,
    batch_size: usize,
    batches: usize,
    comm: &dyn Communicator,
    device: &B::Device,
) -> Result<Option<f64>> {
    let geometry = (seq_len, batch_size, batches);
    let losses = evaluate_sources(model, &[val], geometry, None, comm, device)?;
    Ok(losses.map(|l| l.total))
}

/// What `evaluate_sources` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ValLosses {
    /// The mean over every evaluated target of every source: sources weigh by their targets
    /// (equal for stream data of equal batch counts), not by their mixture weights.
    pub total: f64,
    /// Each source's mean loss; `None` for one with no counted target.
    pub sources: Vec<Option<f64>>,
    /// The targets `total` is the mean over, and each source's.
    pub tokens: u64,
    pub source_tokens: Vec<u64>,
}

/// `evaluate` for each dataset, each over its own first `batches` batches, in one all-reduce;
/// plain streams cut into documents after `document_eos` when given (`data.document_mask`).
pub fn evaluate_sources<B: Backend>(
    model: &Llama<B>,
    vals: &[&TokenDataset],
    (seq_len, batch_size, batches): (usize, usize, usize),
    document_eos: Option<u32>,
    comm: &dyn Communicator,
    device: &B::Device,
) -> Result<Option<ValLosses>> {
    let mut sums = vec![0f32; 2 * vals.len()];
    for (val, sum) in vals.iter().zip(sums.chunks_mut(2)) {
        let n = batches.min(sequential_batch_count(val, seq_len, batch_size));
        let (mut loss, mut count) = (0.0, 0.0);
        for i in (comm.rank()..n).step_by(comm.size()) {
            let batch =
                sequential_batch_with_document_mask(val, seq_len, batch_size, i, document_eos);
            // The last batch may be partial.
            let rows = batch.inputs.len() / seq_len;
            let (s, c) = eval_sums(model, &batch, rows, device);
            loss += s;
            count += c;
        }
        sum.copy_from_slice(&[loss as f32, count as f32]);
    }
    comm.all_reduce_sum(&mut sums)?;
    let mean = |loss: f64, count: f64| (count > 0.0).then(|| loss / count);
    let sources = sums
        .chunks(2)
        .map(|s| mean(s[0] as f64, s[1] as f64))
        .collect();
    let source_tokens = sums.chunks(2).map(|s| s[1] as u64).collect();
    let (loss, count) = sums
        .chunks(2)
        .fold((0.0, 0.0), |(l, c), s| (l + s[0] as f64, c + s[1] as f64));
    Ok(mean(loss, count).map(|total| ValLosses {
        total,
        sources,
        tokens: count as u64,
        source_tokens,
    }))
}

/// Validation the config asks for either runs or is refused before training starts: a set
/// without one sequence to evaluate is an error, a run without any set says so.
pub(crate) fn check_validation(
    config: &RunConfig,
    names: &[String],
    vals: &[TokenDataset],
    root: bool,
) -> Result<()> {
    if config.eval.every == 0 {
        return Ok(());
    }
    if vals.is_empty() && root {
        eprintln!(
            "note: no validation data, so no validation loss (eval.every = {}): prepare with \
             --val-fraction, or name val_files",
            config.eval.every
        );
    }
    let seq_len = config.data.seq_len;
    for (name, val) in names.iter().zip(vals) {
        if sequential_batch_count(val, seq_len, 1) == 0 {
            anyhow::bail!(
                "the validation set of {name} holds no sequence of {} tokens, so eval.every = {} \
                 would never evaluate: hold out more data (--val-fraction), or set eval.every = 0",
                seq_len + 1,
                config.eval.every
            );
        }
    }
    Ok(())
}
