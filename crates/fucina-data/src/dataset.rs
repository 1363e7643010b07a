//! Several shards seen as one token stream.

use crate::shard::TokenShard;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The concatenation of shards in the given order. Windows may straddle a
/// shard boundary: shards are just a way to keep files a manageable size.
#[derive(Debug)]
pub struct TokenDataset {
    shards: Vec<TokenShard>,
    /// `starts[i]` is the global index of shard `i`'s first token; the last
    /// entry is the total length.
    starts: Vec<usize>,
    vocab_size: Option<u32>,
    eos_id: Option<u32>,
}

impl TokenDataset {
    /// Opens the shards in order; they must agree on vocab size and EOS id
    /// where they record them, since mixing tokenizers silently would corrupt training.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            bail!("no shard files given");
        }
        let mut shards = Vec::with_capacity(paths.len());
        let mut starts = vec![0usize];
        let (mut vocab_size, mut eos_id) = (None, None);
        for path in paths {
            let shard = TokenShard::open(path)?;
            vocab_size = agree(vocab_size, shard.vocab_size(), "vocab size", path)?;
            eos_id = agree(eos_id, shard.eos_id(), "eos id", path)?;
            let end = starts
                .last()
                .copied()
                .unwrap_or(0)
                .checked_add(shard.len())
                .context("dataset too large")?;
            starts.push(end);
            shards.push(shard);
        }
        Ok(Self {
            shards,
            starts,
            vocab_size,
            eos_id,
        })
    }

    /// Opens every `<prefix>_*.bin` in `dir`, sorted by file name (the
    /// zero-padded indices `prepare` writes sort in stream order).
    pub fn open_glob_dir(dir: &Path, prefix: &str) -> Result<Self> {
        let want = format!("{prefix}_");
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&want) && name.ends_with(".bin") {
                paths.push(entry.path());
            }
        }
        if paths.is_empty() {
            bail!("no {prefix}_*.bin shards in {}", dir.display());
        }
        paths.sort();
        Self::open(&paths)
    }

    /// Total number of tokens.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shards(&self) -> &[TokenShard] {
        &self.shards
    }

    /// The vocab size recorded by the shards, if any records it.
    pub fn vocab_size(&self) -> Option<u32> {
        self.vocab_size
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Copies tokens `[start, start + out.len())` of the concatenated stream.
    ///
    /// # Panics
    /// If the range extends past the end, like slice indexing.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        let end = start.checked_add(out.len()).filter(|&e| e <= self.len());
        assert!(
            end.is_some(),
            "dataset read of [{start}, {start}+{}) past the end ({} tokens)",
            out.len(),
            self.len()
        );
        // Last shard whose start is <= `start`; empty shards are skipped naturally.
        let mut shard = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let (mut pos, mut done) = (start, 0);
        while done < out.len() {
            let local = pos - self.starts[shard];
            let take = (self.shards[shard].len() - local).min(out.len() - done);
            self.shards[shard].read(local, &mut out[done..done + take]);
            done += take;
            pos += take;
            shard += 1;
        }
    }
}

fn agree(seen: Option<u32>, new: Option<u32>, what: &str, path: &Path) -> Result<Option<u32>> {
    match (seen, new) {
        (Some(a), Some(b)) if a != b => {
            bail!(
                "{}: {what} {b} differs from {a} in the preceding shards",
                path.display()
            )
        }
        _ => Ok(seen.or(new)),
    }
}
