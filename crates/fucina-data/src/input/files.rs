//! Which files an input list names, and how each is read: from names and
//! metadata only, so listing a large corpus stays cheap.

use super::{Compression, FileKind, InputFile};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Taken from directories, alone or (except parquet) under `.gz` / `.zst`.
const DIR_EXTENSIONS: &[&str] = &["txt", "md", "jsonl"];
const PARQUET: &str = "parquet";

/// Expands `inputs` into the ordered list of files to read; parquet files
/// are read from their column `text_column`.
pub(crate) fn collect_files(inputs: &[PathBuf], text_column: &str) -> Result<Vec<InputFile>> {
    let column: Arc<str> = Arc::from(text_column);
    let mut files = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input)
            .with_context(|| format!("input {} not found or unreadable", input.display()))?;
        if meta.is_dir() {
            walk_dir(input, &column, &mut files)?;
        } else {
            if let (Some(PARQUET), Compression::Gzip | Compression::Zstd) = split_compression(input)
            {
                // Read as compressed text it would tokenise Parquet's bytes as if they were words.
                bail!(
                    "{}: a compressed Parquet file cannot be read as a stream; decompress it first \
                     (Parquet compresses its pages itself, which prepare reads)",
                    input.display()
                );
            }
            let (kind, compression) = explicit_kind(input, &column);
            files.push(InputFile {
                path: input.clone(),
                kind,
                compression,
                bytes: meta.len(),
            });
        }
    }
    if files.is_empty() {
        bail!(
            "no input files found (directories are searched for .txt, .md, .jsonl, \
             the same with .gz or .zst, and .parquet files)"
        );
    }
    Ok(files)
}

fn walk_dir(dir: &Path, column: &Arc<str>, files: &mut Vec<InputFile>) -> Result<()> {
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
            walk_dir(&path, column, files)?;
        } else if let Some((kind, compression)) = dir_kind(&path, column) {
            files.push(InputFile {
                path,
                kind,
                compression,
                bytes: meta.len(),
            });
        }
    }
    Ok(())
}

/// The extension before a compression suffix, and that compression.
fn split_compression(path: &Path) -> (Option<&str>, Compression) {
    let ext = |p: &Path| p.extension().and_then(|e| e.to_str()).map(str::to_owned);
    let compression = match ext(path).as_deref() {
        Some("gz") => Compression::Gzip,
        Some("zst") => Compression::Zstd,
        _ => Compression::None,
    };
    let inner = match compression {
        Compression::None => path.extension(),
        _ => path.file_stem().map(Path::new).and_then(Path::extension),
    };
    (inner.and_then(|e| e.to_str()), compression)
}

/// A file named explicitly is read whatever its extension: parquet and
/// JSONL by theirs, anything else as text; `.gz` / `.zst` are decompressed.
fn explicit_kind(path: &Path, column: &Arc<str>) -> (FileKind, Compression) {
    let (ext, compression) = split_compression(path);
    let kind = match ext {
        Some(PARQUET) if compression == Compression::None => FileKind::Parquet {
            column: column.clone(),
        },
        Some("jsonl") => FileKind::Jsonl,
        _ => FileKind::Text,
    };
    (kind, compression)
}

fn dir_kind(path: &Path, column: &Arc<str>) -> Option<(FileKind, Compression)> {
    let (ext, compression) = split_compression(path);
    let taken = match ext {
        Some(PARQUET) => compression == Compression::None,
        Some(e) => DIR_EXTENSIONS.contains(&e),
        None => false,
    };
    taken.then(|| explicit_kind(path, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_names() {
        let col: Arc<str> = Arc::from("text");
        let kind = |name: &str| dir_kind(Path::new(name), &col);
        assert_eq!(
            kind("a.jsonl.zst"),
            Some((FileKind::Jsonl, Compression::Zstd))
        );
        assert_eq!(kind("a.txt.gz"), Some((FileKind::Text, Compression::Gzip)));
        assert_eq!(kind("a.md"), Some((FileKind::Text, Compression::None)));
        assert!(matches!(
            kind("a.parquet"),
            Some((FileKind::Parquet { .. }, Compression::None))
        ));
        assert_eq!(kind("a.csv.gz"), None);
        assert_eq!(kind("a.gz"), None);
        assert_eq!(kind("a.parquet.gz"), None);
        assert_eq!(
            explicit_kind(Path::new("notes.gz"), &col),
            (FileKind::Text, Compression::Gzip)
        );
    }

    #[test]
    fn a_compressed_parquet_named_explicitly_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet.zst");
        fs::write(&path, b"not read").unwrap();
        let err = collect_files(&[path], "text").unwrap_err().to_string();
        assert!(
            err.contains("rows.parquet.zst") && err.contains("decompress"),
            "{err}"
        );
    }
}
