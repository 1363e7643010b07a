//! Reading and replacing the weights of a `Llama` in PyTorch's layout. burn's Linear stores
//! [in, out], PyTorch [out, in]: the transposition happens here, on the host, so parameters
//! stay contiguous on the device.

use super::names::Part;
use crate::model::Llama;
use anyhow::{bail, Result};
use burn::module::Param;
use burn::prelude::*;

enum Slot<L, M, V> {
    /// A Linear weight: PyTorch [out, in], burn [in, out].
    Linear(L),
    /// Same layout on both sides (the embedding).
    Matrix(M),
    Vector(V),
}

/// The weight `part` names in `model`, borrowed shared or (with `mut`) exclusively.
macro_rules! slot {
    ($model:ident, $part:expr $(, $m:tt)?) => {{
        let i = match $part {
            Part::InputNorm(i)
            | Part::Q(i)
            | Part::K(i)
            | Part::V(i)
            | Part::O(i)
            | Part::PostNorm(i)
            | Part::Gate(i)
            | Part::Up(i)
            | Part::Down(i) => Some(i),
            _ => None,
        };
        if i.is_some_and(|i| i >= $model.layers.len()) {
            bail!("the model has only {} layers", $model.layers.len());
        }
        match $part {
            Part::Embed => Slot::Matrix(&$($m)? $model.embed_tokens.weight),
            Part::FinalNorm => Slot::Vector(&$($m)? $model.norm.gamma),
            Part::Head => match &$($m)? $model.lm_head {
                Some(head) => Slot::Linear(head),
                None => bail!("the model's head is tied to the embedding"),
            },
            Part::InputNorm(i) => Slot::Vector(&$($m)? $model.layers[i].input_layernorm.gamma),
            Part::PostNorm(i) => {
                Slot::Vector(&$($m)? $model.layers[i].post_attention_layernorm.gamma)
            }
            Part::Q(i) => Slot::Linear(&$($m)? $model.layers[i].self_attn.q_proj),
            Part::K(i) => Slot::Linear(&$($m)? $model.layers[i].self_attn.k_proj),
            Part::V(i) => Slot::Linear(&$($m)? $model.layers[i].self_attn.v_proj),
            Part::O(i) => Slot::Linear(&$($m)? $model.layers[i].self_attn.o_proj),
            Part::Gate(i) => Slot::Linear(&$($m)? $model.layers[i].mlp.gate_proj),
            Part::Up(i) => Slot::Linear(&$($m)? $model.layers[i].mlp.up_proj),
            Part::Down(i) => Slot::Linear(&$($m)? $model.layers[i].mlp.down_proj),
        }
    }};
}

/// Replaces one weight with `values` given in PyTorch's layout `shape`. The parameter keeps its
/// id; the old value, never initialised if it was lazy, is dropped.
pub(crate) fn set<B: Backend>(
    model: &mut Llama<B>,
    part: Part,
    values: Vec<f32>,
    shape: &[usize],
    device: &B::Device,
) -> Result<()> {
    match (slot!(model, part, mut), shape) {
        (Slot::Linear(linear), &[out, inp]) => {
            let data = TensorData::new(transpose(&values, out, inp), [inp, out]);
            replace(&mut linear.weight, data, device);
        }
        (Slot::Matrix(param), &[rows, cols]) => {
            replace(param, TensorData::new(values, [rows, cols]), device);
        }
        (Slot::Vector(param), &[n]) => replace(param, TensorData::new(values, [n]), device),
        (_, shape) => bail!("{part:?} cannot take a tensor of shape {shape:?}"),
    }
    Ok(())
}

fn replace<B: Backend, const D: usize>(
    param: &mut Param<Tensor<B, D>>,
    data: TensorData,
    device: &B::Device,
) {
    let id = param.id;
    // As `Param::from_data` does, so that GPU backends keep weights out of the scratch pool.
    *param = B::memory_persistent_allocations(device, data, |data| {
        Param::initialized(id, Tensor::from_data(data, device).require_grad())
    });
}

/// One weight's shape in PyTorch's layout, without touching (or initialising) its value.
pub(crate) fn shape<B: Backend>(model: &Llama<B>, part: Part) -> Result<Vec<usize>> {
    Ok(match slot!(model, part) {
        Slot::Linear(linear) => {
            let [inp, out] = linear.weight.lazy_shape().dims();
            vec![out, inp]
        }
        Slot::Matrix(param) => param.lazy_shape().to_vec(),
        Slot::Vector(param) => param.lazy_shape().to_vec(),
    })
}

/// One weight's values in PyTorch's layout, as f32.
pub(crate) fn values<B: Backend>(model: &Llama<B>, part: Part) -> Result<Vec<f32>> {
    let to_vec = |data: TensorData| -> Result<Vec<f32>> {
        data.convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read {part:?}: {e:?}"))
    };
    Ok(match slot!(model, part) {
        Slot::Linear(linear) => {
            let [inp, out] = linear.weight.lazy_shape().dims();
            transpose(&to_vec(linear.weight.val().into_data())?, inp, out)
        }
        Slot::Matrix(param) => to_vec(param.val().into_data())?,
        Slot::Vector(param) => to_vec(param.val().into_data())?,
    })
}

/// Row-major [rows, cols] → [cols, rows], in tiles so that both sides stay in cache.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}
