//! A fingerprint of the `model.hf` directory an adapter-only checkpoint was trained on: each
//! file's size and a SHA-256 over its safetensors header and samples spread through it. About
//! 1 MiB is read per file, so a 15 GB base is checked in well under a second; it tells another
//! model, revision, dtype or a truncated download apart, though not one altered byte inside a
//! tensor, which would take reading the whole base.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub const BASE_FILE: &str = "base.json";
const SAMPLES: u64 = 16;
const SAMPLE_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePrint {
    pub bytes: u64,
    pub sampled_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFingerprint {
    /// Where the base was when the checkpoint was written (for the message only).
    pub dir: String,
    pub files: BTreeMap<String, FilePrint>,
}

/// The weights and the config: what the adapters were trained against.
fn counts(name: &str) -> bool {
    name.ends_with(".safetensors") || name == "config.json"
}

impl BaseFingerprint {
    pub fn of(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if counts(&name) && entry.file_type()?.is_file() {
                let print = print(&entry.path())
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                files.insert(name, print);
            }
        }
        Ok(Self {
            dir: dir.display().to_string(),
            files,
        })
    }

    /// Refuses a base that is not the one `self` was taken of, naming the files that differ.
    pub fn check(&self, dir: &Path) -> Result<()> {
        let now = Self::of(dir)?;
        let mut differ = Vec::new();
        for (name, was) in &self.files {
            match now.files.get(name) {
                None => differ.push(format!("{name} is missing")),
                Some(is) if is.bytes != was.bytes => differ.push(format!(
                    "{name} has {} bytes, the checkpoint's base had {}",
                    is.bytes, was.bytes
                )),
                Some(is) if is != was => differ.push(format!("{name} has other contents")),
                Some(_) => {}
            }
        }
        for name in now.files.keys().filter(|n| !self.files.contains_key(*n)) {
            differ.push(format!("{name} was not in the checkpoint's base"));
        }
        if !differ.is_empty() {
            bail!(
                "model.hf {} is not the base these adapters were trained on ({}): {}",
                dir.display(),
                self.dir,
                differ.join("; ")
            );
        }
        Ok(())
    }
}

fn print(path: &Path) -> Result<FilePrint> {
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut hash = Sha256::new();
    hash.update(bytes.to_le_bytes());
    let mut chunk = |at: u64, len: u64, hash: &mut Sha256| -> Result<()> {
        let len = len.min(bytes.saturating_sub(at));
        let mut buf = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut buf)?;
        hash.update(&buf);
        Ok(())
    };
    // A safetensors header names every tensor with its dtype, shape and offsets.
    let header = match path.extension().is_some_and(|e| e == "safetensors") && bytes >= 8 {
        true => {
            let mut len = [0u8; 8];
            File::open(path)?.read_exact(&mut len)?;
            (8 + u64::from_le_bytes(len)).min(bytes)
        }
        false => 0,
    };
    chunk(0, header.max(SAMPLE_BYTES), &mut hash)?;
    for i in 1..=SAMPLES {
        let at = bytes.saturating_sub(SAMPLE_BYTES) * i / SAMPLES;
        chunk(at, SAMPLE_BYTES, &mut hash)?;
    }
    Ok(FilePrint {
        bytes,
        sampled_sha256: format!("{:x}", hash.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_resized_or_extra_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let weights = tmp.path().join("model.safetensors");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&weights, &data).unwrap();
        std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
        std::fs::write(tmp.path().join("README.md"), "ignored").unwrap();
        let print = BaseFingerprint::of(tmp.path()).unwrap();
        assert_eq!(print.files.len(), 2);
        print.check(tmp.path()).unwrap();

        // The last sample ends at the file's end: a change there is seen.
        let mut changed = data.clone();
        *changed.last_mut().unwrap() ^= 1;
        std::fs::write(&weights, &changed).unwrap();
        let err = format!("{:#}", print.check(tmp.path()).unwrap_err());
        assert!(
            err.contains("model.safetensors has other contents"),
            "{err}"
        );

        std::fs::write(&weights, &data[..1000]).unwrap();
        let err = format!("{:#}", print.check(tmp.path()).unwrap_err());
        assert!(err.contains("model.safetensors has 1000 bytes"), "{err}");

        std::fs::write(&weights, &data).unwrap();
        std::fs::write(tmp.path().join("model-2.safetensors"), "x").unwrap();
        let err = format!("{:#}", print.check(tmp.path()).unwrap_err());
        assert!(err.contains("model-2.safetensors was not in"), "{err}");
    }
}
