//! Preparing inputs that hold conversations: each becomes one row of
//! `seq_len + 1` tokens with its loss mask, or shares one with others when
//! packed (see `prepare` module docs).

use super::meta::{ChatMeta, ChatSummary, PrepareMeta, SplitMeta};
use super::pack::write_packed;
use super::rows::RowSink;
use super::split::{Split, SplitStats};
use super::{outdir, PrepareOptions, PrepareSummary};
use crate::chat::{ChatEncoder, ChatTemplate, EncodedChat, Skip, SkipReport};
use crate::input::{InputFile, Location, Record, Records};
use crate::tokenizer::TextTokenizer;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

/// Records encoded per parallel batch: enough to keep every core busy.
const BATCH_RECORDS: usize = 4096;

pub(super) struct Inputs<'a> {
    pub paths: &'a [PathBuf],
    pub files: &'a [InputFile],
    pub n_records: u64,
    /// The first conversation, named in errors about missing options.
    pub first_chat: Location,
}

pub(super) fn prepare_chat(
    tokenizer: &TextTokenizer,
    inputs: Inputs,
    out_dir: &Path,
    opts: &PrepareOptions,
    bar: &ProgressBar,
) -> Result<PrepareSummary> {
    let at = &inputs.first_chat;
    let Some(template_path) = &opts.chat_template else {
        bail!(
            "{at} is a conversation, which needs the model's chat template: \
             give its tokenizer_config.json with --chat-template (or put it next to the tokenizer.json)"
        );
    };
    let Some(seq_len) = opts.seq_len.filter(|&s| s > 0) else {
        bail!(
            "{at} is a conversation; conversations are stored one per row of \
             seq_len + 1 tokens, so give the sequence length you will train with (--seq-len, \
             the run's data.seq_len)"
        );
    };
    let row_len = seq_len + 1;
    let template = ChatTemplate::from_file(template_path)
        .with_context(|| format!("loading the chat template from {}", template_path.display()))?;
    let config = template.config().clone();
    let origin = template.origin().to_owned();
    let template_sha256 = template.sha256().to_owned();
    let encoder = ChatEncoder::new(template, tokenizer);

    let named_id = |name: &str| config.token(name).and_then(|t| tokenizer.token_to_id(t));
    let Some(eos_id) = tokenizer.eos_id().or_else(|| named_id("eos_token")) else {
        bail!(
            "the tokenizer has no EOS token (looked for </s>, <|endoftext|>, <|end_of_text|>, <eos>, \
             and the eos_token of {origin}), needed to end text documents and to pad rows"
        );
    };
    let pad_id = named_id("pad_token").unwrap_or(eos_id);
    let vocab_size = tokenizer.vocab_size();

    outdir::claim(out_dir)?;
    // Records are keyed by their index among all records.
    let mut stats = SplitStats::default();
    (0..inputs.n_records).for_each(|i| stats.observe(i, opts.val_fraction));
    let split = Split::new(&stats, opts.val_fraction);
    let sink = |prefix| {
        RowSink::new(
            out_dir,
            prefix,
            vocab_size,
            eos_id,
            pad_id,
            row_len,
            opts.shard_tokens,
        )
        .marking_documents(opts.pack)
    };
    let (mut train, mut val) = (sink("train"), sink("val"));
    let (mut train_docs, mut val_docs) = (0u64, 0u64);
    let mut skipped = SkipReport::default();
    let mut counts = ChatSummary {
        seq_len,
        row_len,
        packed: opts.pack,
        ..Default::default()
    };
    bar.reset();
    bar.set_message("tokenizing");
    let mut records = Records::new(inputs.files.to_vec(), bar.clone());
    let mut index = 0u64;
    loop {
        let batch: Vec<Record> = records
            .by_ref()
            .take(BATCH_RECORDS)
            .collect::<Result<_>>()?;
        if batch.is_empty() {
            break;
        }
        // Conversations to pack, per split, in input order.
        let (mut train_chats, mut val_chats) = (Vec::new(), Vec::new());
        for encoded in encode_batch(&encoder, tokenizer, batch)? {
            let is_val = split.is_val(index);
            index += 1;
            let sink = if is_val { &mut val } else { &mut train };
            match encoded {
                Encoded::Text(tokens) => {
                    sink.push_text(&tokens)?;
                    counts.text_docs += 1;
                }
                Encoded::Skipped(why, at) => {
                    skipped.conversations += 1;
                    skipped.add(&why, &at);
                    continue;
                }
                Encoded::Chat(mut chat, at) => {
                    skipped.conversations += 1;
                    // The first token of a conversation is never a target.
                    let targets = |mask: &[u8]| mask.iter().skip(1).map(|&m| m as u64).sum::<u64>();
                    if targets(&chat.mask) == 0 {
                        skipped.add(&Skip::NothingRendered, &at);
                        continue;
                    }
                    let truncated = chat.tokens.len() > row_len;
                    chat.tokens.truncate(row_len);
                    chat.mask.truncate(row_len);
                    let targets = targets(&chat.mask);
                    if targets == 0 {
                        counts.dropped += 1;
                        continue;
                    }
                    counts.examples += 1;
                    counts.truncated += u64::from(truncated);
                    counts.assistant_tokens += targets;
                    match (opts.pack, is_val) {
                        (false, _) => sink.push_conversations(&chat.tokens, &chat.mask)?,
                        (true, false) => train_chats.push(chat),
                        (true, true) => val_chats.push(chat),
                    }
                }
            }
            *(if is_val {
                &mut val_docs
            } else {
                &mut train_docs
            }) += 1;
        }
        write_packed(&mut train, train_chats)?;
        write_packed(&mut val, val_chats)?;
    }
    if index != inputs.n_records {
        bail!(
            "the inputs changed while being read: {} records when counted, {index} when tokenized",
            inputs.n_records
        );
    }
    train.finish()?;
    val.finish()?;
    bar.finish_and_clear();
    counts.text_rows = train.text_rows + val.text_rows;
    counts.conversation_rows = train.conversation_rows + val.conversation_rows;
    counts.padding_tokens = train.padding + val.padding;
    counts.skipped = skipped.skipped();
    if counts.skipped > 0 {
        if counts.examples == 0 {
            let dropped = match counts.dropped {
                0 => String::new(),
                n => format!(
                    "{n} conversations were dropped because no assistant token fits in the \
                     first {row_len} tokens (seq_len {seq_len} + 1), use a longer --seq-len; "
                ),
            };
            bail!("nothing to train on: {dropped}{skipped}");
        }
        eprintln!("warning: {skipped}");
    }
    if train.rows == 0 {
        bail!(
            "nothing to train on: all {} conversations were dropped because no assistant token \
             fits in the first {row_len} tokens (seq_len {seq_len} + 1); use a longer --seq-len",
            counts.dropped
        );
    }

    let split_meta = |sink: &RowSink, docs| SplitMeta {
        docs,
        tokens: sink.rows * row_len as u64,
        shards: sink.shards.clone(),
    };
    let chat = ChatMeta {
        chat_template: origin,
        template_sha256,
        pad_id,
        summary: counts,
    };
    let meta = PrepareMeta::new(
        tokenizer,
        eos_id,
        opts,
        inputs.paths,
        inputs.files,
        split_meta(&train, train_docs),
        split_meta(&val, val_docs),
        Some(chat),
    );
    super::template_file::write(out_dir, &config.chat_template)?;
    meta.write(out_dir)?;
    Ok(PrepareSummary {
        train_tokens: meta.train.tokens,
        val_tokens: meta.val.tokens,
        train_docs,
        val_docs,
        chat: Some(counts),
    })
}

enum Encoded {
    Text(Vec<u32>),
    Chat(EncodedChat, Location),
    Skipped(Skip, Location),
}

/// Encodes records in order, conversations spread over threads; the first
/// failure (in input order) names the line it came from.
fn encode_batch(
    encoder: &ChatEncoder,
    tokenizer: &TextTokenizer,
    batch: Vec<Record>,
) -> Result<Vec<Encoded>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = batch.len().div_ceil(threads).max(1);
    let encoded: Vec<Result<Vec<Encoded>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .chunks(chunk)
            .map(|records| {
                scope.spawn(move || {
                    records
                        .iter()
                        .map(|record| match record {
                            Record::Text(text) => tokenizer.encode(text).map(Encoded::Text),
                            Record::Chat(Ok(conversation), at) => encoder
                                .encode(conversation)
                                .map(|chat| Encoded::Chat(chat, at.clone()))
                                .with_context(|| format!("{at}")),
                            Record::Chat(Err(why), at) => {
                                Ok(Encoded::Skipped(why.clone(), at.clone()))
                            }
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::with_capacity(batch.len());
    for part in encoded {
        out.extend(part?);
    }
    Ok(out)
}
