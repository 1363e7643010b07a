//! Which input files count, and how each is cut into documents. Shared by
//! `prepare` and `train_bpe` so the tokenizer is trained on exactly the text
//! that is later tokenized.
//!
//! Rules:
//! - A file named explicitly is read whatever its extension: `.parquet` as
//!   Parquet, `.jsonl` as JSON Lines, anything else as UTF-8 text; a `.gz`
//!   or `.zst` suffix is decompressed first (`notes.jsonl.zst` is JSONL).
//! - A directory is walked recursively in byte order of names, taking only
//!   `.txt`, `.md`, `.jsonl` (each also as `.gz` / `.zst`) and `.parquet`
//!   files and skipping names that start with `.`.
//! - Text files are split into documents at empty (or whitespace-only)
//!   lines; each document is its lines verbatim, minus the final line ending.
//!   A leading UTF-8 byte-order mark is dropped.
//! - JSONL files hold one `{"text": "..."}` object per line; blank lines are
//!   skipped; other fields are ignored.
//! - A JSONL line may instead hold a conversation: OpenAI `{"messages": …}`,
//!   ShareGPT `{"conversations": …}` (either wins over a `"text"` on the same
//!   line) or `{"prompt": …, "completion": …}` (see `chat::formats`). Only
//!   `prepare` accepts these; each is validated where it is read, and one
//!   that cannot be trained on is kept as a `Skip` with its file and line.
//! - Parquet files give one document per row from a top-level string column
//!   (`text` unless another is chosen); null rows count as empty.
//! - Empty documents are skipped in all formats.

mod compressed;
mod files;
mod lines;
mod parquet;

pub(crate) use files::collect_files;

use crate::chat::{Conversation, Skip};
use anyhow::Result;
use indicatif::ProgressBar;
use lines::LineReader;
use parquet::ParquetReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BOM: char = '\u{feff}';

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileKind {
    Text,
    Jsonl,
    /// Documents are the rows of this column.
    Parquet {
        column: Arc<str>,
    },
}

/// How a text or JSONL file is stored; Parquet compresses inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
pub(crate) struct InputFile {
    pub path: PathBuf,
    pub kind: FileKind,
    pub compression: Compression,
    /// Size on disk (compressed size for compressed files).
    pub bytes: u64,
}

/// Splits an in-memory text by the same rule the streaming reader uses.
pub(crate) fn split_documents(text: &str) -> Vec<&str> {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    let mut docs = Vec::new();
    let (mut start, mut end, mut pos) = (None::<usize>, 0, 0);
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some(s) = start.take() {
                docs.push(&text[s..end]);
            }
        } else {
            start.get_or_insert(pos);
            end = pos + line.len() - line_ending_len(line);
        }
        pos += line.len();
    }
    if let Some(s) = start {
        docs.push(&text[s..end]);
    }
    docs
}

fn line_ending_len(line: &str) -> usize {
    if line.ends_with("\r\n") {
        2
    } else if line.ends_with('\n') {
        1
    } else {
        0
    }
}

/// One unit of input: a text document or a conversation.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    Text(String),
    /// A conversation, or why it is left out.
    Chat(Result<Conversation, Skip>, Location),
}

/// Where a record was read, for errors found after reading.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub path: Arc<Path>,
    pub place: Place,
}

/// 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Line(usize),
    Row(u64),
}

impl Location {
    pub(crate) fn line(path: Arc<Path>, line: usize) -> Self {
        Self {
            path,
            place: Place::Line(line),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.place {
            Place::Line(n) => write!(f, "{}:{n}", self.path.display()),
            Place::Row(n) => write!(f, "{}: row {n}", self.path.display()),
        }
    }
}

/// Streams the records of `files` in order, advancing `bar` by bytes read
/// from disk.
pub(crate) struct Records {
    files: std::vec::IntoIter<InputFile>,
    current: Option<Reader>,
    bar: ProgressBar,
}

/// The text documents of `files`: `Records` for readers that take no
/// conversations (tokenizer training), which get an error naming the line.
pub(crate) struct Documents(Records);

enum Reader {
    Lines(LineReader),
    Parquet(Box<ParquetReader>),
}

impl Documents {
    pub(crate) fn new(files: Vec<InputFile>, bar: ProgressBar) -> Self {
        Self(Records::new(files, bar))
    }
}

impl Iterator for Documents {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.0.next()? {
            Ok(Record::Text(doc)) => Ok(doc),
            Ok(Record::Chat(_, at)) => Err(anyhow::anyhow!(
                "{at}: a conversation (messages, conversations or prompt/completion) where only \
                 text is accepted; conversations can be prepared, but not used to train a tokenizer"
            )),
            Err(e) => Err(e),
        })
    }
}

impl Records {
    pub(crate) fn new(files: Vec<InputFile>, bar: ProgressBar) -> Self {
        Self {
            files: files.into_iter(),
            current: None,
            bar,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            if self.current.is_none() {
                let Some(file) = self.files.next() else {
                    return Ok(None);
                };
                self.current = Some(match &file.kind {
                    FileKind::Parquet { column } => {
                        Reader::Parquet(Box::new(ParquetReader::open(&file, column, &self.bar)?))
                    }
                    FileKind::Text | FileKind::Jsonl => {
                        Reader::Lines(LineReader::open(&file, &self.bar)?)
                    }
                });
            }
            let record = match self.current.as_mut().expect("just set") {
                Reader::Lines(r) => r.next_record()?,
                Reader::Parquet(r) => r.next_doc()?.map(Record::Text),
            };
            match record {
                Some(record) => return Ok(Some(record)),
                None => self.current = None,
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The streaming reader and the in-memory splitter must agree, or the
    /// built-in corpus would be cut differently from the same text on disk.
    #[test]
    fn streaming_and_in_memory_splits_agree() {
        let text = "\u{feff}first line\r\nsecond\n\n\n  \t \nthird doc\n  indented\r\n\r\nlast without newline";
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let file = InputFile {
            path: f.path().to_owned(),
            kind: FileKind::Text,
            compression: Compression::None,
            bytes: text.len() as u64,
        };
        let streamed: Vec<String> = Documents::new(vec![file], ProgressBar::hidden())
            .collect::<Result<_>>()
            .unwrap();
        let expected = [
            "first line\r\nsecond",
            "third doc\n  indented",
            "last without newline",
        ];
        assert_eq!(streamed, expected);
        assert_eq!(split_documents(text), expected);
    }
}
