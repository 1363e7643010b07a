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
//! # Parts
//!
//! `prepare_part` tokenizes one of N contiguous runs of the input files
//! (balanced by bytes, see `part`) into `<out>/parts/part_I_of_N/`, for
//! Slurm array jobs or one task per node; `merge_parts` joins the N parts
//! into `<out>`, byte-identical to a single-process `prepare` of the same
//! inputs. The split keys documents by file and position within the file
//! (see `split`) so a part needs to read only its own files.
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
//! With `PrepareOptions::pack` (`--pack`) rows hold several conversations
//! instead of one, to spend less compute on padding: the conversations of
//! each batch of `BATCH_RECORDS` records are packed per split, first-fit
//! decreasing by length (see `pack`), padding staying at the end of the row.
//! Each conversation's first token is marked as a document start in the mask
//! (bit 1) and is not a target (it would be predicted from the conversation
//! before it); the token after each EOS of the packed text is marked too.
//! The trainer keeps attention and positions within each document. Mask
//! files with document starts are version 2 (see `FORMAT.md`).
//!
//! Messages are validated while counting; template errors (e.g. a template
//! that rejects the order of roles) surface while writing, naming the line,
//! and leave the directory without `meta.json`, so it is never taken for
//! complete output.

mod chat;
mod keyed;
mod merge;
mod meta;
mod outdir;
mod pack;
mod part;
mod pipeline;
mod rows;
mod sink;
mod split;
mod stream;
pub mod template_file;

pub use merge::merge_parts;
pub use meta::{ChatMeta, ChatSummary, PrepareMeta, SplitMeta, META_FILE, META_FORMAT};
pub use part::{prepare_part, Part, PartMeta, PARTS_DIR};
pub use template_file::CHAT_TEMPLATE_FILE;

use crate::input::collect_files;
use crate::progress::bytes_bar;
use crate::tokenizer::TextTokenizer;
use anyhow::{bail, Context, Result};
use keyed::count_records;
use serde::{Deserialize, Serialize};
use split::Split;
use std::path::{Path, PathBuf};
use stream::write_streams;

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
    /// The column parquet inputs are read from.
    pub text_column: String,
    /// Pack several conversations into each row (see the module docs);
    /// an error for inputs with none.
    pub pack: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            val_fraction: 0.01,
            shard_tokens: 100_000_000,
            progress: false,
            chat_template: None,
            seq_len: None,
            text_column: "text".into(),
            pack: false,
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
    check_options(opts)?;
    let files = collect_files(inputs, &opts.text_column)?;
    let total_bytes = files.iter().map(|f| f.bytes).sum();

    let bar = bytes_bar(total_bytes, opts.progress, "scanning");
    let counted = count_records(&files, &bar)?;
    let n_docs = counted.total();
    if n_docs == 0 {
        bail!("the inputs contain no documents (all files are empty)");
    }
    if let Some(first_chat) = counted.first_chat {
        let inputs = chat::Inputs {
            paths: inputs,
            files: &files,
            n_records: n_docs,
            first_chat,
        };
        return chat::prepare_chat(tokenizer, inputs, out_dir, opts, &bar);
    }
    if opts.pack {
        bail!("{}", NOTHING_TO_PACK);
    }

    let eos_id = stream_eos(tokenizer)?;
    let split = Split::new(&counted.stats(0, opts.val_fraction)?, opts.val_fraction);

    outdir::claim(out_dir)?;
    bar.reset();
    bar.set_message("tokenizing");
    let streams = write_streams(
        tokenizer,
        &files,
        0,
        &split,
        &[],
        out_dir,
        eos_id,
        opts.shard_tokens,
        &bar,
    )?;
    check_unchanged(n_docs, streams.docs())?;
    bar.finish_and_clear();

    let meta = PrepareMeta::new(
        tokenizer,
        eos_id,
        opts,
        inputs,
        &files,
        streams.train.meta(),
        streams.val.meta(),
        None,
    );
    meta.write(out_dir)?;
    Ok(meta.summary())
}

fn check_options(opts: &PrepareOptions) -> Result<()> {
    if !(0.0..1.0).contains(&opts.val_fraction) {
        bail!("val_fraction must be in [0, 1), got {}", opts.val_fraction);
    }
    if opts.shard_tokens == 0 {
        bail!("shard_tokens must be positive");
    }
    Ok(())
}

/// Why `--pack` is refused on inputs without conversations.
pub(crate) const NOTHING_TO_PACK: &str =
    "--pack packs conversations ({\"messages\": …}) into rows, and none of the inputs holds one: \
     a pre-training stream is already packed, document after document; to keep attention \
     within each document, prepare it without --pack and set the run option \
     data.document_mask = true";

/// Text documents are separated by the tokenizer's end-of-text token.
fn stream_eos(tokenizer: &TextTokenizer) -> Result<u32> {
    tokenizer.eos_id().context(
        "the tokenizer has no EOS token (looked for </s>, <|endoftext|>, <|end_of_text|>, <eos>); \
         documents must be separated, so add one of these as a special token, \
         or train a tokenizer with train_bpe, which adds <|endoftext|>",
    )
}

fn check_unchanged(counted: u64, written: u64) -> Result<()> {
    if counted != written {
        bail!("the inputs changed while being read: {counted} documents when counted, {written} when tokenized");
    }
    Ok(())
}
