//! Conversations to token ids plus the loss mask (see the module docs of
//! `chat` for how assistant replies are located).

use super::conversation::Conversation;
use super::template::ChatTemplate;
use crate::tokenizer::TextTokenizer;
use anyhow::{anyhow, bail, Result};
use std::ops::Range;
use tokenizers::Tokenizer;

/// A tokenized conversation: `mask[i]` is 1 when `tokens[i]` belongs to an
/// assistant reply (the model is trained to produce it), else 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChat {
    pub tokens: Vec<u32>,
    pub mask: Vec<u8>,
}

pub struct ChatEncoder {
    template: ChatTemplate,
    /// The tokenizer with special-token text parsed as special tokens: in
    /// template output `<|im_end|>` is the control token, not text.
    tokenizer: Tokenizer,
    /// What can end a reply (see `ChatTemplate::assistant_spans`).
    end_tokens: Vec<String>,
}

impl ChatEncoder {
    pub fn new(template: ChatTemplate, tokenizer: &TextTokenizer) -> Self {
        let mut tokenizer = tokenizer.inner().clone();
        tokenizer.set_encode_special_tokens(false);
        // Only used to trim offsets (ByteLevel turns whitespace-only tokens
        // into empty spans), which would hide tokens from the mask; with
        // `add_special_tokens = false` it adds no tokens, so ids are unchanged.
        tokenizer.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        let special = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special)
            .map(|t| t.content);
        let end_tokens = end_tokens(&template, special);
        Self {
            template,
            tokenizer,
            end_tokens,
        }
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The texts that end a reply: the tokenizer's special tokens and the
    /// template config's `eos_token`.
    pub fn end_tokens(&self) -> &[String] {
        &self.end_tokens
    }

    /// Renders, tokenizes and masks a conversation; the mask is all zeros
    /// if it has no assistant message.
    pub fn encode(&self, conversation: &Conversation) -> Result<EncodedChat> {
        let (text, spans) = self
            .template
            .assistant_spans(conversation, &self.end_tokens)?;
        let encoding = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| anyhow!("tokenizing a rendered conversation: {e}"))?;
        let mask = encoding
            .get_offsets()
            .iter()
            .map(|&(start, end)| u8::from(spans.iter().any(|s| covers(s, start, end))))
            .collect();
        Ok(EncodedChat {
            tokens: encoding.get_ids().to_vec(),
            mask,
        })
    }
}

/// `special` plus the config's `eos_token`, without duplicates, longest
/// first (so of two starting at the same place the longer one is taken).
pub fn end_tokens(
    template: &ChatTemplate,
    special: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut tokens: Vec<String> = special
        .into_iter()
        .chain(template.config().token("eos_token").map(str::to_owned))
        .filter(|t| !t.is_empty())
        .collect();
    tokens.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    tokens.dedup();
    tokens
}

impl ChatTemplate {
    /// The whole rendering (`add_generation_prompt=false`) and, in it, the
    /// byte range of each assistant reply with the end-of-turn token that
    /// closes it: what the loss is computed on.
    ///
    /// A template with `{% generation %}` blocks gets what they enclose, as
    /// transformers' `return_assistant_tokens_mask`. Otherwise, for each
    /// assistant message, in order:
    /// - the reply starts where the prompt ends: the rendering of the
    ///   messages before it with the generation prompt, when that is the
    ///   start of the whole rendering (so an assistant header the template
    ///   writes anyway is left out); otherwise where the reply's text is
    ///   found, searching from the end of the previous message's text;
    /// - its text is searched from there, as given or trimmed (templates may
    ///   `trim` it); a template that does not write it (it changes replies)
    ///   is an error, which suggests `--chat-template`;
    /// - it ends after the first of `end_tokens` (the end-of-turn token:
    ///   `<|eot_id|>`, `<|im_end|>`, `</s>` …) after its text, so what the
    ///   template writes after that (a newline, the next turn's header, a
    ///   generation prompt it always appends) is not part of it. If none
    ///   follows, it takes what the template writes after the text both in
    ///   the whole rendering and when the conversation stops after it.
    pub fn assistant_spans(
        &self,
        conversation: &Conversation,
        end_tokens: &[String],
    ) -> Result<(String, Vec<Range<usize>>)> {
        if self.has_generation_blocks() {
            return self.render_generation_spans(conversation);
        }
        let full = self.render(conversation, false)?;
        let mut spans = Vec::new();
        // Nothing before it belongs to a later message.
        let mut cursor = 0;
        for i in 0..conversation.len() {
            let content = conversation.content(i);
            if conversation.role(i) != "assistant" {
                if let Some(found) = find_text(&full, cursor, content) {
                    cursor = found.end;
                }
                continue;
            }
            let prompt_end = self.prompt_end(conversation, i, &full, cursor);
            let from = prompt_end.unwrap_or(cursor);
            let text = match find_text(&full, from, content) {
                Some(text) if prompt_end.is_some() || !content.trim().is_empty() => text,
                _ => bail!(
                    "{}: the chat template does not write the reply in messages[{i}] (assistant) as it \
                     is given, so the tokens to train on cannot be told apart from the rest: give a \
                     template that writes replies unchanged with --chat-template (a \
                     tokenizer_config.json), or mark the replies in it with {{% generation %}} … \
                     {{% endgeneration %}}",
                    self.origin()
                ),
            };
            let start = prompt_end.unwrap_or(text.start);
            let end = match first_end_token(&full, text.end, end_tokens) {
                Some(end) => end,
                None => text.end + self.common_tail(conversation, i, &full, text.end),
            };
            spans.push(start..end);
            cursor = end;
        }
        Ok((full, spans))
    }

