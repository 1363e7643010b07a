//! Binary token shards: a fixed 64-byte header followed by little-endian
//! token ids (byte layout in `FORMAT.md`). llm.c `.bin` shards are read too,
//! so existing preprocessed corpora can be trained on without conversion.
//!
//! Shards are memory-mapped rather than read, because the loader jumps to
//! random windows all over datasets far larger than RAM.

mod header;
mod mask;
mod reader;
mod writer;

pub use header::{
    ShardKind, TokenWidth, HEADER_BYTES, LLMC_HEADER_BYTES, LLMC_MAGIC_U16, LLMC_MAGIC_U32, MAGIC,
    NO_EOS, VERSION,
};
pub use mask::{
    mask_path, MaskShard, MaskWriter, MASK_DOC_START, MASK_EXTENSION, MASK_HEADER_BYTES,
    MASK_MAGIC, MASK_TARGET, MASK_VERSION,
};
pub use reader::TokenShard;
pub use writer::ShardWriter;
