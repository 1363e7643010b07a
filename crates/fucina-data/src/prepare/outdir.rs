//! Guarding the output directory: prepare may replace its own earlier output
//! but must never delete anything else.

use super::meta::{PrepareMeta, META_FILE};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;

/// Creates `dir`, or empties it if it holds only files a previous prepare
/// writes (including `.tmp` leftovers of an interrupted run).
pub(crate) fn claim(dir: &Path) -> Result<()> {
    claim_beside(dir, "")
}

/// `claim`, leaving the entry `keep` (the parts a merge reads) in place.
pub(crate) fn claim_beside(dir: &Path, keep: &str) -> Result<()> {
    if !dir.exists() {
        return fs::create_dir_all(dir)
            .with_context(|| format!("creating output directory {}", dir.display()));
    }
    if !dir.is_dir() {
        bail!("output {} exists and is not a directory", dir.display());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .file_name();
        let name = name.to_string_lossy().into_owned();
        if !keep.is_empty() && name == keep {
            continue;
        }
        if !is_prepare_output(&name) {
            bail!(
                "refusing to write into {}: it is not empty and holds {name:?}, which prepare does not write; \
                 use a new or empty directory, or one holding only a previous prepare output",
                dir.display()
            );
        }
        names.push(name);
    }
    if names.iter().any(|n| n == META_FILE) {
        PrepareMeta::read(dir)
            .context("refusing to overwrite a directory whose meta.json prepare did not write")?;
    }
    // meta.json goes first: without it the directory no longer claims to be complete.
    names.sort_by_key(|n| n != META_FILE);
    for name in names {
        let path = dir.join(&name);
        fs::remove_file(&path).with_context(|| format!("removing old {}", path.display()))?;
    }
    Ok(())
}

fn is_prepare_output(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    if name == META_FILE || name == super::part::PART_FILE {
        return true;
    }
    let Some(stem) = name
        .strip_suffix(".bin")
        .or_else(|| name.strip_suffix(".mask"))
    else {
        return false;
    };
    let Some(index) = stem
        .strip_prefix("train_")
        .or_else(|| stem.strip_prefix("val_"))
    else {
        return false;
    };
    index.len() >= 6 && index.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::is_prepare_output;

    #[test]
    fn names() {
        for ok in [
            "meta.json",
            "meta.json.tmp",
            "part.json",
            "train_000000.bin",
            "val_000012.bin.tmp",
            "train_1234567.bin",
            "train_000003.mask",
            "val_000000.mask.tmp",
        ] {
            assert!(is_prepare_output(ok), "{ok}");
        }
        for bad in [
            "notes.txt",
            "train_00.bin",
            "train_abcdef.bin",
            "test_000000.bin",
            "train_000000.bin.bak",
            "train_000000.masks",
        ] {
            assert!(!is_prepare_output(bad), "{bad}");
        }
    }
}
