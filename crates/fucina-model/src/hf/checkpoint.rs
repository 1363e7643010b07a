//! Opening a Hugging Face model directory: its config, its weight files and every tensor's
//! name, dtype and shape, all checked before a single weight is read.

use super::config::{Architecture, HfConfig};
use super::dtype::HfDtype;
use super::names::{self, Entry, Part};
use crate::config::LlamaConfig;
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where a tensor is and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub file: String,
    pub dtype: HfDtype,
    pub shape: Vec<usize>,
}

/// A checked checkpoint directory whose weights have not been read yet.
#[derive(Debug, Clone)]
pub struct HfCheckpoint {
    dir: PathBuf,
    config: HfConfig,
    /// The weight files, in the order they are read.
    files: Vec<String>,
    /// Every tensor to load, in transformers' order, and where it is.
    pub(crate) tensors: Vec<(Entry, Located)>,
    /// The `lm_head.weight` a tied checkpoint still ships, which must equal the embedding.
    pub(crate) tied_head: Option<Located>,
}

impl HfCheckpoint {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let mut config = HfConfig::from_file(&dir.join(CONFIG_FILE))?;
        let (files, mut found) =
            weight_files(&dir).with_context(|| format!("in {}", dir.display()))?;
        let mut tensors = Vec::new();
        for entry in names::expected(&config.model) {
            let Some(located) = found.remove(&entry.name) else {
                bail!(
                    "{}: tensor {} is missing (expected shape {:?}){}",
                    dir.display(),
                    entry.name,
                    entry.shape,
                    missing_hint(&entry, &config.model)
                );
            };
            check_shape(&dir, &entry.name, &located, &entry.shape)?;
            tensors.push((entry, located));
        }
        let tied_head = match found.remove(names::HEAD) {
            Some(head) => {
                let shape = [config.model.vocab_size, config.model.hidden_size];
                check_shape(&dir, names::HEAD, &head, &shape)?;
                Some(head)
            }
            None => None,
        };
        found.retain(|name, _| !names::is_ignored_buffer(name));
        if !found.is_empty() {
            let list: Vec<String> = found
                .iter()
                .take(10)
                .map(|(name, l)| format!("{name} (in {})", l.file))
                .collect();
            bail!(
                "{}: {} tensor(s) that a {} of this config does not have: {}{}",
                dir.display(),
                found.len(),
                config.architecture.class_name(),
                list.join(", "),
                if found.len() > 10 { ", …" } else { "" }
            );
        }
        // An export defaults to the source's precision: a config.json that does not say it
        // leaves the tensors to tell, if they agree.
        if config.torch_dtype.is_none() {
            let mut dtypes = tensors.iter().map(|(_, l)| l.dtype);
            let first = dtypes.next();
            if dtypes.all(|d| Some(d) == first) {
                config.torch_dtype = first;
            }
        }
        Ok(HfCheckpoint {
            dir,
            config,
            files,
            tensors,
            tied_head,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config.model
    }

    /// The whole parsed config.json, to hand to `ExportOptions::source`.
    pub fn hf_config(&self) -> &HfConfig {
        &self.config
    }

    pub fn architecture(&self) -> Architecture {
        self.config.architecture
    }

    /// The stored precision: config.json's `torch_dtype`, else the tensors' if they share one.
    pub fn torch_dtype(&self) -> Option<HfDtype> {
        self.config.torch_dtype
    }

    /// The weight files, relative to `dir`.
    pub fn weight_files(&self) -> &[String] {
        &self.files
    }

    /// Bytes of weights to read.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|(e, l)| (e.numel() * l.dtype.size()) as u64)
            .sum()
    }
}

fn check_shape(dir: &Path, name: &str, located: &Located, expected: &[usize]) -> Result<()> {
    if located.shape != expected {
        bail!(
            "{}: tensor {name} in {} has shape {:?}, expected {:?} for this config.json",
            dir.display(),
            located.file,
            located.shape,
            expected
        );
    }
    Ok(())
}

fn missing_hint(entry: &Entry, config: &LlamaConfig) -> &'static str {
    if entry.part == Part::Head && !config.tie_word_embeddings {
        "; if the head shares the embedding, config.json should say tie_word_embeddings: true"
    } else {
        ""
    }
}

/// The weight files and every tensor in them, read from headers only.
fn weight_files(dir: &Path) -> Result<(Vec<String>, BTreeMap<String, Located>)> {
    let index_path = dir.join(INDEX_FILE);
    let (files, index) = if index_path.is_file() {
        let map = read_index(&index_path)?;
        let mut files: Vec<String> = map.values().cloned().collect();
        files.sort();
        files.dedup();
        (files, Some(map))
    } else if dir.join(SINGLE_FILE).is_file() {
        (vec![SINGLE_FILE.to_string()], None)
    } else if dir.join("pytorch_model.bin").exists()
        || dir.join("pytorch_model.bin.index.json").exists()
    {
        bail!(
            "{} holds PyTorch pickles (pytorch_model.bin); fucina reads only safetensors. Convert with transformers: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)",
            dir.display()
        );
    } else {
        bail!(
            "{} has neither {SINGLE_FILE} nor {INDEX_FILE}",
            dir.display()
        );
    };
    let mut found: BTreeMap<String, Located> = BTreeMap::new();
    for file in &files {
        let path = dir.join(file);
        let mmap = map_file(&path)?;
        let (_, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display())
        })?;
        for (name, info) in metadata.tensors() {
            if let Some(index) = &index {
                if index.get(&name) != Some(file) {
                    bail!(
                        "{file} holds tensor {name}, but {INDEX_FILE} puts it {}",
                        index
                            .get(&name)
                            .map_or("nowhere".to_string(), |f| format!("in {f}"))
                    );
                }
            }
            let Some(dtype) = HfDtype::from_safetensors(info.dtype) else {
                if names::is_ignored_buffer(&name) {
                    continue;
                }
                bail!(
                    "tensor {name} in {file} has dtype {:?}; fucina reads F32, BF16 and F16",
                    info.dtype
                );
            };
            let located = Located {
                file: file.clone(),
                dtype,
                shape: info.shape.clone(),
            };
            if let Some(other) = found.insert(name.clone(), located) {
                bail!("tensor {name} is in both {} and {file}", other.file);
            }
        }
    }
    if let Some(index) = &index {
        if let Some((name, file)) = index.iter().find(|(name, _)| !found.contains_key(*name)) {
            bail!("{INDEX_FILE} puts tensor {name} in {file}, which does not hold it");
        }
    }
    Ok((files, found))
}

/// `weight_map` of a sharded checkpoint's index: tensor name → file name.
fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let Some(map) = value.get("weight_map").and_then(Value::as_object) else {
        bail!("{} has no weight_map object", path.display());
    };
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let Some(file) = file.as_str() else {
            bail!(
                "{}: weight_map[{name:?}] is not a file name",
                path.display()
            );
        };
        // A shard lives next to its index; anything else could read outside the checkpoint.
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." {
            bail!(
                "{}: weight_map[{name:?}] = {file:?} is not a file name in the checkpoint directory",
                path.display()
            );
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // Safety: a mapping is sound only while nobody writes the file; a checkpoint being imported
    // is not written to (the assumption safetensors' own loaders make too).
    unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))
}
