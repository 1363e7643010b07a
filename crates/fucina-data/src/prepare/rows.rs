//! One split's output for chat data: fixed rows of `row_len` tokens with a
//! loss mask, in token shards with a `.mask` file beside each.

use crate::shard::{mask_path, MaskWriter, ShardWriter, MASK_DOC_START, MASK_TARGET};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Writes `<prefix>_NNNNNN.bin` and `<prefix>_NNNNNN.mask` holding whole
/// rows only, as many as fit in `shard_tokens` (at least one). Text
/// documents are packed: each followed by EOS, cut into rows that overlap
/// by one token so every token is a target exactly once, the last row padded.
/// When marking documents (`--pack`), each text document's first token is
/// marked as a document start, so that attention stops at the EOS before it.
pub(crate) struct RowSink {
    dir: PathBuf,
    prefix: &'static str,
    vocab_size: u32,
    eos_id: u32,
    pad_id: u32,
    row_len: usize,
    rows_per_shard: u64,
    current: Option<(ShardWriter, MaskWriter)>,
    rows_in_shard: u64,
    /// Packed text waiting to fill a row, and its mask.
    text: Vec<u32>,
    text_mask: Vec<u8>,
    mark_documents: bool,
    pub shards: Vec<String>,
    pub rows: u64,
    pub text_rows: u64,
    pub conversation_rows: u64,
    /// Padding in conversation rows.
    pub padding: u64,
}

impl RowSink {
    pub fn new(
        dir: &Path,
        prefix: &'static str,
        vocab_size: u32,
        eos_id: u32,
        pad_id: u32,
        row_len: usize,
        shard_tokens: usize,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            prefix,
            vocab_size,
            eos_id,
            pad_id,
            row_len,
            rows_per_shard: (shard_tokens / row_len).max(1) as u64,
            current: None,
            rows_in_shard: 0,
            text: Vec::new(),
            text_mask: Vec::new(),
            mark_documents: false,
            shards: vec![],
            rows: 0,
            text_rows: 0,
            conversation_rows: 0,
            padding: 0,
        }
    }

    pub fn marking_documents(mut self, on: bool) -> Self {
        self.mark_documents = on;
        self
    }

    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Appends a row of one or more conversations (see `push_row`).
    pub fn push_conversations(&mut self, tokens: &[u32], mask: &[u8]) -> Result<()> {
        self.push_row(tokens, mask)?;
        self.conversation_rows += 1;
        self.padding += (self.row_len - tokens.len()) as u64;
        Ok(())
    }

    /// Appends a row of at most `row_len` tokens, padded to `row_len`.
    pub fn push_row(&mut self, tokens: &[u32], mask: &[u8]) -> Result<()> {
        debug_assert!(tokens.len() <= self.row_len && tokens.len() == mask.len());
        let pad = self.row_len - tokens.len();
        let (writer, masks) = match &mut self.current {
            Some(w) => w,
            None => {
                let name = format!("{}_{:06}.bin", self.prefix, self.shards.len());
                let path = self.dir.join(&name);
                let tokens = ShardWriter::create(&path, self.vocab_size, Some(self.eos_id))?;
                let masks = MaskWriter::create(&mask_path(&path), self.row_len)?;
                self.shards.push(name);
                self.rows_in_shard = 0;
                self.current.insert((tokens, masks))
            }
        };
        writer.push(tokens)?;
        writer.push(&vec![self.pad_id; pad])?;
        masks.push(mask)?;
        masks.push(&vec![0; pad])?;
        self.rows += 1;
        self.rows_in_shard += 1;
        if self.rows_in_shard == self.rows_per_shard {
            self.close_shard()?;
        }
        Ok(())
    }

    /// Appends a text document and EOS to the packed text, writing every row it fills.
    pub fn push_text(&mut self, tokens: &[u32]) -> Result<()> {
        self.text.extend_from_slice(tokens);
        self.text.push(self.eos_id);
        let first = match self.mark_documents {
            true => MASK_TARGET | MASK_DOC_START,
            false => MASK_TARGET,
        };
        self.text_mask.push(first);
        self.text_mask.resize(self.text.len(), MASK_TARGET);
        while self.text.len() >= self.row_len {
            let row: Vec<u32> = self.text[..self.row_len].to_vec();
            let mask: Vec<u8> = self.text_mask[..self.row_len].to_vec();
            self.push_row(&row, &mask)?;
            self.text_rows += 1;
            self.text.drain(..self.row_len - 1);
            self.text_mask.drain(..self.row_len - 1);
        }
        Ok(())
    }

    /// Writes the last, padded text row (unless only the token carried over
    /// from the previous row is left, which is already a target there) and
    /// closes the files.
    pub fn finish(&mut self) -> Result<()> {
        let carried = usize::from(self.text_rows > 0);
        if self.text.len() > carried {
            let text = std::mem::take(&mut self.text);
            let mask = std::mem::take(&mut self.text_mask);
            self.push_row(&text, &mask)?;
            self.text_rows += 1;
        }
        self.close_shard()
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some((tokens, masks)) = self.current.take() {
            tokens.finish()?;
            masks.finish()?;
        }
        Ok(())
    }
}
