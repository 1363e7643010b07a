//! fucina-model: a Llama-family decoder on burn, with Hugging Face config names.

pub mod attention;
pub mod config;
pub mod documents;
pub mod fused;
pub mod hf;
pub mod kv_cache;
pub mod lora;
pub mod mlp;
pub mod model;
pub mod peft;
pub mod presets;
pub mod rope;

pub use config::LlamaConfig;
pub use documents::{Documents, Span};
pub use kv_cache::KvCache;
pub use lora::LoraSpec;
pub use model::{cross_entropy, Llama};
