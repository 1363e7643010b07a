//! `fucina bench attention` and `fucina bench matmul`: the time and FLOP/s of the model's
//! causal attention (forward + backward, through the same dispatch as training) and of a
//! square matmul, on any backend. FLOPs follow FlashAttention's convention, so figures compare
//! with PyTorch's SDPA measured the same way (scripts/gpu_check_torch.py): causal forward
//! 2·b·h·s²·d (half of 4·b·h·s²·d), backward 2.5 times the forward.

use crate::backend::{dispatch, BackendKind, BackendTask};
use crate::bench::median;
use crate::config::Precision;
use anyhow::{anyhow, bail, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use fucina_model::fused;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.batch * self.heads * self.seq * self.seq * self.head_dim) as f64
    }
}

fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow!("the device failed: {e:?}"))
}

/// Times `op` `iters` times after two warm-up runs (kernel compilation, autotuning).
fn time(iters: usize, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        op()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        op()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

struct Attention {
    shape: AttentionShape,
    precision: Precision,
    iters: usize,
}

impl BackendTask for Attention {
    type Output = Result<(f64, f64)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let AttentionShape {
            batch,
            seq,
            heads,
            kv_heads,
            head_dim,
        } = self.shape;
        let dtype = self.precision.compute_dtype();
        let input = |h: usize, scale: f64| {
            let x =
                Tensor::<B, 4>::random([batch, seq, h, head_dim], Distribution::Default, &device);
            fused::cast(x.mul_scalar(scale), dtype).require_grad()
        };
        let q = input(heads, 1.0 / (head_dim as f64).sqrt());
        let (k, v) = (input(kv_heads, 1.0), input(kv_heads, 1.0));
        let dy = fused::cast(
            Tensor::<B, 4>::random(
                [batch, seq, heads, head_dim],
                Distribution::Default,
                &device,
            ),
            dtype,
        );
        let forward = time(self.iters, || {
            let y = fused::attention(q.clone(), k.clone(), v.clone());
            drop(y);
            sync::<B>(&device)
        })?;
        let total = time(self.iters, || {
            let y = fused::attention(q.clone(), k.clone(), v.clone());
            let grads = (y * dy.clone()).sum().backward();
            for x in [&q, &k, &v] {
                if x.grad(&grads).is_none() {
                    bail!("attention's backward gave no gradient for an input");
                }
            }
            drop(grads);
            sync::<B>(&device)
        })?;
        Ok((forward, total))
    }
}

pub fn attention(
    kind: BackendKind,
    shape: AttentionShape,
    precision: Precision,
    iters: usize,
) -> Result<Value> {
    let AttentionShape {
        heads, kv_heads, ..
    } = shape;
    if iters == 0 || kv_heads == 0 || heads % kv_heads != 0 || shape.seq == 0 {
        bail!("--iters and --seq must be positive and --heads a multiple of --kv-heads");
    }
    let (forward, total) = dispatch(
        kind,
        0,
        Attention {
            shape,
            precision,
            iters,
        },
    )??;
    let flops = shape.forward_flops();
    let (forward_tflops, total_tflops) = (flops / forward / 1e12, 3.5 * flops / total / 1e12);
    eprintln!(
        "bench attention: {kind:?} {}, batch {} × seq {} × {} heads ({} kv) × {}: forward {:.3} ms ({forward_tflops:.2} TFLOP/s), forward+backward {:.3} ms ({total_tflops:.2} TFLOP/s)",
        precision.name(),
        shape.batch,
        shape.seq,
        heads,
        kv_heads,
        shape.head_dim,
        forward * 1e3,
        total * 1e3
    );
    Ok(json!({
        "backend": kind.name(),
        "precision": precision.name(),
        "batch": shape.batch, "seq": shape.seq, "heads": heads, "kv_heads": kv_heads,
        "head_dim": shape.head_dim,
        "forward_ms": forward * 1e3,
        "forward_backward_ms": total * 1e3,
        "forward_tflops": forward_tflops,
        "forward_backward_tflops": total_tflops,
    }))
}

struct Matmul {
    size: usize,
    precision: Precision,
    iters: usize,
}

impl BackendTask for Matmul {
    type Output = Result<f64>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let n = self.size;
        let dtype = self.precision.compute_dtype();
        let make = || {
            let x = Tensor::<B::InnerBackend, 2>::random([n, n], Distribution::Default, &device);
            fused::cast(x, dtype)
        };
        let (a, b) = (make(), make());
        time(self.iters, || {
            drop(a.clone().matmul(b.clone()));
            sync::<B>(&device)
        })
    }
}

pub fn matmul(kind: BackendKind, size: usize, precision: Precision, iters: usize) -> Result<Value> {
    if iters == 0 || size == 0 {
        bail!("--iters and --size must be positive");
    }
    let seconds = dispatch(
        kind,
        0,
        Matmul {
            size,
            precision,
            iters,
        },
    )??;
    let tflops = 2.0 * (size as f64).powi(3) / seconds / 1e12;
    eprintln!(
        "bench matmul: {kind:?} {} {size}×{size}×{size}: {:.3} ms, {tflops:.2} TFLOP/s",
        precision.name(),
        seconds * 1e3
    );
    Ok(json!({
        "backend": kind.name(),
        "precision": precision.name(),
        "size": size,
        "ms": seconds * 1e3,
        "tflops": tflops,
    }))
}
