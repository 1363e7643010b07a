//! AdamW moments as two flat f32 vectors over the trainable parameters in visit order, with the
//! step count: what the sharded optimizer holds a block of and gathers for a checkpoint, and
//! the form burn's per-parameter record converts to and from, so a checkpoint of either kind
//! resumes a run of either kind at any world size.

use crate::grads::download;
use crate::optim::AdamW;
use crate::zero::Layout;
use anyhow::{anyhow, bail, ensure, Context, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{AdamWState, AdaptiveMomentumState, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

/// burn's record of the replicated optimizer: per parameter id, its AdamW state.
pub type AdamRecord<B, M> = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

pub(crate) const FORMAT: &str = "fucina-adamw-flat";

#[derive(Debug, Clone, PartialEq)]
pub struct FlatMoments {
    /// AdamW steps taken (the bias correction's t).
    pub time: usize,
    pub moment_1: Vec<f32>,
    pub moment_2: Vec<f32>,
}

impl FlatMoments {
    pub fn zeros(n: usize) -> Self {
        Self {
            time: 0,
            moment_1: vec![0.0; n],
            moment_2: vec![0.0; n],
        }
    }

    pub fn bytes(&self) -> u64 {
        ((self.moment_1.len() + self.moment_2.len()) * std::mem::size_of::<f32>()) as u64
    }

    /// A safetensors file: tensors `moment_1` and `moment_2` of shape [n], and in the metadata
    /// the step count and the parameter shapes they were made for.
    pub fn to_safetensors(&self, layout: &Layout) -> Result<Vec<u8>> {
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (m, v) = (bytes(&self.moment_1), bytes(&self.moment_2));
        let n = self.moment_1.len();
        let views = [
            (
                "moment_1",
                safetensors::tensor::TensorView::new(Dtype::F32, vec![n], &m)?,
            ),
            (
                "moment_2",
                safetensors::tensor::TensorView::new(Dtype::F32, vec![n], &v)?,
            ),
        ];
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("time".to_string(), self.time.to_string()),
            ("shapes".to_string(), serde_json::to_string(&layout.0)?),
        ]);
        safetensors::serialize(views, Some(metadata)).context("cannot serialise AdamW moments")
    }

    /// Reads what `to_safetensors` wrote, refusing moments made for other parameter shapes.
    pub fn from_safetensors(bytes: &[u8], layout: &Layout) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("not a safetensors file: {e}"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            meta.get(key)
                .ok_or_else(|| anyhow!("no {key:?} in the metadata of the AdamW moments"))
        };
        ensure!(
            field("format")? == FORMAT,
            "AdamW moments of format {:?}, expected {FORMAT:?}",
            field("format")?
        );
        let time: usize = field("time")?
            .parse()
            .context("the step count of the AdamW moments")?;
        let shapes: Vec<Vec<usize>> = serde_json::from_str(field("shapes")?)
            .context("the parameter shapes of the AdamW moments")?;
        if shapes != layout.0 {
            let saved = Layout(shapes);
            bail!(
                "the optimizer state holds AdamW moments for {} trainable tensors ({} values), \
                 this run trains {} ({} values): it belongs to another model or [lora] setting",
                saved.0.len(),
                saved.len(),
                layout.0.len(),
                layout.len()
            );
        }
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            let view = tensors
                .tensor(name)
                .map_err(|e| anyhow!("tensor {name} of the AdamW moments: {e}"))?;
            ensure!(
                view.dtype() == Dtype::F32 && view.shape() == [layout.len()],
                "tensor {name} of the AdamW moments is {:?} {:?}, expected F32 [{}]",
                view.dtype(),
                view.shape(),
                layout.len()
            );
            let values = view.data().chunks_exact(4);
            Ok(values
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        Ok(Self {
            time,
            moment_1: read("moment_1")?,
            moment_2: read("moment_2")?,
        })
    }

    /// Flattens burn's record in `model`'s visit order. Parameters without state (none has
    /// any before the first step) count as zeros; all must have taken the same number of steps.
    pub fn from_record<B: AutodiffBackend, M: AutodiffModule<B>>(
        model: &M,
        record: AdamRecord<B, M>,
    ) -> Result<Self> {
        let mut visitor = FromRecord::<B, M> {
            record,
            out: FlatMoments::zeros(0),
            times: Vec::new(),
            stateless: 0,
            error: None,
        };
        model.visit(&mut visitor);
        if let Some(e) = visitor.error {
            return Err(e);
        }
        let mut times = visitor.times;
        times.sort_unstable();
        times.dedup();
        match (times.as_slice(), visitor.stateless) {
            ([], _) => Ok(visitor.out),
            ([t], 0) => Ok(FlatMoments {
                time: *t,
                ..visitor.out
            }),
            _ => bail!(
                "the parameters' AdamW states have taken different numbers of steps \
                 ({times:?}, {} without state): they cannot be flattened into one",
                visitor.stateless
            ),
        }
    }

    /// burn's record for `model`'s trainable parameters (empty before the first step, as burn's
    /// own is), each moment in its parameter's dtype.
    pub fn into_record<B: AutodiffBackend, M: AutodiffModule<B>>(
        self,
        model: &M,
        layout: &Layout,
    ) -> Result<AdamRecord<B, M>> {
        let total = layout.len();
        ensure!(
            self.moment_1.len() == total && self.moment_2.len() == total,
            "optimizer state of {} values for {total} trainable values",
            self.moment_1.len()
        );
        let mut visitor = IntoRecord::<B, M> {
            record: Default::default(),
            moments: self,
            offset: 0,
        };
        if visitor.moments.time > 0 {
            model.visit(&mut visitor);
        }
        Ok(visitor.record)
    }
}

