//! Checkpoints: one directory per step holding the model, the optimizer state, the data cursor and
//! the resolved config, with a manifest of their sizes and checksums. Written under a temporary
//! name, fsynced, marked DONE and renamed, so a crash never leaves something that looks complete;
//! resuming checks the manifest and falls back to the checkpoint before if the newest is damaged.

use crate::base_fingerprint::{BaseFingerprint, BASE_FILE};
use crate::flat_file::{is_shard_of, FlatPart};
use crate::manifest::{Entry, Manifest, MANIFEST_FILE};
use crate::zero::{write_trainable, Layout};
use anyhow::{anyhow, bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::AutodiffBackend;
use fucina_data::LoaderState;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.mpk";
pub const OPTIM_FILE: &str = "optim.mpk";
pub const FLAT_OPTIM_FILE: &str = "optim.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.toml";
pub const DONE_FILE: &str = "DONE";
/// Stems of the flat files (`flat_file`): whole as `<stem>.safetensors`, or in parts.
pub const TRAINABLE_STEM: &str = "trainable";
pub const OPTIM_STEM: &str = "optim";

/// Everything besides tensors needed to continue exactly where the run stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// The next step to run.
    pub step: u64,
    pub loader: LoaderState,
    pub world_size: usize,
    /// Tokens seen so far, over all ranks.
    pub tokens: u64,
    pub last_loss: Option<f64>,
    pub fucina_version: String,
    /// Steps skipped for a non-finite loss or gradient norm so far.
    #[serde(default)]
    pub skipped_steps: u64,
    /// How the optimizer state is stored (checkpoints written before it existed hold burn's).
    #[serde(default)]
    pub optimizer: OptimFormat,
    /// How the weights are stored (checkpoints written before it existed hold `model.mpk`).
    #[serde(default)]
    pub weights: WeightsFormat,
    /// The ranks that each wrote their part of the flat files (sharded optimizer); 0: whole
    /// files, written by rank 0.
    #[serde(default)]
    pub shards: usize,
}

/// The two forms of weights a checkpoint may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsFormat {
    /// burn's record of the whole model (`model.mpk`).
    #[default]
    Record,
    /// Only the trainable parameters, flat in visit order (`trainable.safetensors` or its
    /// parts); the frozen ones come from `model.hf`, checked against `base.json`. LoRA runs
    /// keep a few MB of adapters rather than the whole base at every checkpoint.
    Trainable,
}

/// The two forms of AdamW state a checkpoint may hold; either resumes a run of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimFormat {
    /// burn's record of the replicated optimizer, keyed by parameter id (`optim.mpk`).
    #[default]
    BurnRecord,
    /// The moments of all trainable parameters as flat vectors in visit order
    /// (`optim.safetensors`), as the sharded optimizer gathers them: independent of the world
    /// size.
    Flat,
}

impl OptimFormat {
    pub fn file_name(self) -> &'static str {
        match self {
            OptimFormat::BurnRecord => OPTIM_FILE,
            OptimFormat::Flat => FLAT_OPTIM_FILE,
        }
    }
}

pub fn checkpoints_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoints")
}

fn step_dir(out_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(out_dir).join(format!("step_{step:08}"))
}

type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

pub fn record_to_bytes<B: Backend, R: Record<B>>(record: R) -> Result<Vec<u8>> {
    Recorder::<B>::record(&Bytes::default(), record, ()).context("cannot serialise record")
}

