//! Turning text corpora into train/validation token shards.
//!
//! Inputs are walked and cut into documents as described in the `input`
//! module docs (text files split at empty lines; JSONL `{"text": …}` lines;
//! directories searched for `.txt`, `.md`, `.jsonl`). Each document is
//! tokenized and followed by the tokenizer's EOS token, then appended to the
//! train or validation stream (see `split`). The output directory receives
//! `train_NNNNNN.bin`, `val_NNNNNN.bin` and, last, `meta.json`.
//!
//! Inputs are read twice: a first pass counts documents, so the split can
//! guarantee a non-empty validation set and every malformed input is
//! reported before any output is written.

mod meta;
mod outdir;
mod sink;
mod split;

pub use meta::{PrepareMeta, SplitMeta, META_FILE, META_FORMAT};

use crate::input::{collect_files, Documents, InputFile};
use crate::progress::bytes_bar;
use crate::shard::TokenWidth;
use crate::tokenizer::TextTokenizer;
use anyhow::{bail, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sink::SplitSink;
use split::Split;
use std::path::{Path, PathBuf};

/// Documents are tokenized in batches of about this many bytes, large
/// enough to keep every core busy, small enough to bound memory.
const BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Share of documents (by count) sent to validation, in `[0, 1)`.
    pub val_fraction: f64,
    /// Tokens per shard file (the last one of each split may hold fewer).
    pub shard_tokens: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            val_fraction: 0.01,
            shard_tokens: 100_000_000,
            progress: false,
        }
    }
}

/// Token counts include one EOS per document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareSummary {
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub train_docs: u64,
    pub val_docs: u64,
}

/// Tokenizes `inputs` into train/validation shards in `out_dir` (see the
/// module docs); `out_dir` must be new, empty, or a previous prepare output,
/// which is replaced. Deterministic: the same inputs, tokenizer and options
/// give byte-identical output.
pub fn prepare(
    tokenizer: &TextTokenizer,
    inputs: &[PathBuf],
    out_dir: &Path,
    opts: &PrepareOptions,
) -> Result<PrepareSummary> {
    if !(0.0..1.0).contains(&opts.val_fraction) {
        bail!("val_fraction must be in [0, 1), got {}", opts.val_fraction);
    }
    if opts.shard_tokens == 0 {
        bail!("shard_tokens must be positive");
    }
    let Some(eos_id) = tokenizer.eos_id() else {
        bail!(
            "the tokenizer has no EOS token (looked for </s>, <|endoftext|>, <|end_of_text|>, <eos>); \
             documents must be separated, so add one of these as a special token, \
             or train a tokenizer with train_bpe, which adds <|endoftext|>"
        );
    };
    let vocab_size = tokenizer.vocab_size();
    let files = collect_files(inputs)?;
    let total_bytes = files.iter().map(|f| f.bytes).sum();

    let bar = bytes_bar(total_bytes, opts.progress, "scanning");
    let n_docs = count_documents(&files, &bar)?;
    if n_docs == 0 {
        bail!("the inputs contain no documents (all files are empty)");
    }
    let split = Split::new(n_docs, opts.val_fraction);

    outdir::claim(out_dir)?;
    let mut train = SplitSink::new(out_dir, "train", vocab_size, eos_id, opts.shard_tokens);
    let mut val = SplitSink::new(out_dir, "val", vocab_size, eos_id, opts.shard_tokens);
    bar.reset();
    bar.set_message("tokenizing");
    let mut docs = Documents::new(files.clone(), bar.clone());
    let mut index = 0u64;
    loop {
        let batch = next_batch(&mut docs)?;
        if batch.is_empty() {
            break;
        }
        for tokens in tokenizer.encode_batch(batch)? {
            let sink = if split.is_val(index) {
                &mut val
            } else {
                &mut train
            };
            sink.push_doc(&tokens)?;
            index += 1;
        }
    }
    if index != n_docs {
        bail!("the inputs changed while being read: {n_docs} documents when counted, {index} when tokenized");
    }
    train.finish()?;
    val.finish()?;
    bar.finish_and_clear();

    let meta = PrepareMeta {
        format: META_FORMAT.into(),
        fucina_data_version: env!("CARGO_PKG_VERSION").into(),
        tokenizer_sha256: tokenizer.sha256().into(),
        vocab_size,
        eos_id,
        bytes_per_token: TokenWidth::for_vocab(vocab_size).bytes() as u32,
        val_fraction: opts.val_fraction,
        shard_tokens: opts.shard_tokens,
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        files: files
            .iter()
            .map(|f| (f.path.display().to_string(), f.bytes))
            .collect(),
        train: SplitMeta {
            docs: train.docs,
            tokens: train.tokens,
            shards: train.shards,
        },
        val: SplitMeta {
            docs: val.docs,
            tokens: val.tokens,
            shards: val.shards,
        },
    };
    meta.write(out_dir)?;
    Ok(PrepareSummary {
        train_tokens: meta.train.tokens,
        val_tokens: meta.val.tokens,
        train_docs: meta.train.docs,
        val_docs: meta.val.docs,
    })
}

/// First pass: validates every input and counts its documents.
fn count_documents(files: &[InputFile], bar: &ProgressBar) -> Result<u64> {
    let mut n = 0;
    for doc in Documents::new(files.to_vec(), bar.clone()) {
        doc?;
        n += 1;
    }
    Ok(n)
}

fn next_batch(docs: &mut Documents) -> Result<Vec<String>> {
    let (mut batch, mut bytes) = (Vec::new(), 0);
    while bytes < BATCH_BYTES {
        let Some(doc) = docs.next().transpose()? else {
            break;
        };
        bytes += doc.len();
        batch.push(doc);
    }
    Ok(batch)
}
