//! `fucina bench hf`: an HF model directory's logits and loss on a backend, against the ones
//! transformers computed for it (`reference.safetensors` beside the weights, as written by
//! scripts/hf-fixtures.sh). Tells whether a backend computes the model right on this machine.

use crate::backend::{dispatch, BackendKind, BackendTask};
use crate::config::Precision;
use anyhow::{anyhow, bail, Context, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_model::hf::HfCheckpoint;
use safetensors::SafeTensors;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const REFERENCE_FILE: &str = "reference.safetensors";

/// Relative loss error allowed. f32: the fixtures' own bound (HF import matches to ~1e-7).
/// bf16 (mixed): the weights are rounded to 8 significant bits (relative error up to 2^-9 each),
/// and those errors add up through the layers; 1 % is what autocast's bf16 loss is usually
/// within against f32 on models this size, and far below what a wrong kernel gives (a
/// transposed or dropped term moves these fixtures' loss by 10 % or more).
pub fn tolerance(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => 1e-4,
        Precision::Bf16 | Precision::Bf16Pure => 1e-2,
    }
}

struct Reference {
    tokens: Vec<i64>,
    rows: usize,
    logits: Vec<f32>,
    loss: f64,
}

fn reference(dir: &Path) -> Result<Reference> {
    let path = dir.join(REFERENCE_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (the logits transformers computed for this model)",
            path.display()
        )
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let tensor = |name: &str| {
        st.tensor(name)
            .map_err(|e| anyhow!("{}: no tensor {name}: {e}", path.display()))
    };
    let tokens = tensor("tokens")?;
    let rows = tokens.shape()[0];
    let f32s = |name: &str| -> Result<Vec<f32>> {
        let t = tensor(name)?;
        if t.dtype() != safetensors::Dtype::F32 {
            bail!("{}: {name} is {:?}, not F32", path.display(), t.dtype());
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect())
    };
    Ok(Reference {
        tokens: tokens
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        rows,
        logits: f32s("logits")?,
        loss: f32s("loss")?[0] as f64,
    })
}

struct Check {
    dir: PathBuf,
    precision: Precision,
    reference: Reference,
}

impl BackendTask for Check {
    type Output = Result<(f64, f64)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let checkpoint = HfCheckpoint::open(&self.dir)?;
        let mut model = checkpoint.load::<B>(&device, false)?;
        if self.precision != Precision::F32 {
            model = crate::precision::cast_params(model, self.precision.compute_dtype());
        }
        let reference = &self.reference;
        let seq = reference.tokens.len() / reference.rows;
        let ids: Vec<i32> = reference.tokens.iter().map(|&t| t as i32).collect();
        let all =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [reference.rows, seq]), &device);
        let logits = model.forward(all.clone()).into_data().convert::<f32>();
        let logits = logits.as_slice::<f32>().map_err(|e| anyhow!("{e:?}"))?;
        if logits.len() != reference.logits.len() {
            bail!(
                "{} logits from the model, {} in {REFERENCE_FILE}",
                logits.len(),
                reference.logits.len()
            );
        }
        let max_diff = logits
            .iter()
            .zip(&reference.logits)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        let inputs = all.clone().slice([0..reference.rows, 0..seq - 1]);
        let targets = all.slice([0..reference.rows, 1..seq]);
        let loss = model.loss(inputs, targets).into_data().convert::<f32>();
        let loss = loss.as_slice::<f32>().map_err(|e| anyhow!("{e:?}"))?[0] as f64;
        Ok((loss, max_diff))
    }
}

/// The loss on the reference tokens and its error against transformers; an error when it is
/// outside `tolerance(precision)` (the JSON is printed either way).
pub fn check(dir: &Path, kind: BackendKind, precision: Precision) -> Result<Value> {
    let reference = reference(dir)?;
    let reference_loss = reference.loss;
    let task = Check {
        dir: dir.to_path_buf(),
        precision,
        reference,
    };
    let (loss, max_diff) = dispatch(kind, 0, task)??;
    let relative = (loss - reference_loss).abs() / reference_loss.abs();
    let tolerance = tolerance(precision);
    let ok = relative <= tolerance;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!(
        "{name} on {kind:?} in {}: loss {loss:.6} vs transformers' {reference_loss:.6} (relative {relative:.1e}, tolerance {tolerance:.0e}), logits max |diff| {max_diff:.2e}: {}",
        precision.name(),
        if ok { "ok" } else { "OUTSIDE TOLERANCE" }
    );
    Ok(json!({
        "model": name,
        "backend": kind.name(),
        "precision": precision.name(),
        "loss": loss,
        "reference_loss": reference_loss,
        "relative": relative,
        "tolerance": tolerance,
        "logits_max_abs_diff": max_diff,
        "ok": ok,
    }))
}
