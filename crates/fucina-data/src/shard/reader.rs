//! Memory-mapped, validated read access to one shard.

use super::header::{self, Header, ShardKind, TokenWidth};
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A fucina or llm.c shard, validated on open so later reads cannot hit a
/// short file.
#[derive(Debug)]
pub struct TokenShard {
    path: PathBuf,
    map: Mmap,
    header: Header,
    len: usize,
}

impl TokenShard {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).with_context(|| format!("opening shard {}", path.display()))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("reading metadata of {}", path.display()))?
            .len();
        // SAFETY: shards are immutable once renamed into place; mutating a
        // mapped shard from outside is outside this crate's contract.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("memory-mapping {}", path.display()))?;
        let header = header::parse(&map).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let len = check_size(&header, file_len)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            map,
            header,
            len,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> ShardKind {
        self.header.kind
    }

    pub fn width(&self) -> TokenWidth {
        self.header.width
    }

    /// `None` for llm.c shards, whose header does not record it.
    pub fn vocab_size(&self) -> Option<u32> {
        self.header.vocab_size
    }

    /// `None` if the tokenizer had no EOS token, and for llm.c shards.
    pub fn eos_id(&self) -> Option<u32> {
        self.header.eos_id
    }

    /// Copies tokens `[start, start + out.len())`, widened to `u32`.
    ///
    /// # Panics
    /// If the range extends past the end of the shard, like slice indexing.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        let end = start.checked_add(out.len()).filter(|&e| e <= self.len);
        let Some(end) = end else {
            panic!(
                "{}: read of tokens [{start}, {start}+{}) past the end ({} tokens)",
                self.path.display(),
                out.len(),
                self.len
            );
        };
        let w = self.header.width.bytes();
        let base = self.header.data_offset();
        let bytes = &self.map[base + start * w..base + end * w];
        match self.header.width {
            TokenWidth::U16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u16::from_le_bytes([c[0], c[1]]) as u32;
                }
            }
            TokenWidth::U32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
    }
}

/// The file must be exactly header + tokens: a short file means an
/// interrupted copy, a long one a header that disagrees with its data.
fn check_size(header: &Header, file_len: u64) -> Result<usize> {
    let offset = header.data_offset() as u64;
    let width = header.width.bytes() as u64;
    let held = file_len.saturating_sub(offset);
    let expected = header
        .count
        .checked_mul(width)
        .filter(|b| b.checked_add(offset).is_some());
    match expected {
        Some(bytes) if bytes == held => {}
        Some(bytes) if bytes > held => bail!(
            "truncated: header says {} tokens, file holds {}{}",
            header.count,
            held / width,
            if !held.is_multiple_of(width) {
                " and a partial token"
            } else {
                ""
            }
        ),
        Some(_) => bail!(
            "header says {} tokens, but the file holds {} bytes of tokens ({} trailing bytes)",
            header.count,
            held,
            held - header.count * width
        ),
        None => bail!("header token count {} is impossibly large", header.count),
    }
    let len = usize::try_from(header.count)
        .context("shard too large for this platform's address space")?;
    Ok(len)
}
