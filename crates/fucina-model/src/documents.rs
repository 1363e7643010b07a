//! Documents packed end to end in the rows of a batch (packed SFT, `data.document_mask`): each
//! token attends only to the tokens of its own document up to itself (block-diagonal causal
//! attention) and takes the rotary position of its place in that document, so a packed row
//! computes what its documents would compute one per row.

use anyhow::{bail, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use std::sync::Arc;

/// Where the tokens of a batch sit.
#[derive(Debug)]
pub enum Span<'a, B: Backend> {
    /// Each row is one sequence at positions `start..start + seq`, attending causally.
    From(usize),
    /// Each row holds documents packed end to end.
    Packed(&'a Documents<B>),
}

// By hand: derived, they would ask `B: Copy`.
impl<B: Backend> Clone for Span<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Span<'_, B> {}

impl<B: Backend> Span<'_, B> {
    pub fn documents(&self) -> Option<&Documents<B>> {
        match self {
            Span::From(_) => None,
            Span::Packed(docs) => Some(docs),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Documents<B: Backend> {
    /// [batch·seq]: for each token, the index within its row of its document's first token.
    starts: Arc<[u32]>,
    batch: usize,
    seq: usize,
    /// `starts` on the device, [batch, seq] in f32 (exact below 2²⁴): what the attention
    /// kernels and the reference mask read. Float, so it passes through fusion's custom
    /// operations beside q, k and v.
    starts_tensor: Tensor<B, 2>,
    /// [batch·seq]: each token's position in its document, i − start(i).
    positions: Tensor<B, 1, Int>,
}

impl<B: Backend> Documents<B> {
    /// `starts` as described on the field, row-major over `batch` rows of `seq` tokens. Each
    /// row's first token starts a document, and a token either starts one (`starts[i] == i`)
    /// or continues its predecessor's.
    pub fn new(starts: Vec<u32>, batch: usize, seq: usize, device: &B::Device) -> Result<Self> {
        if starts.len() != batch * seq {
            bail!(
                "document starts: {} values for {batch} rows of {seq} tokens",
                starts.len()
            );
        }
        for (r, row) in starts.chunks(seq.max(1)).enumerate() {
            for (i, &s) in row.iter().enumerate() {
                let ok = match i {
                    0 => s == 0,
                    _ => s as usize == i || s == row[i - 1],
                };
                if !ok {
                    bail!("document starts of row {r}: token {i} says its document starts at {s}");
                }
            }
        }
        let positions: Vec<i64> = (starts.iter().enumerate())
            .map(|(i, &s)| (i % seq - s as usize) as i64)
            .collect();
        let as_f32: Vec<f32> = starts.iter().map(|&s| s as f32).collect();
        Ok(Self {
            starts_tensor: Tensor::from_data(
                TensorData::new(as_f32, [batch, seq]),
                (device, DType::F32),
            ),
            positions: Tensor::from_data(TensorData::new(positions, [batch * seq]), device),
            starts: starts.into(),
            batch,
            seq,
        })
    }

    pub fn starts(&self) -> &[u32] {
        &self.starts
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.batch, self.seq)
    }

    pub fn starts_tensor(&self) -> Tensor<B, 2> {
        self.starts_tensor.clone()
    }

    pub fn positions(&self) -> Tensor<B, 1, Int> {
        self.positions.clone()
    }

    /// How many documents the rows hold.
    pub fn count(&self) -> usize {
        (self.starts.iter().enumerate())
            .filter(|&(i, &s)| i % self.seq == s as usize)
            .count()
    }
}

impl<B: AutodiffBackend> Documents<B> {
    /// The same documents for the inner backend (no autodiff).
    pub fn inner(&self) -> Documents<B::InnerBackend> {
        Documents {
            starts: self.starts.clone(),
            batch: self.batch,
            seq: self.seq,
            starts_tensor: self.starts_tensor.clone().inner(),
            positions: self.positions.clone().inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn positions_restart_at_each_document_and_at_each_row() {
        let starts = vec![0, 0, 2, 2, 0, 1, 2, 2];
        let docs = Documents::<Flex>::new(starts, 2, 4, &Default::default()).unwrap();
        let positions = docs
            .positions()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>();
        let positions = positions.unwrap();
        assert_eq!(positions, vec![0, 1, 0, 1, 0, 0, 0, 1]);
        assert_eq!(docs.count(), 5);
    }

    #[test]
    fn starts_that_skip_back_or_forward_are_refused() {
        let device = Default::default();
        for bad in [
            vec![0, 0, 1, 0],
            vec![1, 1, 2, 2],
            vec![0, 0, 0, 2],
            vec![0, 0, 3, 3],
        ] {
            assert!(
                Documents::<Flex>::new(bad.clone(), 1, 4, &device).is_err(),
                "{bad:?}"
            );
        }
        assert!(Documents::<Flex>::new(vec![0; 3], 1, 4, &device).is_err());
    }
}
