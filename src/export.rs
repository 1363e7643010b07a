//! `fucina export`: a run's checkpoint → a Hugging Face directory or a PEFT adapter.

use anyhow::{bail, Result};
use fucina_model::hf::{HfDtype, DEFAULT_MAX_SHARD_BYTES};
use fucina_train::export::{export, ExportRequest, Exported};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A checkpoint directory, or a run directory (its newest checkpoint is taken).
    source: PathBuf,
    /// The directory to write (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Stored precision [default: that of the model.hf checkpoint the run started from, else f32].
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    dtype: Option<String>,
    /// For a LoRA run: write the full model with the adapters folded in, instead of the
    /// PEFT adapter.
    #[arg(long)]
    merge: bool,
    /// Split the weights into files of at most this many GB (transformers' default: 5).
    #[arg(long, default_value_t = DEFAULT_MAX_SHARD_BYTES as f64 / 1e9)]
    max_shard_gb: f64,
    /// Replace OUT if it already holds files.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if !(args.max_shard_gb.is_finite() && args.max_shard_gb > 0.0) {
        bail!("--max-shard-gb must be positive");
    }
    let dtype = match args.dtype.as_deref() {
        Some(d) => Some(
            d.parse::<HfDtype>()
                .map_err(|e| anyhow::anyhow!("--dtype {d}: {e}"))?,
        ),
        None => None,
    };
    let request = ExportRequest {
        source: args.source,
        out: args.out.clone(),
        dtype,
        merge: args.merge,
        max_shard_bytes: (args.max_shard_gb * 1e9) as u64,
        overwrite: args.overwrite,
        progress: true,
    };
    match export(request)? {
        Exported::Model(s) => eprintln!(
            "wrote {}: {} tensors, {:.1} MB of {:?} weights in {} file(s), tokenizer files: {}",
            s.dir.display(),
            s.tensors,
            s.total_bytes as f64 / 1e6,
            s.dtype,
            s.weight_files.len(),
            if s.tokenizer_files.is_empty() {
                "none".to_string()
            } else {
                s.tokenizer_files.join(", ")
            }
        ),
        Exported::Adapter(s) => eprintln!(
            "wrote the LoRA adapter to {}: {} tensors, {} parameters (PEFT layout; --merge writes the full model)",
            s.dir.display(),
            s.tensors,
            s.parameters
        ),
    }
    Ok(())
}
