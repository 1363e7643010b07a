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
}

impl ChatEncoder {
    pub fn new(template: ChatTemplate, tokenizer: &TextTokenizer) -> Self {
        let mut tokenizer = tokenizer.inner().clone();
        tokenizer.set_encode_special_tokens(false);
        // Only used to trim offsets (ByteLevel turns whitespace-only tokens
        // into empty spans), which would hide tokens from the mask; with
        // `add_special_tokens = false` it adds no tokens, so ids are unchanged.
        tokenizer.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Self {
            template,
            tokenizer,
        }
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Renders, tokenizes and masks a conversation; the mask is all zeros
    /// if it has no assistant message.
    pub fn encode(&self, conversation: &Conversation) -> Result<EncodedChat> {
        let (text, spans) = self.template.assistant_spans(conversation)?;
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

impl ChatTemplate {
    /// The whole rendering and the byte ranges of the assistant replies in it.
    pub fn assistant_spans(
        &self,
        conversation: &Conversation,
    ) -> Result<(String, Vec<Range<usize>>)> {
        let full = self.render(conversation, false)?;
        let mut spans = Vec::new();
        for i in (0..conversation.len()).filter(|&i| conversation.role(i) == "assistant") {
            let before = self.render_prefix(conversation, i, true)?;
            let through = self.render_prefix(conversation, i + 1, false)?;
            if !full.starts_with(&through) || !through.starts_with(&before) {
                bail!(
                    "{}: this chat template cannot be split into turns: rendering the conversation up to \
                     assistant message {i} does not give the start of the whole conversation's rendering \
                     (templates that change earlier turns depending on later ones, e.g. dropping the \
                     reasoning of earlier replies, are not supported)",
                    self.origin()
                );
            }
            spans.push(before.len()..through.len());
        }
        Ok((full, spans))
    }
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
