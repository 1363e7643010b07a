//! Unshuffled batches for validation: the same windows in the same order at
//! every evaluation, so validation losses are comparable across steps.

use super::{empty_batch, push_window, Batch};
use crate::dataset::TokenDataset;

/// How many full batches `sequential_batch` can produce. For row (chat)
/// data whose rows are not `seq_len + 1` long this is 0: call
/// `TokenDataset::check_seq_len` first for an error saying why.
pub fn sequential_batch_count(dataset: &TokenDataset, seq_len: usize, batch: usize) -> usize {
    if seq_len == 0 || batch == 0 || dataset.len() < 2 {
        return 0;
    }
    dataset.windows(seq_len) / batch
}

/// Batch `index`: windows `index × batch .. (index + 1) × batch` of the
/// stream, windows being the same `seq_len + 1`-token cuts (or rows, with
/// their targets' mask, for chat data) the training loader uses, in order.
///
/// # Panics
/// If `index >= sequential_batch_count(dataset, seq_len, batch)`.
pub fn sequential_batch(
    dataset: &TokenDataset,
    seq_len: usize,
    batch: usize,
    index: usize,
) -> Batch {
    let count = sequential_batch_count(dataset, seq_len, batch);
    assert!(
        index < count,
        "validation batch {index} requested, only {count} of {batch} × {seq_len} tokens fit"
    );
    let mut out = empty_batch(dataset, batch, seq_len);
    let (mut window, mut mask) = (Vec::new(), Vec::new());
    for w in index * batch..(index + 1) * batch {
        push_window(dataset, seq_len, w, &mut window, &mut mask, &mut out);
    }
    out
}
