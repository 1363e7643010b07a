//! Shard header layouts, kept free of I/O so they can be checked on bytes alone.

/// First 8 bytes of every fucina shard.
pub const MAGIC: &[u8; 8] = b"FUCINATK";
/// The only fucina shard version this build writes and reads.
pub const VERSION: u32 = 1;
/// Size of the fucina header; tokens start right after it.
pub const HEADER_BYTES: usize = 64;
/// Stored in the eos field when the tokenizer has no end-of-sequence token.
pub const NO_EOS: u32 = u32::MAX;
/// llm.c headers are 256 little-endian `i32`.
pub const LLMC_HEADER_BYTES: usize = 256 * 4;
/// llm.c GPT-2 shards: `u16` tokens, header version 1.
pub const LLMC_MAGIC_U16: i32 = 20240520;
/// llm.c Llama-3 shards: `u32` tokens, header version 7.
pub const LLMC_MAGIC_U32: i32 = 20240801;

/// How many bytes one stored token takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    /// The narrowest width that holds every id below `vocab_size`: halving
    /// the bytes halves page-cache pressure for every vocabulary up to 65,536.
    pub fn for_vocab(vocab_size: u32) -> Self {
        if vocab_size <= 1 << 16 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    fn from_bytes(bytes: u32) -> Option<Self> {
        match bytes {
            2 => Some(TokenWidth::U16),
            4 => Some(TokenWidth::U32),
            _ => None,
        }
    }
}

/// Which on-disk layout a shard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKind {
    Fucina,
    LlmC,
}

/// What a header says about the tokens that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: ShardKind,
    pub width: TokenWidth,
    pub count: u64,
    pub vocab_size: Option<u32>,
    pub eos_id: Option<u32>,
}

impl Header {
    pub fn data_offset(&self) -> usize {
        match self.kind {
            ShardKind::Fucina => HEADER_BYTES,
            ShardKind::LlmC => LLMC_HEADER_BYTES,
        }
    }
}

pub(crate) fn encode(
    width: TokenWidth,
    count: u64,
    vocab_size: u32,
    eos_id: Option<u32>,
) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(width.bytes() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..28].copy_from_slice(&vocab_size.to_le_bytes());
    h[28..32].copy_from_slice(&eos_id.unwrap_or(NO_EOS).to_le_bytes());
    h
}

/// Parses the start of a file; the error says what is wrong, the caller
/// adds which file.
pub(crate) fn parse(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() >= 8 && &bytes[0..8] == MAGIC {
        return parse_fucina(bytes);
    }
    if bytes.len() >= 4 {
        let magic = i32_at(bytes, 0);
        if magic == LLMC_MAGIC_U16 || magic == LLMC_MAGIC_U32 {
            return parse_llmc(bytes, magic);
        }
    }
    Err("not a fucina shard (bad magic: expected \"FUCINATK\" or an llm.c magic)".into())
}

fn parse_fucina(b: &[u8]) -> Result<Header, String> {
    if b.len() < HEADER_BYTES {
        return Err(format!(
            "truncated header: {} of {HEADER_BYTES} bytes",
            b.len()
        ));
    }
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(format!(
            "unsupported fucina shard version {version} (this build reads version {VERSION})"
        ));
    }
    let width_bytes = u32_at(b, 12);
    let width = TokenWidth::from_bytes(width_bytes)
        .ok_or_else(|| format!("invalid bytes-per-token {width_bytes} (expected 2 or 4)"))?;
    let count = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    let vocab_size = u32_at(b, 24);
    if vocab_size == 0 {
        return Err("invalid vocab size 0".into());
    }
    if width == TokenWidth::U16 && vocab_size > 1 << 16 {
        return Err(format!(
            "vocab size {vocab_size} does not fit 2-byte tokens"
        ));
    }
    let eos = u32_at(b, 28);
    let eos_id = (eos != NO_EOS).then_some(eos);
    if eos_id.is_some_and(|e| e >= vocab_size) {
        return Err(format!(
            "eos id {eos} is outside the vocab size {vocab_size}"
        ));
    }
    Ok(Header {
        kind: ShardKind::Fucina,
        width,
        count,
        vocab_size: Some(vocab_size),
        eos_id,
    })
}

fn parse_llmc(b: &[u8], magic: i32) -> Result<Header, String> {
    if b.len() < LLMC_HEADER_BYTES {
        return Err(format!(
            "truncated llm.c header: {} of {LLMC_HEADER_BYTES} bytes",
            b.len()
        ));
    }
    let (width, want_version) = if magic == LLMC_MAGIC_U16 {
        (TokenWidth::U16, 1)
    } else {
        (TokenWidth::U32, 7)
    };
    let version = i32_at(b, 4);
    if version != want_version {
        return Err(format!(
            "unsupported llm.c shard version {version} for magic {magic} (expected {want_version})"
        ));
    }
    let count = i32_at(b, 8);
    let count = u64::try_from(count).map_err(|_| format!("negative llm.c token count {count}"))?;
    // llm.c headers record neither vocabulary nor end-of-text token.
    Ok(Header {
        kind: ShardKind::LlmC,
        width,
        count,
        vocab_size: None,
        eos_id: None,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
