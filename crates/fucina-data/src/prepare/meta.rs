//! `meta.json`: what a prepared directory holds and how it was made.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of `format`, which tells a prepare output from any other meta.json.
pub const META_FORMAT: &str = "fucina-prepare";
pub const META_FILE: &str = "meta.json";

/// Contents of `meta.json`. It is written last, so its presence means the
/// shards next to it are complete. It holds nothing time- or host-dependent,
/// so reruns are byte-identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareMeta {
    pub format: String,
    pub fucina_data_version: String,
    /// Hex SHA-256 of the tokenizer JSON.
    pub tokenizer_sha256: String,
    pub vocab_size: u32,
    pub eos_id: u32,
    pub bytes_per_token: u32,
    pub val_fraction: f64,
    pub shard_tokens: usize,
    /// Inputs as given on the command line.
    pub inputs: Vec<String>,
    /// Files actually read, in order, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
    pub train: SplitMeta,
    pub val: SplitMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMeta {
    pub docs: u64,
    /// Including one EOS per document.
    pub tokens: u64,
    /// Shard file names, relative to the directory, in stream order.
    pub shards: Vec<String>,
}

impl PrepareMeta {
    /// Reads `<dir>/meta.json`, refusing anything not written by `prepare`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let meta: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fucina prepare meta.json", path.display()))?;
        if meta.format != META_FORMAT {
            bail!(
                "{}: format is {:?}, expected {META_FORMAT:?}",
                path.display(),
                meta.format
            );
        }
        Ok(meta)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self).context("serializing meta.json")?;
        json.push('\n');
        crate::fsutil::write_atomic(&dir.join(META_FILE), json.as_bytes())
    }
}
