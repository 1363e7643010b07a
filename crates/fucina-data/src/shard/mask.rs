//! Loss-mask files: one byte per token of the token shard they sit next to
//! (`train_000000.bin` ↔ `train_000000.mask`), saying whether that token
//! counts as a training target (bit 0) and, in packed rows, whether it
//! starts a document (bit 1). Their header records the row length, since a
//! masked dataset is cut into fixed rows rather than sampled as a stream.
//! Byte layout in `FORMAT.md`.

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// First 8 bytes of every mask file.
pub const MASK_MAGIC: &[u8; 8] = b"FUCINAMK";
/// The newest mask version: bit 1 of a byte marks a document start. Files
/// with no such byte are written as version 1, which older builds read too;
/// a version 2 file is refused by them rather than misread, since they take
/// any nonzero byte for a target.
pub const MASK_VERSION: u32 = 2;
/// Bit of a mask byte set when the token counts as a target.
pub const MASK_TARGET: u8 = 1;
/// Bit of a mask byte set when the token starts a document within its row.
pub const MASK_DOC_START: u8 = 2;
/// Size of the mask header; mask bytes start right after it.
pub const MASK_HEADER_BYTES: usize = 64;
/// Extension of a mask file; its stem is the token shard's.
pub const MASK_EXTENSION: &str = "mask";

/// The mask file belonging to a token shard: same path, extension `.mask`.
pub fn mask_path(shard: &Path) -> PathBuf {
    shard.with_extension(MASK_EXTENSION)
}

fn encode(version: u32, row_len: u32, count: u64) -> [u8; MASK_HEADER_BYTES] {
    let mut h = [0u8; MASK_HEADER_BYTES];
    h[0..8].copy_from_slice(MASK_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&row_len.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h
}

/// A memory-mapped mask file, validated on open.
#[derive(Debug)]
pub struct MaskShard {
    path: PathBuf,
    map: Mmap,
    version: u32,
    row_len: usize,
    len: usize,
}

impl MaskShard {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).with_context(|| format!("opening mask {}", path.display()))?;
        // SAFETY: as for token shards, mask files are immutable once renamed into place.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("memory-mapping {}", path.display()))?;
        let (version, row_len, len) =
            parse(&map).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            map,
            version,
            row_len,
            len,
        })
    }

    /// Number of mask bytes (= tokens in the matching shard).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens per row; `len()` is a whole number of rows.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file marks document starts (version 2): its rows may
    /// hold several documents. Version 1 rows hold one each.
    pub fn marks_starts(&self) -> bool {
        self.version >= 2
    }

    /// Copies the target flags of tokens `[start, start + out.len())` as 0 or 1.
    ///
    /// # Panics
    /// If the range extends past the end, like slice indexing.
    pub fn read(&self, start: usize, out: &mut [u8]) {
        let bytes = self.bytes(start, out.len());
        if self.marks_starts() {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = b & MASK_TARGET;
            }
        } else {
            // Any nonzero byte counts as 1, so a hand-made mask cannot scale the loss.
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = u8::from(b != 0);
            }
        }
    }

    /// Copies the document-start flags of tokens `[start, start + out.len())`
    /// as 0 or 1; all 0 in a version 1 file.
    ///
    /// # Panics
    /// As `read`.
    pub fn read_starts(&self, start: usize, out: &mut [u8]) {
        let bytes = self.bytes(start, out.len());
        let bit = if self.marks_starts() {
            MASK_DOC_START
        } else {
            0
        };
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o = u8::from(b & bit != 0);
        }
    }

    fn bytes(&self, start: usize, len: usize) -> &[u8] {
        let end = start.checked_add(len).filter(|&e| e <= self.len);
        let Some(end) = end else {
            panic!(
                "{}: read of mask [{start}, {start}+{len}) past the end ({} tokens)",
                self.path.display(),
                self.len
            );
        };
        &self.map[MASK_HEADER_BYTES + start..MASK_HEADER_BYTES + end]
    }
}

