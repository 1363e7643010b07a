//! The small multilingual corpus compiled into the binary, so a smoke-test
//! training run needs no downloads. `build.rs` embeds whatever
//! `corpus/<lang>.txt` files exist at build time (possibly none).

use crate::input::split_documents;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/builtin_corpus.rs"));

/// Every built-in document as `(language, text)`, files split at empty
/// lines by the same rule `prepare` applies to text files.
pub fn builtin_documents() -> Vec<(&'static str, &'static str)> {
    CORPUS_FILES
        .iter()
        .flat_map(|&(lang, text)| {
            split_documents(text)
                .into_iter()
                .map(move |doc| (lang, doc))
        })
        .collect()
}

/// Languages of the built-in corpus, sorted.
pub fn builtin_languages() -> Vec<&'static str> {
    CORPUS_FILES.iter().map(|&(lang, _)| lang).collect()
}

/// The tokenizer trained on the built-in corpus, if one was present at build time.
pub fn builtin_tokenizer_json() -> Option<&'static str> {
    TOKENIZER_JSON
}

/// Writes `<dir>/<lang>.txt` per language (documents separated by an empty
/// line, so `prepare` reads back exactly `builtin_documents()`) and returns
/// the paths, sorted.
pub fn write_builtin_corpus(dir: &Path) -> Result<Vec<PathBuf>> {
    if CORPUS_FILES.is_empty() {
        bail!("this build of fucina-data has no built-in corpus (crates/fucina-data/corpus/*.txt was empty)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let docs = builtin_documents();
    let mut paths = Vec::new();
    for lang in builtin_languages() {
        let texts: Vec<&str> = docs
            .iter()
            .filter(|(l, _)| *l == lang)
            .map(|(_, t)| *t)
            .collect();
        let path = dir.join(format!("{lang}.txt"));
        let body = texts.join("\n\n") + "\n";
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{collect_files, Documents};

    /// Whatever corpus this build embeds, writing it out and reading it back
    /// with the `prepare` reader must give the same documents.
    #[test]
    fn written_corpus_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let docs = builtin_documents();
        if docs.is_empty() {
            assert!(write_builtin_corpus(dir.path()).is_err());
            return;
        }
        let paths = write_builtin_corpus(dir.path()).unwrap();
        assert_eq!(paths.len(), builtin_languages().len());
        let files = collect_files(&[dir.path().to_owned()], "text").unwrap();
        let read: Vec<String> = Documents::new(files, indicatif::ProgressBar::hidden())
            .collect::<Result<_>>()
            .unwrap();
        let expected: Vec<&str> = docs.iter().map(|(_, text)| *text).collect();
        assert_eq!(read, expected);
        if let Some(json) = builtin_tokenizer_json() {
            crate::TextTokenizer::from_json_str(json).unwrap();
        }
    }
}
