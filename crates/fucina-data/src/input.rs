//! Which input files count, and how each is cut into documents. Shared by
//! `prepare` and `train_bpe` so the tokenizer is trained on exactly the text
//! that is later tokenized.
//!
//! Rules:
//! - A file named explicitly is read whatever its extension: `.jsonl` as
//!   JSON Lines, anything else as UTF-8 text.
//! - A directory is walked recursively in byte order of names, taking only
//!   `.txt`, `.md` and `.jsonl` files and skipping names that start with `.`.
//! - Text files are split into documents at empty (or whitespace-only)
//!   lines; each document is its lines verbatim, minus the final line ending.
//!   A leading UTF-8 byte-order mark is dropped.
//! - JSONL files hold one `{"text": "..."}` object per line; blank lines are
//!   skipped; other fields are ignored.
//! - A JSONL line may instead hold a conversation, `{"messages": [{"role":
//!   "...", "content": "..."}, ...]}` (it wins over a `"text"` on the same
//!   line). Only `prepare` accepts these; each is validated where it is read,
//!   and errors name the file and line.
//! - Empty documents are skipped in both formats.

use crate::chat::Conversation;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DIR_EXTENSIONS: &[&str] = &["txt", "md", "jsonl"];
const BOM: char = '\u{feff}';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Text,
    Jsonl,
}

#[derive(Debug, Clone)]
pub(crate) struct InputFile {
    pub path: PathBuf,
    pub kind: FileKind,
    pub bytes: u64,
}

/// Expands `inputs` into the ordered list of files to read.
pub(crate) fn collect_files(inputs: &[PathBuf]) -> Result<Vec<InputFile>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input)
            .with_context(|| format!("input {} not found or unreadable", input.display()))?;
        if meta.is_dir() {
            walk_dir(input, &mut files)?;
        } else {
            files.push(input_file(input.clone(), meta.len()));
        }
    }
    if files.is_empty() {
        bail!("no input files found (directories are searched for .txt, .md and .jsonl files)");
    }
    Ok(files)
}

fn walk_dir(dir: &Path, files: &mut Vec<InputFile>) -> Result<()> {
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // `fs::metadata` follows symlinks, so linked corpora are included.
        let meta = fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            walk_dir(&path, files)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| DIR_EXTENSIONS.contains(&e))
        {
            files.push(input_file(path, meta.len()));
        }
    }
    Ok(())
}

fn input_file(path: PathBuf, bytes: u64) -> InputFile {
    let kind = if path.extension().is_some_and(|e| e == "jsonl") {
        FileKind::Jsonl
    } else {
        FileKind::Text
    };
    InputFile { path, kind, bytes }
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
    Chat(Conversation, Location),
}

/// Where a record was read, for errors found after reading.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub path: Arc<Path>,
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// Streams the records of `files` in order, advancing `bar` by bytes read.
pub(crate) struct Records {
    files: std::vec::IntoIter<InputFile>,
    current: Option<Reader>,
    bar: ProgressBar,
}

/// The text documents of `files`: `Records` for readers that take no
/// conversations (tokenizer training), which get an error naming the line.
pub(crate) struct Documents(Records);

struct Reader {
    file: InputFile,
    shared_path: Arc<Path>,
    lines: BufReader<File>,
    line_no: usize,
    buf: Vec<u8>,
}

#[derive(Deserialize)]
struct JsonlLine {
    text: Option<String>,
    /// Only its presence is looked at here; conversations are parsed again
    /// into template values, which keep the order of their fields.
    messages: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChatLine {
    messages: minijinja::Value,
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
                "{at}: a conversation ({{\"messages\": …}}) where only text is accepted; \
                 conversations can be prepared, but not used to train a tokenizer"
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
                let f = File::open(&file.path)
                    .with_context(|| format!("opening {}", file.path.display()))?;
                let lines = BufReader::with_capacity(1 << 20, f);
                self.current = Some(Reader {
                    shared_path: Arc::from(file.path.as_path()),
                    file,
                    lines,
                    line_no: 0,
                    buf: Vec::new(),
                });
            }
            let reader = self.current.as_mut().expect("just set");
            let doc = match reader.file.kind {
                FileKind::Text => reader.next_text(&self.bar)?.map(Record::Text),
                FileKind::Jsonl => reader.next_jsonl(&self.bar)?,
            };
            match doc {
                Some(doc) => return Ok(Some(doc)),
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

impl Reader {
    /// Reads one line into `self.buf`; `false` at end of file.
    fn read_line(&mut self, bar: &ProgressBar) -> Result<bool> {
        self.buf.clear();
        let n = self
            .lines
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("reading {}", self.file.path.display()))?;
        bar.inc(n as u64);
        self.line_no += 1;
        Ok(n > 0)
    }

    fn line_str(&self) -> Result<&str> {
        let line = std::str::from_utf8(&self.buf).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not valid UTF-8 ({e})",
                self.file.path.display(),
                self.line_no
            )
        })?;
        Ok(if self.line_no == 1 {
            line.strip_prefix(BOM).unwrap_or(line)
        } else {
            line
        })
    }

    fn next_text(&mut self, bar: &ProgressBar) -> Result<Option<String>> {
        let mut doc = String::new();
        while self.read_line(bar)? {
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

    fn next_jsonl(&mut self, bar: &ProgressBar) -> Result<Option<Record>> {
        while self.read_line(bar)? {
            let line = self.line_str()?;
            if line.trim().is_empty() {
                continue;
            }
            let at = Location {
                path: self.shared_path.clone(),
                line: self.line_no,
            };
            let parsed: JsonlLine = serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!(
                    "{at}: expected a JSON object with a string \"text\" field or a \"messages\" list ({e})"
                )
            })?;
            if parsed.messages.is_some() {
                let chat: ChatLine = serde_json::from_str(line)
                    .map_err(|e| anyhow::anyhow!("{at}: reading \"messages\" ({e})"))?;
                let conversation = Conversation::from_value(&chat.messages)
                    .map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
                return Ok(Some(Record::Chat(conversation, at)));
            }
            match parsed.text {
                Some(text) if !text.is_empty() => return Ok(Some(Record::Text(text))),
                Some(_) => {}
                None => bail!("{at}: expected a JSON object with a string \"text\" field or a \"messages\" list"),
            }
        }
        Ok(None)
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
