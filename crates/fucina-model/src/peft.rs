//! LoRA adapters saved in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`),
//! so `PeftModel.from_pretrained(base, dir)` and vLLM's LoRA serving load them unchanged.

use crate::lora::{Lora, LoraSpec};
use crate::model::Llama;
use anyhow::{bail, Context, Result};
use burn::module::Param;
use burn::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub dir: PathBuf,
    pub tensors: usize,
    pub parameters: usize,
}

/// PEFT's name for an adapter matrix: the base model's module path under `base_model.model.`.
fn key(layer: usize, module: &str, matrix: &str) -> String {
    let parent = match module {
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => "self_attn",
    };
    format!("base_model.model.model.layers.{layer}.{parent}.{module}.{matrix}.weight")
}

/// Host values of `t` transposed: burn keeps [in, out], PyTorch's Linear [out, in].
fn transposed<B: Backend>(t: Tensor<B, 2>) -> (Vec<usize>, Vec<u8>) {
    let t = t.transpose();
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32");
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    (shape, bytes)
}

fn adapters<B: Backend>(model: &Llama<B>) -> Vec<(usize, &'static str, &Lora<B>)> {
    let mut out = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        let slots = [
            ("q_proj", &a.q_lora),
            ("k_proj", &a.k_lora),
            ("v_proj", &a.v_lora),
            ("o_proj", &a.o_lora),
            ("gate_proj", &m.gate_lora),
            ("up_proj", &m.up_lora),
            ("down_proj", &m.down_lora),
        ];
        for (name, slot) in slots {
            if let Some(lora) = slot {
                out.push((i, name, lora));
            }
        }
    }
    out
}

/// Writes the adapters of `model` to `out_dir` (new or empty, or replaced when `overwrite`).
/// `base_model` is recorded as `base_model_name_or_path`: the directory or hub name of the
/// model the adapters apply to.
pub fn save_adapter<B: Backend>(
    model: &Llama<B>,
    spec: &LoraSpec,
    base_model: &str,
    out_dir: &Path,
    overwrite: bool,
) -> Result<AdapterSummary> {
    let found = adapters(model);
    if found.is_empty() {
        bail!("the model has no LoRA adapters to save");
    }
    if out_dir.exists() && fs::read_dir(out_dir)?.next().is_some() && !overwrite {
        bail!(
            "{} exists and is not empty; choose a new directory or allow overwriting",
            out_dir.display()
        );
    }
    let mut tensors = Vec::new();
    for (layer, module, lora) in &found {
        tensors.push((key(*layer, module, "lora_A"), transposed(lora.lora_a.val())));
        tensors.push((key(*layer, module, "lora_B"), transposed(lora.lora_b.val())));
    }
    let parameters = tensors
        .iter()
        .map(|(_, (s, _))| s.iter().product::<usize>())
        .sum();
    let views = tensors
        .iter()
        .map(|(name, (shape, bytes))| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .with_context(|| format!("tensor {name}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut targets: Vec<&str> = found.iter().map(|(_, m, _)| *m).collect();
    targets.sort();
    targets.dedup();
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
    });

    let staging = out_dir.with_file_name(format!(
        ".{}.partial",
        out_dir
            .file_name()
            .map_or("adapter".into(), |n| n.to_string_lossy())
    ));
    let _ = fs::remove_dir_all(&staging);
    let written = (|| -> Result<()> {
        fs::create_dir_all(&staging)?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &staging.join(ADAPTER_WEIGHTS))?;
        fs::write(
            staging.join(ADAPTER_CONFIG),
            serde_json::to_string_pretty(&config)?,
        )?;
        if out_dir.exists() {
            fs::remove_dir_all(out_dir)?;
        }
        fs::rename(&staging, out_dir)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(e.context(format!("cannot write the adapter to {}", out_dir.display())));
    }
    Ok(AdapterSummary {
        dir: out_dir.to_path_buf(),
        tensors: tensors.len(),
        parameters,
    })
}

/// Loads a PEFT adapter directory (as `save_adapter` or `peft` writes it) into `model`, adding
/// adapters where it has them: to continue training it, merge it, or check it.
pub fn load_adapter<B: Backend>(
    model: Llama<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<(Llama<B>, LoraSpec)> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let text = fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let spec =
        spec_from_config(&config).with_context(|| format!("in {}", config_path.display()))?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut model = model.with_lora(&spec, 0, device);
    let mut used = 0;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
        let slots = [
            ("q_proj", &mut a.q_lora),
            ("k_proj", &mut a.k_lora),
            ("v_proj", &mut a.v_lora),
            ("o_proj", &mut a.o_lora),
            ("gate_proj", &mut m.gate_lora),
            ("up_proj", &mut m.up_lora),
            ("down_proj", &mut m.down_lora),
        ];
        for (name, slot) in slots {
            let Some(lora) = slot else { continue };
            let read = |matrix: &str, want: [usize; 2]| -> Result<Tensor<B, 2>> {
                let key = key(i, name, matrix);
                let view = tensors
                    .tensor(&key)
                    .with_context(|| format!("{} has no tensor {key}", path.display()))?;
                let (rows, cols) = (want[1], want[0]);
                if view.shape() != [rows, cols] {
                    bail!(
                        "{key} in {} has shape {:?}, expected [{rows}, {cols}]",
                        path.display(),
                        view.shape()
                    );
                }
                let values = crate::hf::HfDtype::from_safetensors(view.dtype())
                    .with_context(|| format!("{key}: unsupported dtype {:?}", view.dtype()))?
                    .decode(view.data());
                let t = Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), device);
                Ok(t.transpose())
            };
            let a_dims = lora.lora_a.dims();
            let b_dims = lora.lora_b.dims();
            let a = read("lora_A", a_dims)?;
            let b = read("lora_B", b_dims)?;
            // Trainable, so a loaded adapter can be trained further.
            lora.lora_a = Param::initialized(lora.lora_a.id, a.set_require_grad(true));
            lora.lora_b = Param::initialized(lora.lora_b.id, b.set_require_grad(true));
            used += 2;
        }
    }
    if used != tensors.len() {
        bail!(
            "{} holds {} tensors but {used} match the adapter's target modules on this model's {} layers",
            path.display(),
            tensors.len(),
            model.layers.len()
        );
    }
    Ok((model, spec))
}

