//! The run config's `[data]` section: what a run trains on, one directory or a weighted
//! mixture of them.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `builtin` (the bundled corpus and tokenizer) or a `fucina prepare` output directory.
    /// Leave it out to train on `sources` (or `train_files`) instead.
    #[serde(default)]
    pub dir: String,
    /// With `dir = "builtin"`: only these languages of the built-in corpus (its file names,
    /// ISO 639-1 codes such as `en`); all 51 when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// `builtin` or a tokenizer.json; with a prepared directory, the tokenizer it was made with.
    #[serde(default = "builtin")]
    pub tokenizer: String,
    /// Explicit shard lists (e.g. llm.c `.bin` files); they take precedence over `dir`.
    #[serde(default)]
    pub train_files: Vec<PathBuf>,
    #[serde(default)]
    pub val_files: Vec<PathBuf>,
    /// Tokens per training sequence.
    pub seq_len: usize,
    /// A weighted mixture of prepared directories (`[[data.sources]]`), instead of `dir`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceConfig>,
    /// Attention stops at end-of-text: each token of a pre-training stream sees only its own
    /// document, whose positions start at 0. Packed chat rows (`prepare --pack`) always do.
    #[serde(default)]
    pub document_mask: bool,
}

/// One `[[data.sources]]` entry: a `fucina prepare` output directory (or `builtin`) sampled
/// in proportion to `weight`; weights are normalised by their sum.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub dir: String,
    #[serde(default = "one")]
    pub weight: f64,
    /// Names the source's validation loss; defaults to the directory's last component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl SourceConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            Path::new(&self.dir)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.dir.clone())
        })
    }
}

impl DataConfig {
    /// Fails unless exactly one of `dir`, `sources` and `train_files` says what to train on,
    /// and the sources have positive weights and distinct names.
    pub(super) fn validate(&self) -> Result<()> {
        self.check_languages()?;
        if self.sources.is_empty() {
            if self.dir.is_empty() && self.train_files.is_empty() {
                bail!(
                    "set data.dir (a `fucina prepare` output, or \"builtin\"), [[data.sources]] or data.train_files"
                );
            }
            return Ok(());
        }
        if !self.dir.is_empty() || !self.train_files.is_empty() || !self.val_files.is_empty() {
            bail!(
                "data.sources replaces data.dir, data.train_files and data.val_files: remove them, or add their data as one more [[data.sources]] entry"
            );
        }
        let mut names = std::collections::HashMap::new();
        for (i, source) in self.sources.iter().enumerate() {
            let at = format!("data.sources[{i}] (dir = {:?})", source.dir);
            if source.dir.is_empty() {
                bail!("{at}: dir must name a `fucina prepare` output directory or \"builtin\"");
            }
            if !source.weight.is_finite() || source.weight <= 0.0 {
                bail!(
                    "{at}: weight must be a positive number (got {}); drop the source to leave it out",
                    source.weight
                );
            }
            let name = source.name();
            if name.is_empty() {
                bail!("{at}: name must not be empty");
            }
            if let Some(j) = names.insert(name.clone(), i) {
                bail!(
                    "{at}: name {name:?} is also data.sources[{j}]'s; give one of them another with name = \"…\""
                );
            }
        }
        fucina_data::loader::mixture_slots(
            &self.sources.iter().map(|s| s.weight).collect::<Vec<_>>(),
        )
        .context("data.sources")?;
        Ok(())
    }

    fn check_languages(&self) -> Result<()> {
        if self.languages.is_empty() {
            return Ok(());
        }
        if self.dir != "builtin" {
            bail!(
                "data.languages picks languages of the built-in corpus and needs data.dir = \"builtin\" \
                 (data.dir is {:?}); for your own text, prepare the files you want",
                self.dir
            );
        }
        let known = fucina_data::corpus::builtin_languages();
        let mut seen = std::collections::HashSet::new();
        for code in &self.languages {
            if !known.contains(&code.as_str()) {
                bail!(
                    "data.languages: the built-in corpus has no {code:?}; it has {}",
                    known.join(", ")
                );
            }
            if !seen.insert(code) {
                bail!("data.languages names {code:?} twice");
            }
        }
        Ok(())
    }

    /// Where a run keeps the built-in corpus it trains on: one directory per choice of
    /// languages, so that changing them never reuses tokens prepared for others.
    pub fn builtin_subdir(&self) -> String {
        builtin_subdir(&self.languages)
    }
}

/// `builtin` for the whole built-in corpus, `builtin-<codes, sorted>` for some of its languages.
pub fn builtin_subdir(languages: &[String]) -> String {
    let mut codes: Vec<&str> = languages.iter().map(String::as_str).collect();
    codes.sort_unstable();
    match codes.is_empty() {
        true => "builtin".into(),
        false => format!("builtin-{}", codes.join("-")),
    }
}

fn builtin() -> String {
    "builtin".into()
}
