//! Unshuffled batches for validation: the same windows in the same order at
//! every evaluation, so validation losses are comparable across steps.

use super::Batch;
use crate::dataset::TokenDataset;

/// How many full batches `sequential_batch` can produce.
pub fn sequential_batch_count(dataset: &TokenDataset, seq_len: usize, batch: usize) -> usize {
    if seq_len == 0 || batch == 0 || dataset.len() < 2 {
        return 0;
    }
    (dataset.len() - 1) / seq_len / batch
}

/// Batch `index`: windows `index × batch .. (index + 1) × batch` of the
/// stream, windows being the same `seq_len + 1`-token cuts the training
/// loader uses, in order.
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
    let mut out = Batch {
        inputs: Vec::with_capacity(batch * seq_len),
        targets: Vec::with_capacity(batch * seq_len),
    };
    let mut window = vec![0u32; seq_len + 1];
    for w in index * batch..(index + 1) * batch {
        dataset.read(w * seq_len, &mut window);
        out.inputs.extend_from_slice(&window[..seq_len]);
        out.targets.extend_from_slice(&window[1..]);
    }
    out
}