fn parse(b: &[u8]) -> Result<(u32, usize, usize), String> {
    if b.len() < 8 || &b[0..8] != MASK_MAGIC {
        return Err("not a fucina mask file (bad magic: expected \"FUCINAMK\")".into());
    }
    if b.len() < MASK_HEADER_BYTES {
        return Err(format!(
            "truncated header: {} of {MASK_HEADER_BYTES} bytes",
            b.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if !(1..=MASK_VERSION).contains(&version) {
        return Err(format!(
            "unsupported mask version {version} (this build reads versions 1 to {MASK_VERSION})"
        ));
    }
    let row_len = u32_at(12) as usize;
    if row_len < 2 {
        return Err(format!(
            "row length {row_len} is too short (a row needs an input and a target)"
        ));
    }
    let count = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    let held = (b.len() - MASK_HEADER_BYTES) as u64;
    if count != held {
        return Err(format!(
            "header says {count} mask bytes, the file holds {held}"
        ));
    }
    let len = usize::try_from(count).map_err(|_| "mask too large for this platform".to_string())?;
    if len % row_len != 0 {
        return Err(format!(
            "{len} mask bytes are not a whole number of rows of {row_len}"
        ));
    }
    Ok((version, row_len, len))
}

/// Writes one mask file through `<path>.tmp`, renamed into place by `finish`
/// like `ShardWriter`; dropping it unfinished deletes the temporary file.
pub struct MaskWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    path: PathBuf,
    row_len: u32,
    count: u64,
    /// Whether any byte pushed marks a document start: the file is then version 2.
    starts: bool,
}

impl MaskWriter {
    pub fn create(path: &Path, row_len: usize) -> Result<Self> {
        let row_len = u32::try_from(row_len)
            .ok()
            .filter(|&r| r >= 2)
            .with_context(|| {
                format!(
                    "cannot create mask {}: row length {row_len} must be in 2..=u32::MAX",
                    path.display()
                )
            })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp_path = PathBuf::from(tmp);
        let file =
            File::create(&tmp_path).with_context(|| format!("creating {}", tmp_path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&encode(1, row_len, 0))
            .with_context(|| format!("writing {}", tmp_path.display()))?;
        Ok(Self {
            out: Some(out),
            tmp_path,
            path: path.to_owned(),
            row_len,
            count: 0,
            starts: false,
        })
    }

    /// Appends mask bytes, each made of `MASK_TARGET` and `MASK_DOC_START` (0 to 3).
    pub fn push(&mut self, mask: &[u8]) -> Result<()> {
        let bits = MASK_TARGET | MASK_DOC_START;
        if let Some(pos) = mask.iter().position(|&m| m & !bits != 0) {
            bail!(
                "mask {}: byte {} at position {pos} of this push has bits other than the target \
                 flag (1) and the document start (2)",
                self.path.display(),
                mask[pos]
            );
        }
        self.starts |= mask.iter().any(|&m| m & MASK_DOC_START != 0);
        let out = self.out.as_mut().expect("writer is open until finish");
        out.write_all(mask)
            .with_context(|| format!("writing {}", self.tmp_path.display()))?;
        self.count += mask.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the final header, fsyncs and renames into place. Fails if the
    /// bytes pushed are not whole rows, which readers would reject.
    pub fn finish(mut self) -> Result<u64> {
        if !self.count.is_multiple_of(self.row_len as u64) {
            bail!(
                "mask {}: {} bytes are not whole rows of {}",
                self.path.display(),
                self.count,
                self.row_len
            );
        }
        let out = self.out.take().expect("writer is open until finish");
        let version = if self.starts { MASK_VERSION } else { 1 };
        let header = encode(version, self.row_len, self.count);
        crate::fsutil::publish_with_header(out, &header, &self.tmp_path, &self.path)?;
        Ok(self.count)
    }
}

impl Drop for MaskWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}
