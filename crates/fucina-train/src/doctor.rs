//! `fucina doctor`: whether a backend works on this machine — the run-time libraries it loads
//! (which names were tried), the device it opens, whether that device has bf16 tensors, and a
//! matmul checked against its known result. The first thing to run on a new GPU node.

use crate::backend::{dispatch, runtime_libraries, BackendKind, BackendTask};
use anyhow::{bail, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use serde_json::{json, Value};
use std::time::Instant;

struct Probe;

impl BackendTask for Probe {
    type Output = Result<Value>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let start = Instant::now();
        // Ones times ones is exact in f32 (sums of integers below 2^24): any other value is a
        // broken kernel, not rounding.
        let n = 256;
        let a = Tensor::<B, 2>::ones([n, n], &device);
        let product = a.clone().matmul(a).into_data().convert::<f32>();
        let first = start.elapsed().as_secs_f64();
        let values = product
            .as_slice::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let wrong = values.iter().filter(|&&v| v != n as f32).count();
        if wrong > 0 {
            bail!("a {n}×{n} matmul of ones gave {wrong} wrong values (expected {n} everywhere)");
        }
        Ok(json!({
            "burn_backend": B::name(&device),
            "device": format!("{device:?}"),
            "bf16": B::supports_dtype(&device, DType::BF16),
            "first_op_seconds": first,
        }))
    }
}

/// Prints what it finds to stderr and returns it as JSON; an error names what is missing.
pub fn doctor(kind: BackendKind) -> Result<Value> {
    let name = kind.name();
    let mut libraries = Vec::new();
    for library in runtime_libraries(kind) {
        let found = library.find().map(str::to_string);
        eprintln!(
            "{}: {} (tried {})",
            library.what,
            found.as_deref().unwrap_or("NOT FOUND"),
            library.names.join(", ")
        );
        libraries.push(json!({
            "what": library.what,
            "found": found,
            "tried": library.names,
        }));
    }
    if !kind.compiled() {
        bail!("backend {name} is not compiled into this binary; rebuild with `cargo build --release --features {name}`");
    }
    let mut report = dispatch(kind, 0, Probe)??;
    eprintln!(
        "backend {name} ({}) on {}: bf16 tensors {}, a 256×256 matmul correct (first operation {:.2} s, kernel compilation included)",
        report["burn_backend"].as_str().unwrap_or("?"),
        report["device"].as_str().unwrap_or("?"),
        if report["bf16"].as_bool() == Some(true) { "yes" } else { "no" },
        report["first_op_seconds"].as_f64().unwrap_or(0.0)
    );
    report["backend"] = json!(name);
    report["libraries"] = json!(libraries);
    Ok(report)
}
