//! Hugging Face checkpoints: import a `LlamaForCausalLM` or `MistralForCausalLM` directory
//! (config.json + safetensors) into a `Llama`, and export one back.
//!
//! ```ignore
//! let checkpoint = HfCheckpoint::open("EuroLLM-1.7B")?;
//! let model = checkpoint.load::<B>(&device, true)?;
//! // … fine-tune …
//! let options = ExportOptions {
//!     source: Some(checkpoint.hf_config().clone()),
//!     tokenizer_dir: Some(checkpoint.dir().to_path_buf()),
//!     ..Default::default()
//! };
//! export(&model, checkpoint.config(), Path::new("out"), &options)?;
//! ```

mod checkpoint;
mod config;
mod dtype;
mod export;
mod load;
mod names;
mod params;
mod progress;
mod rope;

pub use checkpoint::{HfCheckpoint, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
pub use config::{Architecture, HfConfig, HARMLESS_FIELDS};
pub use dtype::HfDtype;
pub use export::{export, ExportOptions, ExportSummary, DEFAULT_MAX_SHARD_BYTES, TOKENIZER_FILES};
