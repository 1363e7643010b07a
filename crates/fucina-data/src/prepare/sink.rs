//! One split's output: documents streamed into fixed-size shards.

use super::meta::SplitMeta;
use crate::shard::ShardWriter;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Writes `<prefix>_000000.bin`, `<prefix>_000001.bin`, … each holding
/// `shard_tokens` tokens except the last. Documents may straddle shards;
/// readers concatenate them. A split with no tokens gets no shard at all.
pub(crate) struct SplitSink {
    dir: PathBuf,
    prefix: &'static str,
    vocab_size: u32,
    eos_id: u32,
    shard_tokens: usize,
    current: Option<ShardWriter>,
    pub shards: Vec<String>,
    pub tokens: u64,
    pub docs: u64,
}

impl SplitSink {
    pub fn new(
        dir: &Path,
        prefix: &'static str,
        vocab_size: u32,
        eos_id: u32,
        shard_tokens: usize,
    ) -> Self {
        let dir = dir.to_owned();
        Self {
            dir,
            prefix,
            vocab_size,
            eos_id,
            shard_tokens,
            current: None,
            shards: vec![],
            tokens: 0,
            docs: 0,
        }
    }

    /// Appends a document's tokens followed by EOS.
    pub fn push_doc(&mut self, tokens: &[u32]) -> Result<()> {
        self.push(tokens)?;
        self.push(&[self.eos_id])?;
        self.docs += 1;
        Ok(())
    }

    /// Appends tokens as they are: no EOS, no document counted.
    pub fn push(&mut self, mut tokens: &[u32]) -> Result<()> {
        while !tokens.is_empty() {
            let writer = match &mut self.current {
                Some(w) => w,
                None => {
                    let name = format!("{}_{:06}.bin", self.prefix, self.shards.len());
                    let w = ShardWriter::create(
                        &self.dir.join(&name),
                        self.vocab_size,
                        Some(self.eos_id),
                    )?;
                    self.shards.push(name);
                    self.current.insert(w)
                }
            };
            let room = self.shard_tokens - writer.len() as usize;
            let (now, rest) = tokens.split_at(room.min(tokens.len()));
            writer.push(now)?;
            self.tokens += now.len() as u64;
            tokens = rest;
            if writer.len() as usize == self.shard_tokens {
                self.current.take().expect("open").finish()?;
            }
        }
        Ok(())
    }

    pub fn meta(&self) -> SplitMeta {
        SplitMeta {
            docs: self.docs,
            tokens: self.tokens,
            shards: self.shards.clone(),
        }
    }

    pub fn finish(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            w.finish()?;
        }
        Ok(())
    }
}
