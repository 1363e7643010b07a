//! Opening a line-oriented input as a buffered stream, decompressing `.gz`
//! and `.zst` on the fly. Progress counts the bytes taken from the file, so
//! compressed inputs advance the bar by their size on disk.

use super::{Compression, InputFile};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};

const BUF_BYTES: usize = 1 << 20;

/// The decompressed bytes of `file`, buffered.
pub(super) fn open_stream(file: &InputFile, bar: &ProgressBar) -> Result<Box<dyn BufRead + Send>> {
    let raw = File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
    let counted = Counted {
        inner: raw,
        bar: bar.clone(),
    };
    Ok(match file.compression {
        Compression::None => Box::new(BufReader::with_capacity(BUF_BYTES, counted)),
        // Multi-member: `cat a.gz b.gz` is a valid gzip file of both.
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF_BYTES,
            flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(BUF_BYTES, counted)),
        )),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                BUF_BYTES, counted,
            ))
            .with_context(|| format!("starting zstd decoder for {}", file.path.display()))?;
            Box::new(BufReader::with_capacity(BUF_BYTES, decoder))
        }
    })
}

struct Counted {
    inner: File,
    bar: ProgressBar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
