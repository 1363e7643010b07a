//! Unshuffled batches for validation: the same windows in the same order at
//! every evaluation, so validation losses are comparable across steps.

use super::window::WindowReader;
use super::Batch;
use crate::dataset::TokenDataset;

/// How many batches `sequential_batch` can produce, the last one partial when
/// the windows do not fill it: a validation set smaller than one batch is
/// still evaluated. For row (chat) data whose rows are not `seq_len + 1` long
/// this is 0: call `TokenDataset::check_seq_len` first for an error saying why.
pub fn sequential_batch_count(dataset: &TokenDataset, seq_len: usize, batch: usize) -> usize {
    if seq_len == 0 || batch == 0 || dataset.len() < 2 {
        return 0;
    }
    dataset.windows(seq_len).div_ceil(batch)
}

/// Batch `index`: windows `index × batch .. (index + 1) × batch` of the
/// stream (fewer in the last batch), windows being the same `seq_len + 1`-token
/// cuts (or rows, with their targets' mask, for chat data) the training loader
/// uses, in order. Document starts come from the masks of packed row data, as
/// in training.
///
/// # Panics
/// If `index >= sequential_batch_count(dataset, seq_len, batch)`.
pub fn sequential_batch(
    dataset: &TokenDataset,
    seq_len: usize,
    batch: usize,
    index: usize,
) -> Batch {
    sequential_batch_with_document_mask(dataset, seq_len, batch, index, None)
}

/// `sequential_batch`, with a plain stream cut into documents after each
/// `eos_id` when given, as `Loader::with_document_mask` cuts training batches.
///
/// # Panics
/// As `sequential_batch`.
pub fn sequential_batch_with_document_mask(
    dataset: &TokenDataset,
    seq_len: usize,
    batch: usize,
    index: usize,
    eos_id: Option<u32>,
) -> Batch {
    let count = sequential_batch_count(dataset, seq_len, batch);
    assert!(
        index < count,
        "validation batch {index} requested, only {count} of {batch} × {seq_len} tokens fit"
    );
    let windows = index * batch..((index + 1) * batch).min(dataset.windows(seq_len));
    let mut reader = WindowReader::new(seq_len, eos_id);
    let mut out = reader.empty_batch(std::iter::once(dataset), windows.len());
    for w in windows {
        reader.push(dataset, w, &mut out);
    }
    out
}
