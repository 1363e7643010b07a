//! The additive causal mask of the reference attention, made once per shape and device and kept
//! there: building seq² floats on the host and uploading them at every layer of every
//! micro-batch cost a host pass and a transfer per call on the GPU backends.

use burn::prelude::*;
use burn::tensor::DType;
use std::any::{Any, TypeId};
use std::sync::Mutex;

/// Masks kept: a training run uses one or two shapes (train, eval); generation without a KV
/// cache asks for a new one per token, which must not pile up.
const KEPT: usize = 4;

type Key = (TypeId, String, usize, usize);

static CACHE: Mutex<Vec<(Key, Box<dyn Any + Send>)>> = Mutex::new(Vec::new());

/// [1, q·k] in f32: 0 where query `i` sees key `j` (j ≤ i + k − q), −∞ elsewhere; one row that
/// backends broadcast over every matrix without expanding it.
pub fn causal<B: Backend>(q: usize, k: usize, device: &B::Device) -> Tensor<B, 2> {
    let key = (TypeId::of::<B>(), format!("{device:?}"), q, k);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = cache.iter().position(|(k, _)| *k == key) {
        let entry = cache.remove(at);
        let mask = entry.1.downcast_ref::<Tensor<B, 2>>().cloned();
        cache.push(entry);
        if let Some(mask) = mask {
            return mask;
        }
    }
    let mask = build::<B>(q, k, device);
    if cache.len() == KEPT {
        cache.remove(0);
    }
    cache.push((key, Box::new(mask.clone())));
    mask
}

fn build<B: Backend>(q: usize, k: usize, device: &B::Device) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..q * k)
        .map(|i| match i % k > i / k + (k - q) {
            true => f32::NEG_INFINITY,
            false => 0.0,
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [1, q * k]), (device, DType::F32))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn a_cached_mask_is_the_one_built_for_its_shape() {
        let device = Default::default();
        for (q, k) in [(3, 5), (4, 4), (3, 5), (1, 7), (2, 2), (6, 6), (3, 5)] {
            let got = super::causal::<B>(q, k, &device).into_data();
            let mut expected = vec![0.0f32; q * k];
            for i in 0..q {
                for j in i + k - q + 1..k {
                    expected[i * k + j] = f32::NEG_INFINITY;
                }
            }
            assert_eq!(got.to_vec::<f32>().unwrap(), expected, "{q}×{k}");
        }
    }
}
