//! Several shards seen as one token stream, or, when every shard has a
//! loss mask next to it (`train_000000.mask` beside `train_000000.bin`, as
//! `prepare` writes for chat data), as fixed rows of one example each, or of
//! several when the masks mark document starts (`prepare --pack`).

use crate::shard::{mask_path, MaskShard, TokenShard};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The concatenation of shards in the given order. Windows may straddle a
/// shard boundary: shards are just a way to keep files a manageable size.
///
/// With masks the stream is cut into rows of `row_len()` tokens, each
/// padded to that length, and every token has a mask byte saying whether it
/// counts as a target; training windows are then the rows themselves.
#[derive(Debug)]
pub struct TokenDataset {
    shards: Vec<TokenShard>,
    /// One per shard, or none at all.
    masks: Vec<MaskShard>,
    row_len: Option<usize>,
    /// `starts[i]` is the global index of shard `i`'s first token; the last
    /// entry is the total length.
    starts: Vec<usize>,
    vocab_size: Option<u32>,
    eos_id: Option<u32>,
}

impl TokenDataset {
    /// Opens the shards in order, with the `.mask` file next to each if there
    /// is one. They must agree on vocab size and EOS id where they record
    /// them, since mixing tokenizers silently would corrupt training, and
    /// either all have masks of one row length or none has.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            bail!("no shard files given");
        }
        let mut shards = Vec::with_capacity(paths.len());
        let mut masks = Vec::new();
        let mut starts = vec![0usize];
        let (mut vocab_size, mut eos_id) = (None, None);
        for (i, path) in paths.iter().enumerate() {
            let shard = TokenShard::open(path)?;
            vocab_size = agree(vocab_size, shard.vocab_size(), "vocab size", path)?;
            eos_id = agree(eos_id, shard.eos_id(), "eos id", path)?;
            let mask_file = mask_path(path);
            // A mask may sit next to a shard named `x.mask` itself; never pair a file with itself.
            let has_mask = mask_file != *path && mask_file.is_file();
            if i > 0 && has_mask == masks.is_empty() {
                let (with, without) = if has_mask {
                    (path, &paths[0])
                } else {
                    (&paths[0], path)
                };
                bail!(
                    "{} has a loss mask (.mask file) but {} has none: chat (masked) and plain \
                     token shards cannot be mixed in one dataset",
                    with.display(),
                    without.display()
                );
            }
            if has_mask {
                let mask = MaskShard::open(&mask_file)?;
                if mask.len() != shard.len() {
                    bail!(
                        "{} holds {} mask bytes but its shard {} holds {} tokens",
                        mask_file.display(),
                        mask.len(),
                        path.display(),
                        shard.len()
                    );
                }
                if let Some(first) = masks
                    .first()
                    .filter(|m: &&MaskShard| m.row_len() != mask.row_len())
                {
                    bail!(
                        "{} has rows of {} tokens but {} has rows of {}: they were prepared for \
                         different sequence lengths",
                        mask_file.display(),
                        mask.row_len(),
                        first.path().display(),
                        first.row_len()
                    );
                }
                masks.push(mask);
            }
            let end = starts
                .last()
                .copied()
                .unwrap_or(0)
                .checked_add(shard.len())
                .context("dataset too large")?;
            starts.push(end);
            shards.push(shard);
        }
        let row_len = masks.first().map(MaskShard::row_len);
        Ok(Self {
            shards,
            masks,
            row_len,
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

    /// Tokens per row when the dataset has loss masks (chat data), else `None`.
    pub fn row_len(&self) -> Option<usize> {
        self.row_len
    }

    pub fn has_mask(&self) -> bool {
        self.row_len.is_some()
    }

    /// Whether the masks mark document starts, so rows may hold several
    /// documents (packed conversations); otherwise each row is one.
    pub fn marks_starts(&self) -> bool {
        self.masks.iter().any(MaskShard::marks_starts)
    }

    /// Fails, saying which sequence length the data was prepared for, if
    /// this is row data whose rows are not `seq_len + 1` tokens long.
    pub fn check_seq_len(&self, seq_len: usize) -> Result<()> {
        match self.row_len {
            Some(row) if row != seq_len + 1 => bail!(
                "{} was prepared for seq_len {} (rows of {row} tokens, one example each), \
                 not seq_len {seq_len}: set the sequence length to {}, or prepare the data again \
                 with --seq-len {seq_len}",
                self.shards[0]
                    .path()
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display(),
                row - 1,
                row - 1,
            ),
            _ => Ok(()),
        }
    }

    /// How many `seq_len + 1`-token training windows the dataset holds:
    /// its rows for row data (0 if `check_seq_len` fails), else windows
    /// starting every `seq_len` tokens.
    pub fn windows(&self, seq_len: usize) -> usize {
        match self.row_len {
            Some(row) if row == seq_len + 1 => self.len() / row,
            Some(_) => 0,
            None if seq_len == 0 || self.len() < seq_len + 1 => 0,
            None => (self.len() - 1) / seq_len,
        }
    }

    /// Stream position of window `w`'s first token (see `windows`).
    pub fn window_start(&self, seq_len: usize, w: usize) -> usize {
        w * self.row_len.unwrap_or(seq_len)
    }

    /// Copies the target flags (0 or 1) of tokens `[start, start + out.len())`.
    ///
    /// # Panics
    /// If the dataset has no masks, or the range extends past the end.
    pub fn read_mask(&self, start: usize, out: &mut [u8]) {
        self.check_mask_read(start, out.len());
        self.each_piece(start, out.len(), |shard, local, range| {
            self.masks[shard].read(local, &mut out[range]);
        });
    }

    /// Copies the document-start flags (0 or 1) of tokens `[start, start +
    /// out.len())`: all 0 where the masks mark none.
    ///
    /// # Panics
    /// As `read_mask`.
    pub fn read_starts(&self, start: usize, out: &mut [u8]) {
        self.check_mask_read(start, out.len());
        self.each_piece(start, out.len(), |shard, local, range| {
            self.masks[shard].read_starts(local, &mut out[range]);
        });
    }

    fn check_mask_read(&self, start: usize, len: usize) {
        assert!(self.has_mask(), "mask read on a dataset without loss masks");
        let end = start.checked_add(len).filter(|&e| e <= self.len());
        assert!(
            end.is_some(),
            "dataset mask read of [{start}, {start}+{len}) past the end ({} tokens)",
            self.len()
        );
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
        self.each_piece(start, out.len(), |shard, local, range| {
            self.shards[shard].read(local, &mut out[range]);
        });
    }

    /// Calls `f(shard, first token in shard, range of the output)` for each
    /// shard that `[start, start + len)` touches, in order.
    fn each_piece(
        &self,
        start: usize,
        len: usize,
        mut f: impl FnMut(usize, usize, std::ops::Range<usize>),
    ) {
        // Last shard whose start is <= `start`; empty shards are skipped naturally.
        let mut shard = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let (mut pos, mut done) = (start, 0);
        while done < len {
            let local = pos - self.starts[shard];
            let take = (self.shards[shard].len() - local).min(len - done);
            f(shard, local, done..done + take);
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