    /// Where the prompt before assistant message `i` ends in `full`: the
    /// length of the first `i` messages rendered with the generation prompt,
    /// if that is a prefix of `full` reaching `cursor`.
    fn prompt_end(
        &self,
        conversation: &Conversation,
        i: usize,
        full: &str,
        cursor: usize,
    ) -> Option<usize> {
        if i == 0 {
            return None;
        }
        let prompt = self.render_prefix(conversation, i, true).ok()?;
        (prompt.len() >= cursor && full.starts_with(&prompt)).then_some(prompt.len())
    }

    /// How much of what follows byte `at` of `full` the rendering of the
    /// conversation cut after message `i` also writes (nothing if that
    /// rendering differs from `full` before `at`).
    fn common_tail(&self, conversation: &Conversation, i: usize, full: &str, at: usize) -> usize {
        let Ok(cut) = self.render_prefix(conversation, i + 1, false) else {
            return 0;
        };
        if cut.get(..at) != full.get(..at) {
            return 0;
        }
        let mut n = cut.as_bytes()[at..]
            .iter()
            .zip(&full.as_bytes()[at..])
            .take_while(|(a, b)| a == b)
            .count();
        while !full.is_char_boundary(at + n) {
            n -= 1;
        }
        n
    }
}

/// The first occurrence of `content` in `text` at or after byte `from`, as
/// given or else trimmed.
fn find_text(text: &str, from: usize, content: &str) -> Option<Range<usize>> {
    let rest = &text[from..];
    let (at, len) = match rest.find(content) {
        Some(at) => (at, content.len()),
        None => {
            let trimmed = content.trim();
            let start = rest.find(trimmed)?;
            (start, trimmed.len())
        }
    };
    Some(from + at..from + at + len)
}

/// The end of the first of `end_tokens` in `text` after byte `from`
/// (`end_tokens` longest first: at one place the longest wins). Tokenizers
/// have hundreds of special tokens, so only places starting with one of
/// their first bytes (mostly `<`) are tried.
fn first_end_token(text: &str, from: usize, end_tokens: &[String]) -> Option<usize> {
    let mut first = [false; 256];
    for t in end_tokens {
        if let Some(&b) = t.as_bytes().first() {
            first[usize::from(b)] = true;
        }
    }
    let bytes = text.as_bytes();
    (from..bytes.len())
        .filter(|&at| first[usize::from(bytes[at])])
        .find_map(|at| {
            end_tokens
                .iter()
                .find(|t| !t.is_empty() && bytes[at..].starts_with(t.as_bytes()))
                .map(|t| at + t.len())
        })
}

/// Whether a token whose text is bytes `[start, end)` overlaps the span; an
/// empty token counts where it stands.
fn covers(span: &Range<usize>, start: usize, end: usize) -> bool {
    if start == end {
        span.contains(&start)
    } else {
        start < span.end && end > span.start
    }
}
