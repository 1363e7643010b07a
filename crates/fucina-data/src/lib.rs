//! Data side of fucina: tokenizers, binary token shards, corpus preparation
//! and the deterministic per-rank batch loader.
//!
//! Nothing here depends on burn: the trainer receives plain `u32` token
//! buffers, so this crate can be tested and reused without a tensor backend.

pub mod chat;
pub mod corpus;
pub mod dataset;
mod fsutil;
mod input;
pub mod loader;
pub mod prepare;
mod progress;
pub mod shard;
pub mod tokenizer;

pub use chat::{ChatEncoder, ChatTemplate, Conversation, EncodedChat, TokenizerConfig};
pub use dataset::TokenDataset;
pub use loader::{
    sequential_batch, sequential_batch_count, sequential_batch_with_document_mask, Batch,
    BatchSpec, Loader, LoaderState, SourceState,
};
pub use prepare::{prepare, PrepareMeta, PrepareOptions, PrepareSummary};
pub use shard::{MaskShard, MaskWriter, ShardWriter, TokenShard};
pub use tokenizer::{train_bpe, TextTokenizer};
