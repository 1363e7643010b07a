//! Streaming shard writer.

use super::header::{self, TokenWidth, HEADER_BYTES};
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes one shard. Tokens go to `<path>.tmp`, which `finish` renames to
/// `path`, so a crash never leaves a half-written shard under the final name.
/// Dropping the writer without `finish` deletes the temporary file.
pub struct ShardWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    path: PathBuf,
    vocab_size: u32,
    eos_id: Option<u32>,
    width: TokenWidth,
    count: u64,
    buf: Vec<u8>,
}

impl ShardWriter {
    /// Token width is chosen from `vocab_size`: 2 bytes up to 65,536 ids, else 4.
    pub fn create(path: &Path, vocab_size: u32, eos_id: Option<u32>) -> Result<Self> {
        if vocab_size == 0 {
            bail!("cannot create shard {}: vocab size is 0", path.display());
        }
        if let Some(eos) = eos_id.filter(|&e| e >= vocab_size) {
            bail!(
                "cannot create shard {}: eos id {eos} is outside vocab size {vocab_size}",
                path.display()
            );
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp_path = PathBuf::from(tmp);
        let file =
            File::create(&tmp_path).with_context(|| format!("creating {}", tmp_path.display()))?;
        let width = TokenWidth::for_vocab(vocab_size);
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // Placeholder: the count is only known at `finish`, which rewrites it.
        out.write_all(&header::encode(width, 0, vocab_size, eos_id))
            .with_context(|| format!("writing {}", tmp_path.display()))?;
        Ok(Self {
            out: Some(out),
            tmp_path,
            path: path.to_owned(),
            vocab_size,
            eos_id,
            width,
            count: 0,
            buf: Vec::new(),
        })
    }

    /// Appends tokens; fails without writing anything if one is outside the vocabulary.
    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some(pos) = tokens.iter().position(|&t| t >= self.vocab_size) {
            bail!(
                "shard {}: token {} (at position {} of this push) is outside vocab size {}",
                self.path.display(),
                tokens[pos],
                pos,
                self.vocab_size
            );
        }
        self.buf.clear();
        match self.width {
            TokenWidth::U16 => tokens
                .iter()
                .for_each(|&t| self.buf.extend_from_slice(&(t as u16).to_le_bytes())),
            TokenWidth::U32 => tokens
                .iter()
                .for_each(|&t| self.buf.extend_from_slice(&t.to_le_bytes())),
        }
        let out = self.out.as_mut().expect("writer is open until finish");
        out.write_all(&self.buf)
            .with_context(|| format!("writing {}", self.tmp_path.display()))?;
        self.count += tokens.len() as u64;
        Ok(())
    }

    /// Tokens pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the final header, fsyncs, renames into place; returns the token count.
    pub fn finish(mut self) -> Result<u64> {
        let out = self.out.take().expect("writer is open until finish");
        let header = header::encode(self.width, self.count, self.vocab_size, self.eos_id);
        debug_assert_eq!(header.len(), HEADER_BYTES);
        crate::fsutil::publish_with_header(out, &header, &self.tmp_path, &self.path)?;
        Ok(self.count)
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}
