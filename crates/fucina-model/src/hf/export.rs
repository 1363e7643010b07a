//! Writing a `Llama` as a Hugging Face model directory that transformers, vLLM and llama.cpp's
//! converter load unchanged: config.json, safetensors weights (sharded above a size, as
//! transformers shards), and the tokenizer files of the model it came from.

use super::checkpoint::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use super::config::HfConfig;
use super::dtype::HfDtype;
use super::names::{self, Entry};
use super::{params, progress};
use crate::config::LlamaConfig;
use crate::model::Llama;
use anyhow::{anyhow, bail, Context, Result};
use burn::prelude::*;
use indicatif::ProgressBar;
use safetensors::{Dtype, View};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// transformers' default `max_shard_size` ("5GB").
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Files copied from `ExportOptions::tokenizer_dir` when present there.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Stored precision; `None`: the source checkpoint's, else f32.
    pub dtype: Option<HfDtype>,
    /// Weights above this many bytes are split into shards.
    pub max_shard_bytes: u64,
    /// The config.json of the checkpoint the model was imported from: its architecture and
    /// its harmless fields (token ids…) are written back.
    pub source: Option<HfConfig>,
    /// Where to copy tokenizer files from (usually the source checkpoint's directory).
    pub tokenizer_dir: Option<PathBuf>,
    /// Replace a non-empty `out_dir` instead of refusing.
    pub overwrite: bool,
    /// A progress bar on stderr.
    pub progress: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            dtype: None,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            source: None,
            tokenizer_dir: None,
            overwrite: false,
            progress: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub dtype: HfDtype,
    /// The safetensors files written, in order.
    pub weight_files: Vec<String>,
    pub tensors: usize,
    /// Bytes of tensor data (the index's `total_size`).
    pub total_bytes: u64,
    pub tokenizer_files: Vec<String>,
}

/// Writes `model` (whose shape is `config`) to `out_dir`. Everything goes to a hidden sibling
/// directory first and is renamed into place at the end, so a failure leaves no partial export.
pub fn export<B: Backend>(
    model: &Llama<B>,
    config: &LlamaConfig,
    out_dir: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    config.validate().context("cannot export")?;
    if options.max_shard_bytes == 0 {
        bail!("max_shard_bytes must be positive");
    }
    let mut hf = options
        .source
        .clone()
        .unwrap_or_else(|| HfConfig::fresh(config));
    hf.model = config.clone();
    let dtype = options.dtype.or(hf.torch_dtype).unwrap_or(HfDtype::F32);
    let entries = names::expected(config);
    check_model(model, config, &entries)?;
    check_destination(out_dir, options.overwrite)?;
    let tokenizer = tokenizer_files(options.tokenizer_dir.as_deref())?;
    let staging = staging_dir(out_dir, "partial")?;
    let written = write_all(&staging, model, &hf, &entries, dtype, options, &tokenizer);
    match written.and_then(|summary| publish(&staging, out_dir).map(|()| summary)) {
        Ok(mut summary) => {
            summary.dir = out_dir.to_path_buf();
            Ok(summary)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e.context(format!("export to {} failed", out_dir.display())))
        }
    }
}

fn check_model<B: Backend>(
    model: &Llama<B>,
    config: &LlamaConfig,
    entries: &[Entry],
) -> Result<()> {
    // The base weights alone would silently drop the fine-tuning.
    if model.has_lora() {
        bail!("the model carries LoRA adapters: merge them into the weights first (Llama::merge_lora)");
    }
    if model.layers.len() != config.num_hidden_layers {
        bail!(
            "the model has {} layers but the config says num_hidden_layers = {}",
            model.layers.len(),
            config.num_hidden_layers
        );
    }
    if model.lm_head.is_some() == config.tie_word_embeddings {
        bail!(
            "the model's head is {} but the config says tie_word_embeddings = {}",
            if model.lm_head.is_some() {
                "its own"
            } else {
                "tied"
            },
            config.tie_word_embeddings
        );
    }
    for entry in entries {
        let shape = params::shape(model, entry.part)?;
        if shape != entry.shape {
            bail!(
                "the model's {} has shape {shape:?} but the config gives {:?}",
                entry.name,
                entry.shape
            );
        }
    }
    Ok(())
}

fn check_destination(out_dir: &Path, overwrite: bool) -> Result<()> {
    if !out_dir.exists() {
        return Ok(());
    }
    if !out_dir.is_dir() {
        bail!("{} exists and is not a directory", out_dir.display());
    }
    let non_empty = fs::read_dir(out_dir)
        .with_context(|| format!("cannot list {}", out_dir.display()))?
        .next()
        .is_some();
    if non_empty && !overwrite {
        bail!(
            "{} is not empty; choose another directory or allow overwriting it",
            out_dir.display()
        );
    }
    Ok(())
}

fn tokenizer_files(dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    if !dir.is_dir() {
        bail!("tokenizer directory {} does not exist", dir.display());
    }
    let found: Vec<PathBuf> = TOKENIZER_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    if found.is_empty() {
        bail!(
            "{} has no tokenizer files (looked for {})",
            dir.display(),
            TOKENIZER_FILES.join(", ")
        );
    }
    Ok(found)
}

