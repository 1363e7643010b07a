//! Text and JSONL inputs, read line by line from a (possibly decompressed)
//! stream.

use super::compressed::open_stream;
use super::{line_ending_len, Compression, FileKind, InputFile, Location, Record, BOM};
use crate::chat::{read_conversation, JsonlLine};
use anyhow::{anyhow, bail, Result};
use indicatif::ProgressBar;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

pub(super) struct LineReader {
    path: Arc<Path>,
    jsonl: bool,
    compression: Compression,
    lines: Box<dyn BufRead + Send>,
    line_no: usize,
    buf: Vec<u8>,
}

/// What a JSONL line may hold, in errors.
const EXPECTED: &str = "expected a JSON object with a string \"text\" field or a conversation \
     (\"messages\", \"conversations\", or \"prompt\" and \"completion\")";

impl LineReader {
    pub(super) fn open(file: &InputFile, bar: &ProgressBar) -> Result<Self> {
        Ok(Self {
            path: Arc::from(file.path.as_path()),
            jsonl: file.kind == FileKind::Jsonl,
            compression: file.compression,
            lines: open_stream(file, bar)?,
            line_no: 0,
            buf: Vec::new(),
        })
    }

    pub(super) fn next_record(&mut self) -> Result<Option<Record>> {
        if self.jsonl {
            self.next_jsonl()
        } else {
            Ok(self.next_text()?.map(Record::Text))
        }
    }

    /// Reads one line into `self.buf`; `false` at end of file.
    fn read_line(&mut self) -> Result<bool> {
        self.buf.clear();
        self.line_no += 1;
        let n = self.lines.read_until(b'\n', &mut self.buf).map_err(|e| {
            let at = format!("{}:{}", self.path.display(), self.line_no);
            match self.compression {
                Compression::None => anyhow!("{at}: reading failed ({e})"),
                Compression::Gzip => anyhow!("{at}: corrupt or truncated gzip data ({e})"),
                Compression::Zstd => anyhow!("{at}: corrupt or truncated zstd data ({e})"),
            }
        })?;
        Ok(n > 0)
    }

    fn line_str(&self) -> Result<&str> {
        let line = std::str::from_utf8(&self.buf).map_err(|e| {
            anyhow!(
                "{}:{}: not valid UTF-8 ({e})",
                self.path.display(),
                self.line_no
            )
        })?;
        Ok(if self.line_no == 1 {
            line.strip_prefix(BOM).unwrap_or(line)
        } else {
            line
        })
    }

    fn next_text(&mut self) -> Result<Option<String>> {
        let mut doc = String::new();
        while self.read_line()? {
            let line = self.line_str()?;
            if !line.trim().is_empty() {
                doc.push_str(line);
            } else if !doc.is_empty() {
                break;
            }
        }
        let trailing = line_ending_len(&doc);
        doc.truncate(doc.len() - trailing);
        Ok((!doc.is_empty()).then_some(doc))
    }

    fn next_jsonl(&mut self) -> Result<Option<Record>> {
        while self.read_line()? {
            let line = self.line_str()?;
            if line.trim().is_empty() {
                continue;
            }
            let at = Location::line(self.path.clone(), self.line_no);
            let parsed: JsonlLine =
                serde_json::from_str(line).map_err(|e| anyhow!("{at}: {EXPECTED} ({e})"))?;
            if parsed.is_conversation() {
                return Ok(Some(Record::Chat(read_conversation(line), at)));
            }
            match parsed.text {
                Some(text) if !text.is_empty() => return Ok(Some(Record::Text(text))),
                Some(_) => {}
                None => bail!("{at}: {EXPECTED}"),
            }
        }
        Ok(None)
    }
}
