//! `meta.json`: what a prepared directory holds and how it was made.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of `format`, which tells a prepare output from any other meta.json.
pub const META_FORMAT: &str = "fucina-prepare";
pub const META_FILE: &str = "meta.json";

/// Contents of `meta.json`. It is written last, so its presence means the
/// shards next to it are complete. It holds nothing time- or host-dependent,
/// so reruns are byte-identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareMeta {
    pub format: String,
    pub fucina_data_version: String,
    /// Hex SHA-256 of the tokenizer JSON.
    pub tokenizer_sha256: String,
    pub vocab_size: u32,
    pub eos_id: u32,
    pub bytes_per_token: u32,
    pub val_fraction: f64,
    pub shard_tokens: usize,
    /// Inputs as given on the command line.
    pub inputs: Vec<String>,
    /// Files actually read, in order, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
    pub train: SplitMeta,
    pub val: SplitMeta,
    /// Present when the inputs held conversations: the data is then rows
    /// with loss masks rather than a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatMeta>,
}

/// How conversations were turned into rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMeta {
    /// The tokenizer config (or `chat_template.jinja`) the template came from.
    pub chat_template: String,
    /// Hex SHA-256 of the template source.
    pub template_sha256: String,
    /// Token that fills rows after their content (mask 0).
    pub pad_id: u32,
    #[serde(flatten)]
    pub summary: ChatSummary,
}

/// Counts over both splits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The sequence length the rows were made for; train with this `seq_len`.
    pub seq_len: usize,
    /// Tokens per row, `seq_len + 1`.
    pub row_len: usize,
    /// Whether several conversations share a row (`prepare --pack`), their
    /// first tokens marked as document starts in the masks.
    #[serde(default)]
    pub packed: bool,
    /// Conversations written: one row each unless packed.
    pub examples: u64,
    /// Of those, how many were longer than a row and cut at its end.
    pub truncated: u64,
    /// Conversations not written because no assistant token was left
    /// within the row.
    pub dropped: u64,
    /// Conversations left out as unfit to train on (unknown role, no
    /// assistant turn, empty or malformed message …); absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Targets that count in the loss over all conversation rows.
    pub assistant_tokens: u64,
    /// Text documents packed into rows (all their tokens count).
    pub text_docs: u64,
    pub text_rows: u64,
    /// Rows holding conversations, and the padding at their ends (absent,
    /// so 0, in outputs of builds before `--pack`).
    #[serde(default)]
    pub conversation_rows: u64,
    #[serde(default)]
    pub padding_tokens: u64,
}

impl ChatSummary {
    /// For a packed output, what packing saved, e.g. "packed 1,234
    /// conversations into 321 rows of 513 tokens: 9.8 % padding (unpacked:
    /// 1,234 rows, 71.2 % padding)"; the unpacked figure is for the same
    /// (truncated) conversations one per row.
    pub fn packing_report(&self) -> Option<String> {
        if !self.packed {
            return None;
        }
        let row_len = self.row_len as u64;
        let content = self.conversation_rows * row_len - self.padding_tokens;
        let share = |rows: u64| match rows {
            0 => 0.0,
            rows => 100.0 * (rows * row_len - content) as f64 / (rows * row_len) as f64,
        };
        let conversations = count(self.examples, "conversation");
        Some(format!(
            "packed {conversations} into {} of {} tokens: {:.1} % padding \
             (unpacked: {}, {:.1} % padding)",
            count(self.conversation_rows, "row"),
            thousands(row_len),
            share(self.conversation_rows),
            count(self.examples, "row"),
            share(self.examples),
        ))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn count(n: u64, noun: &str) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{} {noun}{plural}", thousands(n))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMeta {
    /// Documents (conversations and text documents) written.
    pub docs: u64,
    /// Including one EOS per document; for chat data, rows × row length,
    /// padding included.
    pub tokens: u64,
    /// Shard file names, relative to the directory, in stream order.
    pub shards: Vec<String>,
}

impl PrepareMeta {
    /// What every prepare output records: the tokenizer, the options, the inputs and the splits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        tokenizer: &crate::tokenizer::TextTokenizer,
        eos_id: u32,
        opts: &super::PrepareOptions,
        inputs: &[std::path::PathBuf],
        files: &[crate::input::InputFile],
        train: SplitMeta,
        val: SplitMeta,
        chat: Option<ChatMeta>,
    ) -> Self {
        let vocab_size = tokenizer.vocab_size();
        PrepareMeta {
            format: META_FORMAT.into(),
            fucina_data_version: env!("CARGO_PKG_VERSION").into(),
            tokenizer_sha256: tokenizer.sha256().into(),
            vocab_size,
            eos_id,
            bytes_per_token: crate::shard::TokenWidth::for_vocab(vocab_size).bytes() as u32,
            val_fraction: opts.val_fraction,
            shard_tokens: opts.shard_tokens,
            inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
            files: files
                .iter()
                .map(|f| (f.path.display().to_string(), f.bytes))
                .collect(),
            train,
            val,
            chat,
        }
    }

    pub(crate) fn summary(&self) -> super::PrepareSummary {
        super::PrepareSummary {
            train_tokens: self.train.tokens,
            val_tokens: self.val.tokens,
            train_docs: self.train.docs,
            val_docs: self.val.docs,
            chat: self.chat.as_ref().map(|c| c.summary),
        }
    }

    /// Reads `<dir>/meta.json`, refusing anything not written by `prepare`.
    pub fn read(dir: &Path) -> Result<Self> {
        crate::fsutil::read_json(&dir.join(META_FILE), META_FORMAT, |m: &Self| &m.format)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_json(&dir.join(META_FILE), self)
    }
}

#[cfg(test)]
mod tests {
    use super::{thousands, ChatSummary};

    #[test]
    fn packing_report_compares_with_one_conversation_per_row() {
        assert_eq!(
            [0, 999, 1_000, 1_234_567].map(thousands),
            ["0", "999", "1,000", "1,234,567"]
        );
        let summary = ChatSummary {
            row_len: 513,
            packed: true,
            examples: 1_234,
            conversation_rows: 400,
            padding_tokens: 400 * 513 - 185_000,
            ..Default::default()
        };
        assert_eq!(
            summary.packing_report().unwrap(),
            "packed 1,234 conversations into 400 rows of 513 tokens: 9.8 % padding \
             (unpacked: 1,234 rows, 70.8 % padding)"
        );
        let unpacked = ChatSummary {
            packed: false,
            ..summary
        };
        assert_eq!(unpacked.packing_report(), None);
    }
}