/// The AdamW state of one D-dimensional parameter, refusing a record saved for another rank
/// (on which burn's `into_state` panics).
pub fn state_of<B: AutodiffBackend, const D: usize>(
    record: AdaptorRecord<AdamW, B>,
) -> Result<AdamWState<B::InnerBackend, D>> {
    let rank = record_rank(&record);
    ensure!(
        rank == D,
        "the AdamW state of a {D}-dimensional parameter was saved for {rank} dimensions"
    );
    Ok(record.into_state())
}

fn record_rank<B: AutodiffBackend>(record: &AdaptorRecord<AdamW, B>) -> usize {
    let AdaptorRecord::V1(v1) = record;
    match v1 {
        AdaptorRecordV1::Rank0(_) => 0,
        AdaptorRecordV1::Rank1(_) => 1,
        AdaptorRecordV1::Rank2(_) => 2,
        AdaptorRecordV1::Rank3(_) => 3,
        AdaptorRecordV1::Rank4(_) => 4,
        AdaptorRecordV1::Rank5(_) => 5,
        AdaptorRecordV1::Rank6(_) => 6,
        AdaptorRecordV1::Rank7(_) => 7,
        AdaptorRecordV1::Rank8(_) => 8,
    }
}

struct FromRecord<B: AutodiffBackend, M: AutodiffModule<B>> {
    record: AdamRecord<B, M>,
    out: FlatMoments,
    times: Vec<usize>,
    stateless: usize,
    error: Option<anyhow::Error>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> ModuleVisitor<B> for FromRecord<B, M> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() || self.error.is_some() {
            return;
        }
        let n: usize = value.dims().iter().product();
        let Some(record) = self.record.remove(&param.id) else {
            self.stateless += 1;
            let out = &mut self.out;
            out.moment_1.resize(out.moment_1.len() + n, 0.0);
            out.moment_2.resize(out.moment_2.len() + n, 0.0);
            return;
        };
        let momentum = match state_of::<B, D>(record) {
            Ok(state) => state.momentum,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.times.push(momentum.time);
        let moments = [momentum.moment_1, momentum.moment_2].map(|m| download(m.reshape([n])));
        match moments {
            [Ok(m), Ok(v)] if m.len() == n && v.len() == n => {
                self.out.moment_1.extend(m);
                self.out.moment_2.extend(v);
            }
            [Err(e), _] | [_, Err(e)] => self.error = Some(e),
            _ => self.error = Some(anyhow!("AdamW moments of the wrong size")),
        }
    }
}

struct IntoRecord<B: AutodiffBackend, M: AutodiffModule<B>> {
    record: AdamRecord<B, M>,
    moments: FlatMoments,
    offset: usize,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> ModuleVisitor<B> for IntoRecord<B, M> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let dims = value.dims();
        let n: usize = dims.iter().product();
        let range = self.offset..self.offset + n;
        self.offset += n;
        let (device, dtype) = (value.device(), value.dtype());
        let tensor = |flat: &[f32]| {
            let data = TensorData::new(flat[range.clone()].to_vec(), dims);
            Tensor::<B::InnerBackend, D>::from_data(data, (&device, dtype))
        };
        let momentum = AdaptiveMomentumState::new(
            self.moments.time,
            tensor(&self.moments.moment_1),
            tensor(&self.moments.moment_2),
        );
        let state = AdamWState::new(momentum);
        self.record
            .insert(param.id, AdaptorRecord::from_state::<D>(state));
    }
}

#[cfg(test)]
mod tests {
    use super::FlatMoments;
    use crate::zero::Layout;

    #[test]
    fn moments_round_trip_and_refuse_another_layout() {
        let layout = Layout(vec![vec![2, 3], vec![3]]);
        let moments = FlatMoments {
            time: 7,
            moment_1: (0..9).map(|i| i as f32 * 0.5 - 1.0).collect(),
            moment_2: (0..9).map(|i| (i * i) as f32 * 1e-3).collect(),
        };
        let bytes = moments.to_safetensors(&layout).unwrap();
        assert_eq!(
            FlatMoments::from_safetensors(&bytes, &layout).unwrap(),
            moments
        );

        // The same number of values in other shapes is another model all the same.
        let other = Layout(vec![vec![3, 2], vec![3]]);
        let error = FlatMoments::from_safetensors(&bytes, &other).unwrap_err();
        assert!(
            format!("{error:#}").contains("another model or [lora] setting"),
            "{error:#}"
        );
        let garbage = FlatMoments::from_safetensors(b"not a file", &layout).unwrap_err();
        assert!(format!("{garbage:#}").contains("not a safetensors file"));
    }
}
