//! `fucina export`: a checkpoint of a run → a Hugging Face model directory, or for LoRA runs a
//! PEFT adapter (or the merged model). Runs on the CPU, so it works on a login node whatever
//! backend trained the model.

use crate::backend::{BackendKind, BackendTask};
use crate::checkpoint::{self, WeightsFormat, CONFIG_FILE};
use crate::config::RunConfig;
use crate::export_chat::ChatExport;
use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_model::hf::{self, ExportOptions, HfCheckpoint, HfDtype};
use fucina_model::{peft, Llama};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// A checkpoint directory, or a run directory (its newest checkpoint).
    pub source: PathBuf,
    pub out: PathBuf,
    /// Stored precision; default: that of the `model.hf` checkpoint, else f32.
    pub dtype: Option<HfDtype>,
    /// For LoRA runs: fold the adapters into the weights and write a full model.
    pub merge: bool,
    pub max_shard_bytes: u64,
    pub overwrite: bool,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub enum Exported {
    Model(hf::ExportSummary),
    Adapter(peft::AdapterSummary),
}

/// The checkpoint directory `source` names: itself, or the newest one of a run directory.
pub fn checkpoint_dir(source: &Path) -> Result<PathBuf> {
    if source.join(checkpoint::DONE_FILE).is_file() {
        checkpoint::resolve(source, &source.to_string_lossy())
    } else {
        checkpoint::resolve(source, "auto").with_context(|| {
            format!(
                "{} is neither a checkpoint nor a run directory holding one",
                source.display()
            )
        })
    }
}

/// A model of the run's shape (with its LoRA adapters, if any) ready to receive a checkpoint's
/// record: the weights themselves come from the record.
pub fn model_skeleton<B: Backend>(config: &RunConfig, device: &B::Device) -> Result<Llama<B>> {
    let model = Llama::new(&config.model_config()?, device);
    Ok(match &config.lora {
        Some(spec) => model.with_lora(spec, config.seed, device),
        None => model,
    })
}

/// The trained model of checkpoint `dir`, for inference: its whole record, or its trainable
/// weights (LoRA adapters) on the run's `model.hf` base, checked to be the one trained on.
pub fn trained_model<B: AutodiffBackend>(
    dir: &Path,
    config: &RunConfig,
    device: &B::Device,
) -> Result<Llama<B::InnerBackend>> {
    let loaded = checkpoint::load_weights(dir)?;
    let state = &loaded.state;
    if state.weights == WeightsFormat::Record {
        let model = model_skeleton::<B::InnerBackend>(config, device)?;
        let model = model.load_record(checkpoint::record_from_bytes::<B::InnerBackend, _>(
            loaded.model,
            device,
        )?);
        return Ok(model);
    }
    let hf = config.hf_dir()?;
    checkpoint::check_base(dir, state, hf.as_deref())?;
    let model = match &hf {
        Some(hf) => {
            let base = HfCheckpoint::open(hf)?
                .load::<B>(device, false)
                .with_context(|| format!("loading the base model {}", hf.display()))?;
            match &config.lora {
                Some(spec) => base.with_lora(spec, config.seed, device),
                None => base,
            }
        }
        None => model_skeleton::<B>(config, device)?,
    };
    let model = checkpoint::restore_weights(model, state.weights, loaded.model, device)
        .with_context(|| format!("checkpoint {}", dir.display()))?;
    Ok(model.valid())
}

pub fn export(request: ExportRequest) -> Result<Exported> {
    let dir = checkpoint_dir(&request.source)?;
    let config = RunConfig::load(&dir.join(CONFIG_FILE), &[])
        .with_context(|| format!("the run config saved in {}", dir.display()))?;
    if request.merge && config.lora.is_none() {
        bail!(
            "--merge folds LoRA adapters into their base, and {} has none (a full fine-tuning \
             or pre-training run): export it without --merge",
            dir.display()
        );
    }
    // Before the model is loaded, and naming the flag (the writers only know "overwrite").
    let out = &request.out;
    let non_empty = out.is_dir() && std::fs::read_dir(out)?.next().is_some();
    if non_empty && !request.overwrite {
        bail!(
            "{} is not empty: choose another directory, or pass --overwrite to replace it",
            out.display()
        );
    }
    let task = ExportTask {
        dir,
        config,
        request,
    };
    crate::dispatch(BackendKind::Cpu, 0, task)?
}

