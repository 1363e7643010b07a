//! Crash-safe file replacement shared by shard, meta and tokenizer writers.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

/// Writes `bytes` to `<path>.tmp`, fsyncs, then renames over `path`, so
/// readers only ever see the old or the complete new file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut file = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_parent_dir(path);
    Ok(())
}

/// Finishes a file written to `tmp` with a placeholder header: writes the final `header` at the
/// start, fsyncs, and renames it over `path` (shards and masks learn their counts only at the end).
pub(crate) fn publish_with_header(
    out: BufWriter<File>,
    header: &[u8],
    tmp: &Path,
    path: &Path,
) -> Result<()> {
    let ctx = || format!("finishing {}", tmp.display());
    let mut file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(ctx)?;
    file.seek(SeekFrom::Start(0)).with_context(ctx)?;
    file.write_all(header).with_context(ctx)?;
    file.sync_all().with_context(ctx)?;
    drop(file);
    fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_parent_dir(path);
    Ok(())
}

/// Makes a rename durable; best effort because not every platform or
/// filesystem lets a directory be opened and synced.
pub(crate) fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Reads a JSON file that names its own `format`, refusing one of another format.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    expected: &str,
    format_of: impl Fn(&T) -> &str,
) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: T = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a {expected} file", path.display()))?;
    let format = format_of(&value);
    if format != expected {
        anyhow::bail!(
            "{}: format is {format:?}, expected {expected:?}",
            path.display()
        );
    }
    Ok(value)
}

/// Writes `value` as pretty JSON with a final newline, atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut json = serde_json::to_string_pretty(value)
        .with_context(|| format!("serializing {}", path.display()))?;
    json.push('\n');
    write_atomic(path, json.as_bytes())
}
