//! Where a run starts: the model (a Hugging Face checkpoint or fresh weights, then LoRA) and,
//! when resuming, the checkpoint every rank receives from rank 0.

use crate::checkpoint;
use crate::config::RunConfig;
use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_dist::Communicator;
use fucina_model::hf::HfCheckpoint;
use fucina_model::{Llama, LlamaConfig};
use std::path::PathBuf;

/// The model a run starts from: a Hugging Face checkpoint or fresh weights, then LoRA
/// adapters if the run asks for them.
pub(crate) fn initial_model<B: AutodiffBackend>(
    config: &RunConfig,
    model_config: &LlamaConfig,
    comm: &dyn Communicator,
    device: &B::Device,
) -> Result<Llama<B>> {
    let model = match config.hf_dir()? {
        // Every rank reads the files itself (they sit on the cluster's shared filesystem): a
        // 7B model is larger than one MPI message may be, and reading is deterministic.
        Some(dir) => HfCheckpoint::open(&dir)?
            .load::<B>(device, comm.is_root())
            .with_context(|| format!("loading the model.hf checkpoint {}", dir.display()))?,
        None => fresh_model(model_config, config.seed, comm, device)?,
    };
    Ok(match &config.lora {
        Some(spec) => model.with_lora(spec, config.seed, device),
        None => model,
    })
}

/// Rank 0 initialises the weights and every rank loads its record, so that weights and the
/// parameter ids keying the optimizer state agree everywhere.
fn fresh_model<B: AutodiffBackend>(
    config: &LlamaConfig,
    seed: u64,
    comm: &dyn Communicator,
    device: &B::Device,
) -> Result<Llama<B>> {
    let mut bytes = Vec::new();
    if comm.is_root() {
        B::seed(device, seed);
        bytes = checkpoint::record_to_bytes::<B, _>(Llama::<B>::new(config, device).into_record())?;
    }
    comm.broadcast_bytes(0, &mut bytes)?;
    let record = checkpoint::record_from_bytes::<B, _>(bytes, device)?;
    Ok(Llama::new(config, device).load_record(record))
}

/// Rank 0 reads the checkpoint and broadcasts it, so that nodes need not see the same files.
pub(crate) fn load_checkpoint(
    config: &RunConfig,
    which: &str,
    model: &LlamaConfig,
    comm: &dyn Communicator,
) -> Result<Option<(PathBuf, checkpoint::Loaded)>> {
    let mut parts = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    if comm.is_root() {
        let found = checkpoint::open(&config.out_dir, which)
            .with_context(|| format!("--resume {which}"))?;
        if let Some((dir, loaded)) = found {
            checkpoint::check_model(&dir, model)?;
            checkpoint::check_lora(&dir, config.lora.as_ref())?;
            checkpoint::check_base(&dir, &loaded.state, config.hf_dir()?.as_deref())?;
            let state = serde_json::to_vec(&loaded.state)?;
            parts = [
                dir.to_string_lossy().into_owned().into_bytes(),
                loaded.model,
                loaded.optim,
                state,
            ];
        }
    }
    for part in &mut parts {
        comm.broadcast_bytes(0, part)?;
    }
    let [dir, model, optim, state] = parts;
    if dir.is_empty() {
        return Ok(None);
    }
    let state = serde_json::from_slice(&state).context("checkpoint state from rank 0")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
    Ok(Some((
        dir,
        checkpoint::Loaded {
            model,
            optim,
            state,
        },
    )))
}
