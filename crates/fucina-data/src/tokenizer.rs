//! Text ↔ token ids through a Hugging Face `tokenizer.json`.

mod train;

pub use train::{train_bpe, train_bpe_with_column, ENDOFTEXT};

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::str::FromStr;
use tokenizers::parallelism::MaybeParallelIterator;
use tokenizers::Tokenizer;

const EOS_CANDIDATES: &[&str] = &["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"];
const BOS_CANDIDATES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>"];

/// A loaded tokenizer plus the SHA-256 of its JSON, which `prepare` records
/// so shards can be matched to the tokenizer that produced them.
pub struct TextTokenizer {
    inner: Tokenizer,
    sha256: String,
    /// `eos_token` of the `tokenizer_config.json` beside the tokenizer, when there is one.
    eos: Option<String>,
}

impl TextTokenizer {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        let tokenizer = Self::from_json_str(&json)
            .with_context(|| format!("{} is not a valid tokenizer.json", path.display()))?;
        let config = path.with_file_name("tokenizer_config.json");
        match config.is_file() {
            true => tokenizer
                .with_config(&config)
                .with_context(|| format!("reading {}", config.display())),
            false => Ok(tokenizer),
        }
    }

    /// Takes the end-of-text token a Hugging Face `tokenizer_config.json` names (its
    /// `eos_token`, a string or `{"content": …}`), which must be in the vocabulary.
    pub fn with_config(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let config: serde_json::Value = serde_json::from_str(&text)?;
        let eos = match &config["eos_token"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => {
                o.get("content").and_then(|c| c.as_str()).map(String::from)
            }
            _ => None,
        };
        if let Some(eos) = &eos {
            if self.token_to_id(eos).is_none() {
                anyhow::bail!("its eos_token {eos:?} is not in the tokenizer's vocabulary");
            }
        }
        self.eos = eos;
        Ok(self)
    }

    pub fn from_json_str(json: &str) -> Result<Self> {
        let mut inner =
            Tokenizer::from_str(json).map_err(|e| anyhow!("parsing tokenizer JSON: {e}"))?;
        // Documents must be tokenized whole: a truncation or padding setting
        // left in a downloaded tokenizer.json would silently cut or pad them.
        inner
            .with_truncation(None)
            .map_err(|e| anyhow!("disabling truncation: {e}"))?;
        inner.with_padding(None);
        // A document that merely mentions "<|endoftext|>" must not gain a
        // document boundary: special tokens in text are encoded as text, and
        // only `prepare` inserts EOS ids.
        inner.set_encode_special_tokens(true);
        let sha256 = hex(&Sha256::digest(json.as_bytes()));
        Ok(Self {
            inner,
            sha256,
            eos: None,
        })
    }

    /// Token ids of `text`, without BOS/EOS or any template tokens. Special
    /// token strings inside `text` are tokenized as ordinary text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `encode` over many texts in parallel (the `tokenizers` crate's rayon
    /// pool, as its `encode_batch`), in order.
    pub fn encode_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>> {
        // Not the crate's `encode_batch`: that returns full `Encoding`s (a
        // string, offsets and masks per token), all held until the batch
        // ends and then freed on one thread while the others wait. Keeping
        // only the ids in each worker took the peak RSS of 8 MB batches of
        // text through Llama 3's tokenizer from ~400 MB to ~150 MB.
        texts
            .into_maybe_par_iter()
            .map(|text| self.encode(&text))
            .collect()
    }

    /// Special tokens are kept, so `decode(encode(s)) == s` for byte-level tokenizers.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    /// One more than the largest id, added tokens included, so every id the
    /// tokenizer can emit is below it even if the id space has gaps.
    pub fn vocab_size(&self) -> u32 {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m + 1)
    }

    /// The end-of-text token: the `eos_token` of `tokenizer_config.json` when there is one;
    /// without that metadata, the one of `</s>`, `<|endoftext|>`, `<|end_of_text|>`, `<eos>`
    /// the tokenizer itself declares special (Gemma's vocabulary holds an ordinary `</s>`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token().and_then(|t| self.token_to_id(t))
    }

    /// The text of the token `eos_id` finds.
    pub fn eos_token(&self) -> Option<&str> {
        if let Some(eos) = &self.eos {
            return Some(eos);
        }
        let added = self.inner.get_added_tokens_decoder();
        let special = |t: &&str| added.values().any(|a| a.special && a.content == *t);
        EOS_CANDIDATES.iter().copied().find(special)
    }

    /// First of `<s>`, `<|begin_of_text|>`, `<bos>` that exists.
    pub fn bos_id(&self) -> Option<u32> {
        self.first_token(BOS_CANDIDATES)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Lowercase hex SHA-256 of the JSON this tokenizer was loaded from.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    fn first_token(&self, candidates: &[&str]) -> Option<u32> {
        candidates.iter().find_map(|t| self.inner.token_to_id(t))
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id())
            .field("sha256", &self.sha256)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
