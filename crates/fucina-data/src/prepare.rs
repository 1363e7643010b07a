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
//!
//! # Conversations
//!
//! If any JSONL line holds a conversation (`{"messages": [...]}`), the
//! output is *rows* instead of a stream, so that attention never crosses
//! from one example into another and positions start at 0 in each, as in
//! transformers' fine-tuning. This needs the model's chat template
//! (`PrepareOptions::chat_template`, a `tokenizer_config.json`) and the
//! training sequence length (`PrepareOptions::seq_len`):
//!
//! - each conversation is rendered with the template and tokenized (see
//!   `crate::chat`), becoming one row of exactly `seq_len + 1` tokens: cut
//!   at the end if longer (counted as truncated), padded with the config's
//!   `pad_token` (else EOS) if shorter;
//! - beside each `train_NNNNNN.bin` a `train_NNNNNN.mask` holds one byte
//!   per token, 1 where the token is a target that counts in the loss (the
//!   assistant replies with their end-of-turn), 0 elsewhere (prompts,
//!   padding). Conversations left with no such target are dropped and
//!   counted;
//! - text documents among the inputs (continued pre-training) are packed as
//!   in the stream layout, `doc EOS doc EOS …`, and cut into rows that
//!   overlap by one token, with every token counting; the last is padded;
//! - shards hold whole rows only; `meta.json` gains a `chat` section with
//!   the row length, template origin and SHA-256, the pad id and the counts.
//!
//! Messages are validated while counting; template errors (e.g. a template
//! that rejects the order of roles) surface while writing, naming the line,
//! and leave the directory without `meta.json`, so it is never taken for
//! complete output.

mod chat;
mod meta;
mod outdir;
mod rows;
mod sink;
mod split;

pub use meta::{ChatMeta, ChatSummary, PrepareMeta, SplitMeta, META_FILE, META_FORMAT};

use crate::input::{collect_files, Documents, InputFile, Location, Record, Records};
use crate::progress::bytes_bar;
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
    /// The `tokenizer_config.json` whose chat template formats
    /// conversations; required when the inputs hold any.
    pub chat_template: Option<PathBuf>,
    /// The training sequence length; required for conversations, which are
    /// stored one per row of `seq_len + 1` tokens. Unused for text.
    pub seq_len: Option<usize>,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            val_fraction: 0.01,
            shard_tokens: 100_000_000,
            progress: false,
            chat_template: None,
            seq_len: None,
        }
    }
}

/// Token counts include one EOS per document (for conversations, rows ×
/// row length, padding included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareSummary {
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub train_docs: u64,
    pub val_docs: u64,
    /// Set when the inputs held conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatSummary>,
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
    let files = collect_files(inputs)?;
    let total_bytes = files.iter().map(|f| f.bytes).sum();

    let bar = bytes_bar(total_bytes, opts.progress, "scanning");
    let (n_docs, first_chat) = count_records(&files, &bar)?;
    if n_docs == 0 {
        bail!("the inputs contain no documents (all files are empty)");
    }
    if let Some(first_chat) = first_chat {
        let inputs = chat::Inputs {
            paths: inputs,
            files: &files,
            n_records: n_docs,
            first_chat,
        };
        return chat::prepare_chat(tokenizer, inputs, out_dir, opts, &bar);
    }

    let Some(eos_id) = tokenizer.eos_id() else {
        bail!(
            "the tokenizer has no EOS token (looked for </s>, <|endoftext|>, <|end_of_text|>, <eos>); \
             documents must be separated, so add one of these as a special token, \
             or train a tokenizer with train_bpe, which adds <|endoftext|>"
        );
    };
    let vocab_size = tokenizer.vocab_size();
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

    let split_meta = |sink: SplitSink| SplitMeta {
        docs: sink.docs,
        tokens: sink.tokens,
        shards: sink.shards,
    };
    let meta = PrepareMeta::new(
        tokenizer,
        eos_id,
        opts,
        inputs,
        &files,
        split_meta(train),
        split_meta(val),
        None,
    );
    meta.write(out_dir)?;
    Ok(PrepareSummary {
        train_tokens: meta.train.tokens,
        val_tokens: meta.val.tokens,
        train_docs: meta.train.docs,
        val_docs: meta.val.docs,
        chat: None,
    })
}

/// First pass: validates every input and counts its records, noting the
/// first conversation if there is one.
fn count_records(files: &[InputFile], bar: &ProgressBar) -> Result<(u64, Option<Location>)> {
    let (mut n, mut first_chat) = (0, None);
    for record in Records::new(files.to_vec(), bar.clone()) {
        if let Record::Chat(_, at) = record? {
            first_chat.get_or_insert(at);
        }
        n += 1;
    }
    Ok((n, first_chat))
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
