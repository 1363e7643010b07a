//! Tokenizing text documents into the train and validation token streams.

use super::keyed::keyed_documents;
use super::pipeline::for_each_batch;
use super::sink::SplitSink;
use super::split::Split;
use crate::input::InputFile;
use crate::tokenizer::TextTokenizer;
use anyhow::Result;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Documents are tokenized in batches of about this many bytes, large
/// enough to keep every core busy, small enough to bound memory.
const BATCH_BYTES: usize = 8 << 20;

/// Where a document landed in its split's token stream (its tokens and EOS), so a merge can move
/// it to the other split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Placed {
    pub key: u64,
    pub val: bool,
    pub offset: u64,
    pub len: u64,
}

pub(crate) struct Streams {
    pub train: SplitSink,
    pub val: SplitSink,
    /// The documents asked for in `track`, in the order they were written.
    pub placed: Vec<Placed>,
}

impl Streams {
    pub fn docs(&self) -> u64 {
        self.train.docs + self.val.docs
    }
}

/// Tokenizes the documents of `files` (numbered from `first_file` in the whole input list) into
/// `train_*.bin` and `val_*.bin` in `out_dir`, each followed by EOS.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_streams(
    tokenizer: &TextTokenizer,
    files: &[InputFile],
    first_file: usize,
    split: &Split,
    track: &[u64],
    out_dir: &Path,
    eos_id: u32,
    shard_tokens: usize,
    bar: &ProgressBar,
) -> Result<Streams> {
    let vocab_size = tokenizer.vocab_size();
    let mut streams = Streams {
        train: SplitSink::new(out_dir, "train", vocab_size, eos_id, shard_tokens),
        val: SplitSink::new(out_dir, "val", vocab_size, eos_id, shard_tokens),
        placed: Vec::new(),
    };
    let docs = keyed_documents(files, first_file, bar);
    // The next batch is read while this one is tokenized.
    for_each_batch(
        docs,
        BATCH_BYTES,
        |(_, doc)| doc.len(),
        2,
        |batch| {
            let (keys, texts): (Vec<u64>, Vec<String>) = batch.into_iter().unzip();
            for (key, tokens) in keys.into_iter().zip(tokenizer.encode_batch(texts)?) {
                let val = split.is_val(key);
                let sink = if val {
                    &mut streams.val
                } else {
                    &mut streams.train
                };
                if track.contains(&key) {
                    streams.placed.push(Placed {
                        key,
                        val,
                        offset: sink.tokens,
                        len: tokens.len() as u64 + 1,
                    });
                }
                sink.push_doc(&tokens)?;
            }
            Ok(())
        },
    )?;
    streams.train.finish()?;
    streams.val.finish()?;
    Ok(streams)
}
