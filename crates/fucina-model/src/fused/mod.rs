//! The step's element-wise work as single operations: causal softmax, SwiGLU, RMSNorm and the
//! per-row negative log-likelihood. On the Flex CPU backend each runs as one fused kernel
//! forward and one backward (see `kernels`); burn composes them from 5–10 operations, each a
//! pass over memory with its own backward. On the cubecl backends (CUDA, ROCm, WGPU) attention
//! and RMSNorm are cubecl kernels (`flash`, `rms`; SwiGLU burn-fusion fuses by itself). Every
//! other backend gets the composition (`reference`), which the tests also use to check the
//! kernels.

#[cfg(feature = "flex")]
mod attention;
#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "cube")]
mod device;
#[cfg(feature = "cube")]
pub mod flash;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub mod kernels;
mod mask;
pub mod reference;
#[cfg(feature = "cube")]
mod rms;

use crate::documents::Documents;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
#[cfg(feature = "cube")]
pub use device::{device_memory, DeviceMemory};

/// `x` in `dtype`; no operation (and no autodiff node) when it already is.
pub fn cast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    match x.dtype() == dtype {
        true => x,
        false => x.cast(dtype),
    }
}

fn float<B: Backend, const D: usize>(x: Tensor<B, D>) -> B::FloatTensorPrimitive {
    x.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(x: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// softmax over the last dimension of `scores` [.., q, k], where query `i` sees keys
/// `0..=i + k − q` only (the rest get probability 0).
pub fn causal_softmax<B: Backend, const D: usize>(scores: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let scores = match flex::causal_softmax::<B>(float(scores)) {
        Ok(y) => return tensor(y),
        Err(x) => tensor(x),
    };
    reference::causal_softmax(scores)
}

/// Causal attention over q [batch, seq, heads, head_dim] (already scaled by 1/√head_dim) and
/// k, v [batch, seq, kv_heads, head_dim]; each key/value head serves `heads / kv_heads` query
/// heads. With `docs`, each query sees only the keys of its own document (block-diagonal
/// causal). Returns [batch, seq, heads, head_dim].
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    docs: Option<&Documents<B>>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let (q, k, v) =
        match flex::attention::<B>(float(q), float(k), float(v), docs.map(|d| d.starts())) {
            Ok(y) => return tensor(y),
            Err((q, k, v)) => (tensor(q), tensor(k), tensor(v)),
        };
    #[cfg(feature = "cube")]
    let (q, k, v) = match flash_enabled() {
        true => match flash_attention(q, k, v, docs) {
            Ok(y) => return y,
            Err(inputs) => inputs,
        },
        false => (q, k, v),
    };
    reference::attention(q, k, v, docs)
}

/// How many steps of the flash kernels' loops over the head dimension are unrolled on WGPU.
fn wgpu_lanes(dim: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|l| dim.is_multiple_of(*l))
        .unwrap_or(1)
}

/// Whether the flash kernels' rolled loops stay under lavapipe's 65,535 passes per invocation
/// (on `wgpu`; CUDA and ROCm have no such limit): the dq kernel's, the longest, makes about
/// `seq × (2 dim / lanes + 6)` (measured: seq 3,000 at head dimension 64 is the edge). WGPU
/// cannot tell lavapipe from a GPU, so longer inputs take the composed attention there.
pub fn flash_within_loop_limit(seq: usize, dim: usize, wgpu: bool) -> bool {
    !wgpu || seq * (2 * dim / wgpu_lanes(dim) + 6) <= 55_000
}

/// `FUCINA_FLASH=0` runs attention composed from burn operations (`reference`) on the GPU
/// backends too: what the flash kernels are measured against, and a way round a driver that
/// miscompiles them. Read once per process.
pub fn flash_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FUCINA_FLASH").map_or(true, |v| v.trim() != "0"))
}

#[cfg(feature = "cube")]
type Qkv<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);

/// `attention` by the flash kernels (`flash`) when `B` is a cubecl backend of this binary and
/// the kernels take these shapes and dtypes; else the inputs back.
#[cfg(feature = "cube")]
pub fn flash_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    docs: Option<&Documents<B>>,
) -> Result<Tensor<B, 4>, Qkv<B>> {
    let starts = docs.map(|d| float(d.starts_tensor()));
    match cube::attention::<B>(float(q), float(k), float(v), starts) {
        Ok(y) => Ok(tensor(y)),
        Err((q, k, v)) => Err((tensor(q), tensor(k), tensor(v))),
    }
}

/// silu(gate) ⊙ up.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (gate, up) = match flex::swiglu::<B>(float(gate), float(up)) {
        Ok(y) => return tensor(y),
        Err((g, u)) => (tensor(g), tensor(u)),
    };
    reference::swiglu(gate, up)
}

/// x / √(mean(x²) + eps) ⊙ gamma over the last dimension.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (x, gamma) = match flex::rms_norm::<B>(float(x), float(gamma), eps as f32) {
        Ok(y) => return tensor(y),
        Err((x, g)) => (tensor(x), tensor(g)),
    };
    #[cfg(feature = "cube")]
    let (x, gamma) = match rms_norm_kernel(x, gamma, eps) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    reference::rms_norm(x, gamma, eps)
}

/// `rms_norm` by the RMSNorm kernels (`rms`) when `B` is a cubecl backend of this binary and
/// the kernels take these shapes and dtypes; else the inputs back (gamma in x's dtype).
#[cfg(feature = "cube")]
#[allow(clippy::type_complexity)]
pub fn rms_norm_kernel<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, 1>)> {
    let gamma = cast(gamma, x.dtype());
    match cube::rms_norm::<B>(float(x), float(gamma), eps as f32) {
        Ok(y) => Ok(tensor(y)),
        Err((x, g)) => Err((tensor(x), tensor(g))),
    }
}

/// −log softmax(logits)[target] for each row of `logits` [rows, vocab], in f32 whatever the
/// dtype of the logits (bf16 logits are widened first, so Flex's fused kernel takes them).
pub fn nll<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let logits = cast(logits, DType::F32);
    // The targets come to the host only on the CPU backend: elsewhere that would be a sync.
    #[cfg(feature = "flex")]
    let logits = match flex::is_flex::<B>() {
        true => {
            let ids: Vec<usize> = (targets.to_data().convert::<i64>().iter::<i64>())
                .map(|t| usize::try_from(t).unwrap_or(usize::MAX))
                .collect();
            match flex::nll::<B>(float(logits), &ids) {
                Ok(y) => return tensor(y),
                Err(x) => tensor(x),
            }
        }
        false => logits,
    };
    reference::nll(logits, targets)
}
