//! Training a byte-level BPE tokenizer on the same documents `prepare` reads.

use crate::input::{collect_files, Documents};
use crate::progress::bytes_bar;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokenizers::models::bpe::{BpeTrainer, BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, TokenizerBuilder, Trainer};

/// The one special token `train_bpe` adds. It is the EOS `prepare` appends
/// after every document, and always gets id 0.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// Trains a GPT-2-style byte-level BPE tokenizer and writes it (pretty JSON)
/// to `out`.
///
/// Layout of the vocabulary: id 0 is `<|endoftext|>`, ids 1..=256 are the
/// 256 byte symbols (so any UTF-8 text round-trips, even unseen
/// characters), then merges in the order learned. `vocab_size` counts all of
/// these; a small corpus may run out of merges and give fewer. No normalizer
/// and no prefix space are used, so `decode(encode(text)) == text` exactly.
///
/// `inputs` are files and directories as for `prepare`, parquet files read
/// from their `text` column.
pub fn train_bpe(inputs: &[PathBuf], vocab_size: usize, out: &Path, progress: bool) -> Result<()> {
    train_bpe_with_column(inputs, "text", vocab_size, out, progress)
}

/// `train_bpe`, reading parquet files from `text_column`.
pub fn train_bpe_with_column(
    inputs: &[PathBuf],
    text_column: &str,
    vocab_size: usize,
    out: &Path,
    progress: bool,
) -> Result<()> {
    let minimum = 256 + 1;
    if vocab_size < minimum {
        bail!("vocab size {vocab_size} is too small: byte-level BPE needs 256 byte tokens plus {ENDOFTEXT}, at least {minimum}");
    }
    let files = collect_files(inputs, text_column)?;
    let bar = bytes_bar(files.iter().map(|f| f.bytes).sum(), progress, "reading");

    let mut trainer = QuietFeed(
        BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(progress)
            .special_tokens(vec![AddedToken::from(ENDOFTEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(|e| anyhow!("building tokenizer: {e}"))?;

    // The trainer wants an infallible iterator: stop at the first read error
    // and report it once training returns.
    let failure = Mutex::new(None);
    let docs = Documents::new(files, bar.clone()).map_while(|doc| match doc {
        Ok(doc) => Some(doc),
        Err(e) => {
            *failure.lock().expect("not poisoned") = Some(e);
            None
        }
    });
    tokenizer
        .train(&mut trainer, docs)
        .map_err(|e| anyhow!("training BPE: {e}"))?;
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        return Err(e);
    }

    let json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow!("serializing tokenizer: {e}"))?;
    crate::fsutil::write_atomic(out, json.as_bytes())
}

/// Forwards to `BpeTrainer` but hides its sequence-count bar, which cannot
/// know the total for a streamed corpus; our byte bar replaces it, while the
/// merge bar still shows when requested.
struct QuietFeed(BpeTrainer);

impl Trainer for QuietFeed {
    type Model = BPE;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, model: &mut BPE) -> tokenizers::Result<Vec<AddedToken>> {
        self.0.train(model)
    }

    fn feed<I, S, F>(&mut self, iterator: I, process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        self.0.feed(iterator, process)
    }
}