/// A hidden sibling of `out_dir`, so that the final rename stays on one filesystem.
fn staging_dir(out_dir: &Path, what: &str) -> Result<PathBuf> {
    let name = out_dir
        .file_name()
        .with_context(|| format!("{} does not name a directory", out_dir.display()))?
        .to_string_lossy();
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    Ok(parent.join(format!(".{name}.{what}-{}", std::process::id())))
}

fn write_all<B: Backend>(
    staging: &Path,
    model: &Llama<B>,
    hf: &HfConfig,
    entries: &[Entry],
    dtype: HfDtype,
    options: &ExportOptions,
    tokenizer: &[PathBuf],
) -> Result<ExportSummary> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("cannot remove stale {}", staging.display()))?;
    }
    fs::create_dir(staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let shards = plan_shards(entries, dtype, options.max_shard_bytes);
    let file_names: Vec<String> = if shards.len() == 1 {
        vec![SINGLE_FILE.to_string()]
    } else {
        (1..=shards.len())
            .map(|i| format!("model-{i:05}-of-{:05}.safetensors", shards.len()))
            .collect()
    };
    let total_bytes: u64 = entries.iter().map(|e| bytes(e, dtype)).sum();
    let bar = progress::bar(total_bytes, options.progress, "exporting");
    let failure = RefCell::new(None);
    let mut weight_map = BTreeMap::new();
    for (shard, file) in shards.iter().zip(&file_names) {
        let tensors = shard.iter().map(|entry| {
            weight_map.insert(entry.name.clone(), file.clone());
            let lazy = LazyTensor {
                model,
                entry,
                dtype,
                bar: &bar,
                failure: &failure,
            };
            (entry.name.clone(), lazy)
        });
        let path = staging.join(file);
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(tensors, Some(metadata), &path)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        if let Some(e) = failure.borrow_mut().take() {
            return Err(e);
        }
        sync(&path)?;
    }
    bar.finish_and_clear();
    if shards.len() > 1 {
        let parameters: usize = entries.iter().map(Entry::numel).sum();
        let metadata = json!({"total_size": total_bytes, "total_parameters": parameters});
        let index = json!({"metadata": metadata, "weight_map": weight_map});
        write_json(&staging.join(INDEX_FILE), &index)?;
    }
    write_json(&staging.join(CONFIG_FILE), &hf.to_json(dtype))?;
    let mut copied = Vec::new();
    for source in tokenizer {
        let name = source.file_name().expect("listed by name").to_owned();
        let target = staging.join(&name);
        fs::copy(source, &target).with_context(|| format!("cannot copy {}", source.display()))?;
        sync(&target)?;
        copied.push(name.to_string_lossy().into_owned());
    }
    Ok(ExportSummary {
        dir: staging.to_path_buf(),
        dtype,
        weight_files: file_names,
        tensors: entries.len(),
        total_bytes,
        tokenizer_files: copied,
    })
}

fn bytes(entry: &Entry, dtype: HfDtype) -> u64 {
    (entry.numel() * dtype.size()) as u64
}

/// transformers' greedy split: a new shard when the next tensor would overflow this one; a
/// tensor larger than the limit gets a shard of its own.
fn plan_shards(entries: &[Entry], dtype: HfDtype, max_bytes: u64) -> Vec<Vec<&Entry>> {
    let mut shards: Vec<Vec<&Entry>> = Vec::new();
    let mut current: Vec<&Entry> = Vec::new();
    let mut size = 0;
    for entry in entries {
        let n = bytes(entry, dtype);
        if !current.is_empty() && size + n > max_bytes {
            shards.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(entry);
        size += n;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// A tensor converted only when safetensors writes it, so a shard is never whole in memory.
struct LazyTensor<'a, B: Backend> {
    model: &'a Llama<B>,
    entry: &'a Entry,
    dtype: HfDtype,
    bar: &'a ProgressBar,
    /// The first error: `View::data` cannot return one.
    failure: &'a RefCell<Option<anyhow::Error>>,
}

impl<B: Backend> View for LazyTensor<'_, B> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.entry.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let values = params::values(self.model, self.entry.part);
        self.bar.inc(self.data_len() as u64);
        match values {
            Ok(values) => Cow::Owned(self.dtype.encode(&values)),
            Err(e) => {
                self.failure.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.entry.numel() * self.dtype.size()
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    sync(path)
}

fn sync(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {} to disk", path.display()))
}

/// Moves the finished export into place, setting aside (then deleting) what was there.
fn publish(staging: &Path, out_dir: &Path) -> Result<()> {
    if out_dir.exists() {
        let old = staging_dir(out_dir, "old")?;
        fs::rename(out_dir, &old)
            .with_context(|| format!("cannot move the old {} aside", out_dir.display()))?;
        if let Err(e) = fs::rename(staging, out_dir) {
            let _ = fs::rename(&old, out_dir);
            return Err(e).with_context(|| format!("cannot rename into {}", out_dir.display()));
        }
        if let Err(e) = fs::remove_dir_all(&old) {
            eprintln!(
                "warning: exported to {}, but the previous content left in {} could not be removed: {e}",
                out_dir.display(),
                old.display()
            );
        }
    } else {
        fs::rename(staging, out_dir)
            .with_context(|| format!("cannot rename into {}", out_dir.display()))?;
    }
    if let Some(parent) = out_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Makes the rename itself durable.
        let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}