struct ExportTask {
    dir: PathBuf,
    config: RunConfig,
    request: ExportRequest,
}

impl BackendTask for ExportTask {
    type Output = Result<Exported>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Exported> {
        let (config, request) = (&self.config, &self.request);
        let model = trained_model::<B>(&self.dir, config, &device)?;
        let source = match config.hf_dir()? {
            Some(dir) => Some(HfCheckpoint::open(&dir)?),
            None => None,
        };
        if let (Some(spec), false) = (&config.lora, request.merge) {
            let base = match &source {
                Some(s) => absolute(s.dir()),
                None => "(trained from scratch by fucina: export with --merge)".into(),
            };
            let summary = peft::save_adapter(&model, spec, &base, &request.out, request.overwrite)?;
            return Ok(Exported::Adapter(summary));
        }
        let model = model.merge_lora();
        let model_config = config.model_config()?;
        let options = ExportOptions {
            dtype: request.dtype,
            max_shard_bytes: request.max_shard_bytes,
            source: source.as_ref().map(|s| s.hf_config().clone()),
            tokenizer_dir: tokenizer_dir(
                config,
                source.as_ref(),
                model_config.max_position_embeddings,
            )?,
            overwrite: request.overwrite,
            progress: request.progress,
        };
        let chat = ChatExport::of_run(config)?;
        let staged = options.tokenizer_dir.clone();
        let summary = (|| -> Result<hf::ExportSummary> {
            if let (Some(chat), Some(dir)) = (&chat, &staged) {
                chat.patch_tokenizer_files(dir, config)?;
            }
            let summary = hf::export(&model, &model_config, &request.out, &options)?;
            if let Some(chat) = &chat {
                chat.patch_model_config(&request.out)?;
            }
            Ok(summary)
        })();
        if let Some(staged) = &staged {
            let _ = std::fs::remove_dir_all(staged);
        }
        Ok(Exported::Model(summary?))
    }
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Tokenizer files travel with the model: from the imported checkpoint; else the run's
/// tokenizer.json (and what sits beside it), plus a `tokenizer_config.json` naming its
/// end-of-text token when there is none, so transformers knows where generation stops.
fn tokenizer_dir(
    config: &RunConfig,
    source: Option<&HfCheckpoint>,
    max_positions: usize,
) -> Result<Option<PathBuf>> {
    // Staged, so that the data's chat template and tokens can replace the base model's.
    let dir = std::env::temp_dir().join(format!("fucina-tokenizer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if let Some(s) = source {
        for name in hf::TOKENIZER_FILES {
            if s.dir().join(name).is_file() {
                std::fs::copy(s.dir().join(name), dir.join(name))?;
            }
        }
    } else if config.data.tokenizer == crate::data::BUILTIN {
        let json = fucina_data::corpus::builtin_tokenizer_json()
            .context("this build has no built-in tokenizer")?;
        std::fs::write(dir.join("tokenizer.json"), json)?;
    } else {
        let beside = Path::new(&config.data.tokenizer)
            .parent()
            .unwrap_or(Path::new("."));
        std::fs::copy(&config.data.tokenizer, dir.join("tokenizer.json"))
            .with_context(|| format!("cannot copy data.tokenizer {}", config.data.tokenizer))?;
        for name in hf::TOKENIZER_FILES
            .iter()
            .filter(|n| **n != "tokenizer.json")
        {
            if beside.join(name).is_file() {
                std::fs::copy(beside.join(name), dir.join(name))?;
            }
        }
    }
    // Only for a tokenizer of fucina's own: an imported checkpoint's files travel as they are.
    if source.is_none() && !dir.join("tokenizer_config.json").is_file() {
        let tokenizer = crate::data::load_tokenizer(&config.data.tokenizer)?;
        let tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": tokenizer.eos_token(),
            "bos_token": null,
            "add_bos_token": false,
            "add_eos_token": false,
            "model_max_length": max_positions,
            "clean_up_tokenization_spaces": false,
        });
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&tokenizer_config)?,
        )?;
    }
    Ok(Some(dir))
}