pub fn record_from_bytes<B: Backend, R: Record<B>>(
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<R> {
    Recorder::<B>::load(&Bytes::default(), bytes, device).context("cannot deserialise record")
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a complete checkpoint for `state.step` from one process (the optimizer state in the
/// form `state.optimizer` names) and returns its directory. On any failure (a full disk, say)
/// the temporary directory is removed and earlier checkpoints are untouched.
pub fn save(
    out_dir: &Path,
    model_bytes: &[u8],
    optim_bytes: &[u8],
    state: &TrainState,
    config_toml: &str,
    retention: Retention,
) -> Result<PathBuf> {
    let state_json = serde_json::to_vec_pretty(state)?;
    let files: Vec<(String, Vec<u8>)> = vec![
        (MODEL_FILE.into(), model_bytes.to_vec()),
        (state.optimizer.file_name().into(), optim_bytes.to_vec()),
        (STATE_FILE.into(), state_json),
        (CONFIG_FILE.into(), config_toml.as_bytes().to_vec()),
    ];
    let tmp = temp_dir(out_dir, state.step);
    let written = write_files(&tmp, &files).and_then(|entries| {
        let mut manifest = Manifest::default();
        manifest.files.extend(entries);
        commit(out_dir, state.step, &manifest, retention)
    });
    written.map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        match format!("{e:#}").contains("earlier checkpoints are intact") {
            true => e,
            false => e.context(format!(
                "checkpoint at step {} not written; earlier checkpoints are intact",
                state.step
            )),
        }
    })
}

/// Where the files of the checkpoint for `step` are written before it is complete.
pub fn temp_dir(out_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(out_dir).join(format!(".tmp_step_{step:08}"))
}

/// Removes what a killed run left half-written; only before any rank writes again.
pub fn clear_temporaries(out_dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(checkpoints_dir(out_dir)) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(".tmp_step_") {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes and fsyncs `files` into `tmp` (created if need be: every rank of a sharded save
/// writes its part there), returning their manifest entries.
pub fn write_files(tmp: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<(String, Entry)>> {
    fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut entries = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        write_synced(&tmp.join(name), bytes)?;
        entries.push((name.clone(), Entry::of(bytes)));
    }
    Ok(entries)
}

/// Completes the checkpoint whose files are all in its temporary directory: the manifest, the
/// DONE marker, the rename, then the retention policy. Rank 0 only, once every rank's files
/// are written.
pub fn commit(
    out_dir: &Path,
    step: u64,
    manifest: &Manifest,
    retention: Retention,
) -> Result<PathBuf> {
    let tmp = temp_dir(out_dir, step);
    let final_dir = step_dir(out_dir, step);
    let result = serde_json::to_vec_pretty(manifest)
        .map_err(anyhow::Error::from)
        .and_then(|m| write_synced(&tmp.join(MANIFEST_FILE), &m))
        .and_then(|()| write_synced(&tmp.join(DONE_FILE), b""))
        .and_then(|()| replace_dir(&tmp, &final_dir));
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.context(format!(
            "checkpoint at step {step} not written; earlier checkpoints are intact"
        )));
    }
    if let Ok(dir) = fs::File::open(checkpoints_dir(out_dir)) {
        let _ = dir.sync_all();
    }
    prune(out_dir, retention)?;
    Ok(final_dir)
}

/// Puts `tmp` in place of `dir`; an existing `dir` (the same step written again) is moved aside
/// first and removed only once the new one is in place.
fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    let old = dir.with_extension("old");
    if dir.exists() {
        fs::rename(dir, &old)?;
    }
    fs::rename(tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Which checkpoints to keep: the newest `keep` (0: all), plus every step divisible by `every`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: usize,
    pub every: u64,
}

/// Complete checkpoints (with their DONE marker), oldest first.
pub fn list(out_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let parent = checkpoints_dir(out_dir);
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(&parent) else {
        return Ok(found);
    };
    for entry in entries {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step_"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(step) = step {
            if path.join(DONE_FILE).is_file() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn prune(out_dir: &Path, retention: Retention) -> Result<()> {
    if retention.keep == 0 {
        return Ok(());
    }
    let all = list(out_dir)?;
    let older = all.len().saturating_sub(retention.keep);
    for (step, path) in all.iter().take(older) {
        if retention.every > 0 && step % retention.every == 0 {
            continue;
        }
        fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove old checkpoint {}", path.display()))?;
    }
    Ok(())
}

/// Opens the checkpoint `which` names and checks it against its manifest:
/// - `auto`: the newest usable one under `out_dir`, falling back to older ones (with a warning)
///   when the newest is damaged; an error if there is none;
/// - `if-present`: the same, but `None` when the run has no checkpoint yet;
/// - a directory: that checkpoint, or an error saying what is wrong with it.
pub fn open(out_dir: &Path, which: &str) -> Result<Option<(PathBuf, Loaded)>> {
    if which != "auto" && which != "if-present" {
        let dir = PathBuf::from(which);
        if !dir.join(DONE_FILE).is_file() {
            bail!(
                "{} is not a complete checkpoint (no {DONE_FILE} marker)",
                dir.display()
            );
        }
        let loaded = load(&dir).with_context(|| format!("checkpoint {}", dir.display()))?;
        return Ok(Some((dir, loaded)));
    }
    let candidates = list(out_dir)?;
    let mut damaged = Vec::new();
    for (_, dir) in candidates.iter().rev() {
        match load(dir) {
            Ok(loaded) => return Ok(Some((dir.clone(), loaded))),
            Err(e) => {
                eprintln!(
                    "warning: checkpoint {} is unusable ({e:#}); trying the one before",
                    dir.display()
                );
                damaged.push(format!("{}: {e:#}", dir.display()));
            }
        }
    }
    if !damaged.is_empty() {
        bail!(
            "no usable checkpoint under {}:\n  {}",
            checkpoints_dir(out_dir).display(),
            damaged.join("\n  ")
        );
    }
    if which == "auto" {
        bail!(
            "no complete checkpoint under {}",
            checkpoints_dir(out_dir).display()
        );
    }
    Ok(None)
}

/// The directory `open` would take.
pub fn resolve(out_dir: &Path, which: &str) -> Result<PathBuf> {
    open(out_dir, which)?
        .map(|(dir, _)| dir)
        .ok_or_else(|| anyhow!("no checkpoint under {}", checkpoints_dir(out_dir).display()))
}

#[derive(Debug)]
pub struct Loaded {
    /// burn's record of the model, or with `WeightsFormat::Trainable` the whole flat file.
    pub model: Vec<u8>,
    pub optim: Vec<u8>,
    pub state: TrainState,
}

/// Reads a checkpoint's files and checks them against its manifest. Parts written by several
/// ranks come back joined, as the whole file one process would have written.
pub fn load(dir: &Path) -> Result<Loaded> {
    read_checkpoint(dir, true)
}

/// As `load` without the optimizer state (left empty): what generation and export need.
pub fn load_weights(dir: &Path) -> Result<Loaded> {
    read_checkpoint(dir, false)
}

fn read_checkpoint(dir: &Path, with_optimizer: bool) -> Result<Loaded> {
    let manifest = Manifest::read(dir)?;
    let read = |name: &str| -> Result<Vec<u8>> {
        let bytes = fs::read(dir.join(name))
            .with_context(|| format!("cannot read {}", dir.join(name).display()))?;
        if let Some(m) = &manifest {
            m.verify(name, &bytes)?;
        }
        Ok(bytes)
    };
    let state: TrainState = serde_json::from_slice(&read(STATE_FILE)?)
        .with_context(|| format!("corrupt {}", dir.join(STATE_FILE).display()))?;
    let flat = |stem: &str| -> Result<Vec<u8>> {
        if state.shards == 0 {
            return read(&format!("{stem}.safetensors"));
        }
        let Some(manifest) = &manifest else {
            bail!("{} has parts but no manifest", dir.display());
        };
        let names: Vec<&String> = manifest
            .files
            .keys()
            .filter(|n| is_shard_of(n, stem))
            .collect();
        if names.len() != state.shards {
            bail!(
                "{} holds {} parts of {stem}, written by {} ranks",
                dir.display(),
                names.len(),
                state.shards
            );
        }
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let part = FlatPart::decode(&read(name)?).with_context(|| name.clone())?;
            parts.push((name.clone(), part));
        }
        FlatPart::join(parts)?.encode()
    };
    let model = match state.weights {
        WeightsFormat::Record => read(MODEL_FILE)?,
        WeightsFormat::Trainable => flat(TRAINABLE_STEM)?,
    };
    let optim = match (with_optimizer, state.optimizer) {
        (false, _) => Vec::new(),
        (true, OptimFormat::Flat) => flat(OPTIM_STEM)?,
        (true, OptimFormat::BurnRecord) => read(OPTIM_FILE)?,
    };
    Ok(Loaded {
        model,
        optim,
        state,
    })
}

/// Loads just the weights into a freshly built model (generation, export).
pub fn load_model<B: Backend, M: Module<B>>(dir: &Path, model: M, device: &B::Device) -> Result<M> {
    let bytes = fs::read(dir.join(MODEL_FILE))
        .with_context(|| format!("cannot read {}", dir.join(MODEL_FILE).display()))?;
    let record = record_from_bytes::<B, M::Record>(bytes, device)
        .with_context(|| format!("checkpoint {} does not fit this model", dir.display()))?;
    Ok(model.load_record(record))
}

/// `model` (built as the run builds it: from `model.hf` or fresh, with its adapters) holding a
/// checkpoint's weights, given as `load` returns them.
pub fn restore_weights<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    format: WeightsFormat,
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<M> {
    match format {
        WeightsFormat::Record => Ok(model.load_record(record_from_bytes::<B, _>(bytes, device)?)),
        WeightsFormat::Trainable => {
            let layout = Layout::of::<B, M>(&model);
            let flat = FlatPart::decode(&bytes)?.into_trainable(&layout)?;
            write_trainable::<B, M>(model, &flat)
        }
    }
}

/// Refuses to put a checkpoint's trainable weights on another base than the `model.hf` they
/// were trained on (`base.json`), naming the files that differ.
pub fn check_base(dir: &Path, state: &TrainState, hf: Option<&Path>) -> Result<()> {
    let path = dir.join(BASE_FILE);
    if state.weights != WeightsFormat::Trainable || !path.is_file() {
        return Ok(());
    }
    let Some(hf) = hf else {
        bail!(
            "checkpoint {} holds only the trainable weights of a run on a model.hf base, and \
             this run names none",
            dir.display()
        );
    };
    let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let print: BaseFingerprint =
        serde_json::from_slice(&text).with_context(|| format!("corrupt {}", path.display()))?;
    print
        .check(hf)
        .with_context(|| format!("resuming {}", dir.display()))
}

/// Refuses a checkpoint whose LoRA adapters differ from the run's (present or not, rank,
/// targets): loading it would silently drop adapters or start fresh ones.
pub fn check_lora(dir: &Path, lora: Option<&fucina_model::LoraSpec>) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("cannot parse {}", path.display()))?;
    let saved: Option<fucina_model::LoraSpec> = match table.get("lora") {
        Some(v) => Some(v.clone().try_into().with_context(|| {
            format!("the [lora] section of {} is not readable", path.display())
        })?),
        None => None,
    };
    let same = match (&saved, lora) {
        (None, None) => true,
        (Some(a), Some(b)) => a.r == b.r && a.target_modules == b.target_modules,
        _ => false,
    };
    if !same {
        let describe = |s: Option<&fucina_model::LoraSpec>| match s {
            Some(s) => format!("LoRA r = {} on {}", s.r, s.target_modules.join(", ")),
            None => "no LoRA".to_string(),
        };
        bail!(
            "checkpoint {} was trained with {}, this run asks for {}",
            dir.display(),
            describe(saved.as_ref()),
            describe(lora)
        );
    }
    Ok(())
}

/// Refuses a checkpoint made for another model shape, naming the fields that differ, before its
/// tensors meet a model they do not fit.
pub fn check_model(dir: &Path, model: &fucina_model::LlamaConfig) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // A model file named by path may have moved since: then the shapes go unchecked.
    let saved = match crate::RunConfig::from_toml_str(&text, &[]).and_then(|c| c.model_config()) {
        Ok(saved) => saved,
        Err(e) => {
            eprintln!(
                "warning: model shape of {} not checked: {e:#}",
                dir.display()
            );
            return Ok(());
        }
    };
    let (a, b) = (
        toml::Value::try_from(&saved)?,
        toml::Value::try_from(model)?,
    );
    let (Some(a), Some(b)) = (a.as_table(), b.as_table()) else {
        return Ok(());
    };
    let differ: Vec<String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .map(|(k, v)| {
            let was = a.get(k).map_or("unset".into(), |x| x.to_string());
            format!("{k} = {v} (checkpoint: {was})")
        })
        .collect();
    if !differ.is_empty() {
        bail!(
            "checkpoint {} was made for another model: {}",
            dir.display(),
            differ.join(", ")
        );
    }
    Ok(())
}
