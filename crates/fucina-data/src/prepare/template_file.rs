//! The chat template conversations were rendered with, kept beside `meta.json` as
//! `chat_template.jinja`: an export of a model trained on the data carries the very template
//! the model learnt, not the base model's (which may differ, e.g. `--chat-template`).

use super::meta::PrepareMeta;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

pub fn write(out_dir: &Path, source: &str) -> Result<()> {
    let path = out_dir.join(CHAT_TEMPLATE_FILE);
    std::fs::write(&path, source).with_context(|| format!("cannot write {}", path.display()))
}

/// The template of prepared chat data in `dir`, with its meta; `None` for text data or data
/// prepared before the template was kept. A file that no longer matches the SHA-256 in
/// `meta.json` is an error.
pub fn read(dir: &Path) -> Result<Option<(String, PrepareMeta)>> {
    let meta = PrepareMeta::read(dir)?;
    let Some(chat) = &meta.chat else {
        return Ok(None);
    };
    let path = dir.join(CHAT_TEMPLATE_FILE);
    let Ok(source) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let sha: String = Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    anyhow::ensure!(
        sha == chat.template_sha256,
        "{} is not the template the data was prepared with (SHA-256 differs from meta.json)",
        path.display()
    );
    Ok(Some((source, meta)))
}
