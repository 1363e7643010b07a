//! Reading one window into a batch: its tokens, its targets' mask and, where
//! rows hold several documents, where each input token's document starts.

use super::Batch;
use crate::dataset::TokenDataset;

/// Whether `dataset`'s windows can hold several documents: row data whose
/// masks mark document starts (`prepare --pack`), or a plain stream cut at
/// `eos` (`Loader::with_document_mask`). Row data is never cut at EOS: a chat
/// template may put EOS inside a conversation, and padding is often EOS.
pub(crate) fn has_documents(dataset: &TokenDataset, eos: Option<u32>) -> bool {
    match dataset.has_mask() {
        true => dataset.marks_starts(),
        false => eos.is_some(),
    }
}

/// Reads windows of `seq_len + 1` tokens, reusing its buffers across rows.
pub(crate) struct WindowReader {
    seq_len: usize,
    eos: Option<u32>,
    window: Vec<u32>,
    flags: Vec<u8>,
}

impl WindowReader {
    pub fn new(seq_len: usize, eos: Option<u32>) -> Self {
        Self {
            seq_len,
            eos,
            window: vec![0; seq_len + 1],
            flags: vec![0; seq_len],
        }
    }

    /// An empty batch with room for `rows` rows, with a mask if the datasets
    /// have one (all or none do) and document starts if any has documents:
    /// the rows of the others are then one document each.
    pub fn empty_batch<'a>(
        &self,
        mut datasets: impl Iterator<Item = &'a TokenDataset>,
        rows: usize,
    ) -> Batch {
        let first = datasets.next().expect("a loader has at least one source");
        let tokens = rows * self.seq_len;
        let documents =
            has_documents(first, self.eos) || datasets.any(|d| has_documents(d, self.eos));
        Batch {
            inputs: Vec::with_capacity(tokens),
            targets: Vec::with_capacity(tokens),
            mask: first.has_mask().then(|| Vec::with_capacity(tokens)),
            starts: documents.then(|| Vec::with_capacity(tokens)),
        }
    }

    /// Appends window `w` of `dataset` to `batch` as one row.
    pub fn push(&mut self, dataset: &TokenDataset, w: usize, batch: &mut Batch) {
        self.push_shifted(dataset, 0, w, 0, batch);
    }

    /// Appends window `w` of `dataset`'s `windows` to `batch` as one row, its start moved
    /// `shift` tokens on along the ring of the tokens the windows cover (plain streams only;
    /// `windows` is read only when `shift` is not 0).
    pub fn push_shifted(
        &mut self,
        dataset: &TokenDataset,
        windows: usize,
        w: usize,
        shift: usize,
        batch: &mut Batch,
    ) {
        let seq_len = self.seq_len;
        let mut start = dataset.window_start(seq_len, w);
        if shift == 0 {
            dataset.read(start, &mut self.window);
        } else {
            debug_assert!(!dataset.has_mask(), "row data is never shifted");
            let ring = windows * seq_len;
            start = (start + shift) % ring;
            let first = (ring - start).min(seq_len + 1);
            dataset.read(start, &mut self.window[..first]);
            dataset.read(0, &mut self.window[first..]);
        }
        batch.inputs.extend_from_slice(&self.window[..seq_len]);
        batch.targets.extend_from_slice(&self.window[1..]);
        if let Some(out) = &mut batch.mask {
            dataset.read_mask(start + 1, &mut self.flags);
            out.extend_from_slice(&self.flags);
        }
        let Some(out) = &mut batch.starts else {
            return;
        };
        match (dataset.has_mask(), self.eos) {
            (true, _) => dataset.read_starts(start, &mut self.flags),
            (false, Some(eos)) => {
                self.flags[0] = 0;
                for (f, pair) in self.flags[1..].iter_mut().zip(self.window.windows(2)) {
                    *f = u8::from(pair[0] == eos);
                }
            }
            (false, None) => self.flags.fill(0),
        }
        let mut document = 0;
        for (i, &flag) in self.flags.iter().enumerate() {
            if flag != 0 {
                document = i as u32;
            }
            out.push(document);
        }
    }
}
