//! `manifest.json` in every checkpoint: the size and SHA-256 of each file, written before the
//! DONE marker, so a truncated or altered file is found before it is loaded.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, Entry>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Entry {
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

impl Manifest {
    pub fn add(&mut self, name: &str, bytes: &[u8]) {
        self.files.insert(name.to_string(), Entry::of(bytes));
    }

    /// `None` for checkpoints written before manifests existed.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let manifest =
            serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?;
        Ok(Some(manifest))
    }

    /// Checks the bytes read for `name` against what was written.
    pub fn verify(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(entry) = self.files.get(name) else {
            bail!("{name} is not in the manifest");
        };
        if entry.bytes != bytes.len() as u64 {
            bail!(
                "{name} has {} bytes, the manifest says {} (truncated?)",
                bytes.len(),
                entry.bytes
            );
        }
        if entry.sha256 != sha256_hex(bytes) {
            bail!("{name} does not match its SHA-256 in the manifest (corrupted)");
        }
        Ok(())
    }
}
