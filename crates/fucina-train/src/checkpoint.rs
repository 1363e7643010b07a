//! Checkpoints: one directory per step holding the model, the optimizer state, the data cursor and
//! the resolved config. Written under a temporary name, fsynced, renamed, and only then marked
//! DONE, so a crash never leaves something that looks complete.

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use fucina_data::LoaderState;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.mpk";
pub const OPTIM_FILE: &str = "optim.mpk";
pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.toml";
pub const DONE_FILE: &str = "DONE";

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

/// Writes a complete checkpoint for `state.step` and returns its directory.
pub fn save(
    out_dir: &Path,
    model_bytes: &[u8],
    optim_bytes: &[u8],
    state: &TrainState,
    config_toml: &str,
    keep: usize,
) -> Result<PathBuf> {
    let parent = checkpoints_dir(out_dir);
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let final_dir = step_dir(out_dir, state.step);
    let tmp = parent.join(format!(".tmp_step_{:08}", state.step));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    write_synced(&tmp.join(MODEL_FILE), model_bytes)?;
    write_synced(&tmp.join(OPTIM_FILE), optim_bytes)?;
    write_synced(
        &tmp.join(STATE_FILE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    write_synced(&tmp.join(CONFIG_FILE), config_toml.as_bytes())?;
    write_synced(&tmp.join(DONE_FILE), b"")?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), final_dir.display()))?;
    if let Ok(dir) = fs::File::open(&parent) {
        let _ = dir.sync_all();
    }
    prune(out_dir, keep)?;
    Ok(final_dir)
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

fn prune(out_dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(out_dir)?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove old checkpoint {}", path.display()))?;
    }
    Ok(())
}

/// `auto`: the newest complete checkpoint under `out_dir`; otherwise a checkpoint directory.
pub fn resolve(out_dir: &Path, which: &str) -> Result<PathBuf> {
    if which == "auto" {
        return match list(out_dir)?.pop() {
            Some((_, path)) => Ok(path),
            None => bail!(
                "--resume auto: no complete checkpoint under {}",
                checkpoints_dir(out_dir).display()
            ),
        };
    }
    let path = PathBuf::from(which);
    if !path.join(DONE_FILE).is_file() {
        bail!(
            "{} is not a complete checkpoint (no {DONE_FILE} marker)",
            path.display()
        );
    }
    Ok(path)
}

pub struct Loaded {
    pub model: Vec<u8>,
    pub optim: Vec<u8>,
    pub state: TrainState,
}

pub fn load(dir: &Path) -> Result<Loaded> {
    let read = |name: &str| {
        fs::read(dir.join(name))
            .with_context(|| format!("cannot read {}", dir.join(name).display()))
    };
    let state: TrainState = serde_json::from_slice(&read(STATE_FILE)?)
        .with_context(|| format!("corrupt {}", dir.join(STATE_FILE).display()))?;
    Ok(Loaded {
        model: read(MODEL_FILE)?,
        optim: read(OPTIM_FILE)?,
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
