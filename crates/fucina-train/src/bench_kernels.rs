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
    what: Attend,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Attend {
    /// The model's attention: the kernel the dispatch picks for this backend.
    Model,
    /// burn's composed attention (`fused::reference`), forward and backward.
    Reference,
    /// burn's own attention operation (on cubecl backends cubek-attention's flash forward),
    /// forward only: it has no backward of its own.
    Burn,
}

/// burn's attention operation, causal, on `[batch, seq, heads, dim]` inputs: it wants the
/// heads first and as many key/value heads as query heads.
fn burn_attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, seq, heads, dim] = q.dims();
    let groups = heads / k.dims()[2];
    let repeat = |t: Tensor<B, 4>| {
        (t.unsqueeze_dim::<5>(3)
            .expand([batch, seq, heads / groups, groups, dim]))
        .reshape([batch, seq, heads, dim])
        .swap_dims(1, 2)
    };
    let options = burn::tensor::ops::AttentionModuleOptions {
        scale: Some(1.0),
        softcap: None,
        is_causal: true,
    };
    burn::tensor::module::attention(q.swap_dims(1, 2), repeat(k), repeat(v), None, None, options)
        .swap_dims(1, 2)
}

/// Bytes on `device` now, in tensors and reserved by cubecl's pools, where cubecl can tell
/// (GPU backends).
pub(crate) fn device_memory<B: Backend>(device: &B::Device) -> Option<(u64, u64)> {
    #[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
    return fused::device_memory(device).map(|m| (m.in_use, m.reserved));
    #[cfg(not(any(feature = "wgpu", feature = "cuda", feature = "rocm")))]
    {
        let _ = device;
        None
    }
}

/// TFLOP/s as people read them: GFLOP/s below one (a CPU, lavapipe).
fn rate(tflops: f64) -> String {
    match tflops >= 1.0 {
        true => format!("{tflops:.2} TFLOP/s"),
        false => format!("{:.1} GFLOP/s", tflops * 1e3),
    }
}

fn device_bytes<B: Backend>(device: &B::Device) -> Option<u64> {
    device_memory::<B>(device).map(|(in_use, _)| in_use)
}

impl BackendTask for Attention {
    /// Forward and forward+backward seconds, and the device bytes a forward keeps for its
    /// backward (where the device can tell).
    type Output = Result<(f64, f64, Option<u64>)>;

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
        type Op<B> = fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>;
        let attend: Op<B> = match self.what {
            Attend::Model => |q, k, v| fused::attention(q, k, v, None),
            Attend::Reference => |q, k, v| fused::reference::attention(q, k, v, None),
            Attend::Burn => {
                let [q, k, v] = [&q, &k, &v].map(|t| t.clone().inner());
                let forward = time(self.iters, || {
                    drop(burn_attention(q.clone(), k.clone(), v.clone()));
                    sync::<B>(&device)
                })?;
                return Ok((forward, f64::NAN, None));
            }
        };
        sync::<B>(&device)?;
        let before = device_bytes::<B>(&device);
        let y = attend(q.clone(), k.clone(), v.clone());
        sync::<B>(&device)?;
        // The output and what autodiff keeps to differentiate it.
        let held = device_bytes::<B>(&device)
            .zip(before)
            .map(|(a, b)| a.saturating_sub(b));
        drop(y);
        let forward = time(self.iters, || {
            let y = attend(q.clone(), k.clone(), v.clone());
            drop(y);
            sync::<B>(&device)
        })?;
        let total = time(self.iters, || {
            let y = attend(q.clone(), k.clone(), v.clone());
            let grads = (y * dy.clone()).sum().backward();
            for x in [&q, &k, &v] {
                if x.grad(&grads).is_none() {
                    bail!("attention's backward gave no gradient for an input");
                }
            }
            drop(grads);
            sync::<B>(&device)
        })?;
        Ok((forward, total, held))
    }
}

/// Times the model's attention (the kernel the dispatch picks for this backend) and, with
/// `compare`, burn's composed attention and burn's own (forward-only) attention operation on
/// the same inputs, so one run prints their ratios.
pub fn attention(
    kind: BackendKind,
    shape: AttentionShape,
    precision: Precision,
    iters: usize,
    compare: bool,
) -> Result<Value> {
    let AttentionShape {
        heads, kv_heads, ..
    } = shape;
    if iters == 0 || kv_heads == 0 || heads % kv_heads != 0 || shape.seq == 0 {
        bail!("--iters and --seq must be positive and --heads a multiple of --kv-heads");
    }
    let run = |what| {
        let task = Attention {
            shape,
            precision,
            iters,
            what,
        };
        dispatch(kind, 0, task)?
    };
    let flops = shape.forward_flops();
    let timing = |(forward, total, held): (f64, f64, Option<u64>)| {
        let (forward_tflops, total_tflops) = (flops / forward / 1e12, 3.5 * flops / total / 1e12);
        let held_line = held
            .map(|b| {
                format!(
                    ", {:.1} MiB kept for the backward",
                    b as f64 / (1 << 20) as f64
                )
            })
            .unwrap_or_default();
        let line = format!(
            "forward {:.3} ms ({}), forward+backward {:.3} ms ({}){held_line}",
            forward * 1e3,
            rate(forward_tflops),
            total * 1e3,
            rate(total_tflops)
        );
        let value = json!({
            "forward_ms": forward * 1e3,
            "forward_backward_ms": total * 1e3,
            "forward_tflops": forward_tflops,
            "forward_backward_tflops": total_tflops,
            "held_for_backward_bytes": held,
        });
        (line, value)
    };
    let kernel = run(Attend::Model)?;
    let (line, value) = timing(kernel);
    eprintln!(
        "bench attention: {kind:?} {}, batch {} × seq {} × {} heads ({} kv) × {}: {}",
        precision.name(),
        shape.batch,
        shape.seq,
        heads,
        kv_heads,
        shape.head_dim,
        line
    );
    let mut report = json!({
        "backend": kind.name(),
        "precision": precision.name(),
        "batch": shape.batch, "seq": shape.seq, "heads": heads, "kv_heads": kv_heads,
        "head_dim": shape.head_dim,
    });
    for (key, v) in value.as_object().expect("an object") {
        report[key] = v.clone();
    }
    if compare {
        let reference = run(Attend::Reference)?;
        let (line, value) = timing(reference);
        let (forward_x, total_x) = (reference.0 / kernel.0, reference.1 / kernel.1);
        eprintln!(
            "bench attention: burn's composed attention: {line}; the kernel is {forward_x:.2}x (forward), {total_x:.2}x (forward+backward) as fast"
        );
        report["reference"] = value;
        report["speedup_forward"] = json!(forward_x);
        report["speedup_forward_backward"] = json!(total_x);
        let burn = run(Attend::Burn)?.0;
        eprintln!(
            "bench attention: burn's attention operation (forward only): {:.3} ms ({}); the kernel's forward is {:.2}x as fast",
            burn * 1e3,
            rate(flops / burn / 1e12),
            burn / kernel.0
        );
        report["burn_forward_ms"] = json!(burn * 1e3);
        report["burn_forward_tflops"] = json!(flops / burn / 1e12);
    }
    Ok(report)
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
        "bench matmul: {kind:?} {} {size}×{size}×{size}: {:.3} ms, {}",
        precision.name(),
        seconds * 1e3,
        rate(tflops)
    );
    Ok(json!({
        "backend": kind.name(),
        "precision": precision.name(),
        "size": size,
        "ms": seconds * 1e3,
        "tflops": tflops,
    }))
}
