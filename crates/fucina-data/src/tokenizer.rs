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
}

impl TextTokenizer {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        Self::from_json_str(&json)
            .with_context(|| format!("{} is not a valid tokenizer.json", path.display()))
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
        Ok(Self { inner, sha256 })
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

    /// First of `</s>`, `<|endoftext|>`, `<|end_of_text|>`, `<eos>` that exists.
    pub fn eos_id(&self) -> Option<u32> {
        self.first_token(EOS_CANDIDATES)
    }

    /// The text of the token `eos_id` finds.
    pub fn eos_token(&self) -> Option<&'static str> {
        EOS_CANDIDATES
            .iter()
            .copied()
            .find(|t| self.token_to_id(t).is_some())
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