fn spec_from_config(config: &serde_json::Value) -> Result<LoraSpec> {
    let field = |name: &str| config.get(name).filter(|v| !v.is_null());
    if let Some(kind) = field("peft_type").and_then(|v| v.as_str()) {
        if kind != "LORA" {
            bail!("peft_type {kind:?}: only LORA adapters are supported");
        }
    }
    for unsupported in ["use_dora", "use_rslora", "fan_in_fan_out"] {
        if field(unsupported).and_then(|v| v.as_bool()) == Some(true) {
            bail!("{unsupported} = true is not supported");
        }
    }
    if let Some(bias) = field("bias").and_then(|v| v.as_str()) {
        if bias != "none" {
            bail!("bias = {bias:?}: adapters with biases are not supported");
        }
    }
    for unsupported in [
        "rank_pattern",
        "alpha_pattern",
        "modules_to_save",
        "layers_to_transform",
    ] {
        let set = field(unsupported).is_some_and(|v| match v {
            serde_json::Value::Object(m) => !m.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            _ => true,
        });
        if set {
            bail!(
                "{unsupported} is set: per-module ranks or extra trained modules are not supported"
            );
        }
    }
    let r = field("r")
        .and_then(|v| v.as_u64())
        .context("no integer field r")? as usize;
    let alpha = field("lora_alpha")
        .and_then(|v| v.as_f64())
        .context("no number lora_alpha")?;
    let dropout = field("lora_dropout")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let targets = match field("target_modules") {
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .context("target_modules holds a non-string")
            })
            .collect::<Result<Vec<_>>>()?,
        Some(serde_json::Value::String(s)) => {
            bail!("target_modules as a regex ({s:?}) is not supported; list the modules")
        }
        _ => bail!("no target_modules list"),
    };
    let spec = LoraSpec {
        r,
        alpha,
        dropout,
        target_modules: targets,
    };
    spec.validate()?;
    Ok(spec)
}
