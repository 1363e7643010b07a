//! Reading a Hugging Face `tokenizer_config.json`: the chat template and the
//! named special tokens templates refer to (`bos_token`, `eos_token`, …).

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;
use std::path::Path;

pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Newer transformers save the template here, next to the config; when
/// present it takes priority over the config's `chat_template`, as in
/// transformers.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The special tokens transformers passes to every template (its
/// `SPECIAL_TOKENS_ATTRIBUTES`), when the config sets them.
const NAMED_TOKENS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// What fucina needs from a tokenizer config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerConfig {
    /// The Jinja source of the selected template.
    pub chat_template: String,
    /// Where the template came from (file, and template name if several), for errors.
    pub origin: String,
    /// Template variables for named special tokens, e.g. `("eos_token", "</s>")`,
    /// in the order transformers defines them, then model-specific ones.
    pub special_tokens: Vec<(String, String)>,
    /// Recorded for callers; templates write BOS/EOS themselves, so (as in
    /// transformers' chat path, which tokenizes with `add_special_tokens=False`)
    /// these are not applied to chat data.
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
}

impl TokenizerConfig {
    /// Reads `path` (a `tokenizer_config.json`, or a directory holding one),
    /// taking the template from a `chat_template.jinja` beside it if there is one.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_owned();
        if path.is_dir() {
            path.push(TOKENIZER_CONFIG_FILE);
        }
        let json = std::fs::read_to_string(&path)
            .with_context(|| format!("reading tokenizer config {}", path.display()))?;
        let jinja = path.with_file_name(CHAT_TEMPLATE_FILE);
        let template_file = if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja)
                .with_context(|| format!("reading {}", jinja.display()))?;
            Some((text, jinja.display().to_string()))
        } else {
            None
        };
        Self::parse(&json, &path.display().to_string(), template_file)
    }

    /// Parses config JSON; `origin` names it in errors.
    pub fn from_json_str(json: &str, origin: &str) -> Result<Self> {
        Self::parse(json, origin, None)
    }

    /// The text of a named special token (`"eos_token"`, …), if the config sets it.
    pub fn token(&self, name: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }

    fn parse(json: &str, origin: &str, template_file: Option<(String, String)>) -> Result<Self> {
        let config: Json =
            serde_json::from_str(json).with_context(|| format!("{origin} is not valid JSON"))?;
        let Json::Object(config) = config else {
            bail!("{origin}: expected a JSON object");
        };
        let (chat_template, template_origin) = match template_file {
            Some((text, file)) => (text, file),
            None => select_template(config.get("chat_template"), origin)?,
        };
        let mut special_tokens = Vec::new();
        for &name in NAMED_TOKENS {
            if let Some(token) = token_text(config.get(name), origin, name)? {
                special_tokens.push((name.to_owned(), token));
            }
        }
        // Multimodal configs name extra tokens (`image_token`, …), which
        // transformers adds to the same map; a list of unnamed ones is not.
        if let Some(Json::Object(extra)) = config.get("extra_special_tokens") {
            for (name, value) in extra {
                let field = format!("extra_special_tokens.{name}");
                if let Some(token) = token_text(Some(value), origin, &field)? {
                    special_tokens.retain(|(n, _)| n != name);
                    special_tokens.push((name.clone(), token));
                }
            }
        }
        Ok(Self {
            chat_template,
            origin: template_origin,
            special_tokens,
            add_bos_token: flag(&config, "add_bos_token", origin)?,
            add_eos_token: flag(&config, "add_eos_token", origin)?,
        })
    }
}

/// The template transformers would use without being told which: the only
/// one, or the one named "default" in a list of named templates.
fn select_template(value: Option<&Json>, origin: &str) -> Result<(String, String)> {
    match value {
        Some(Json::String(t)) => Ok((t.clone(), origin.to_owned())),
        Some(Json::Array(list)) => {
            let mut names = Vec::new();
            for (i, entry) in list.iter().enumerate() {
                let name = entry.get("name").and_then(Json::as_str);
                let template = entry.get("template").and_then(Json::as_str);
                let (Some(name), Some(template)) = (name, template) else {
                    bail!("{origin}: chat_template[{i}] must be an object with string \"name\" and \"template\"");
                };
                if name == "default" {
                    return Ok((template.to_owned(), format!("{origin} (template \"default\")")));
                }
                names.push(name.to_owned());
            }
            names.sort();
            bail!(
                "{origin}: the config has several chat templates ({}) and none is named \"default\", \
                 so it is not clear which one to use",
                names.join(", ")
            )
        }
        None | Some(Json::Null) => bail!(
            "{origin} has no chat_template (and there is no {CHAT_TEMPLATE_FILE} beside it): \
             use the tokenizer_config.json of a chat/instruct model, or add a \"chat_template\""
        ),
        Some(other) => bail!(
            "{origin}: chat_template must be a string or a list of {{\"name\", \"template\"}}, not {}",
            kind(other)
        ),
    }
}

/// A special token given as a string or as an AddedToken object `{"content": …}`.
fn token_text(value: Option<&Json>, origin: &str, field: &str) -> Result<Option<String>> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Object(o)) => match o.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => bail!("{origin}: {field} is an object without a string \"content\""),
        },
        Some(other) => bail!(
            "{origin}: {field} must be a string or an object with \"content\", not {}",
            kind(other)
        ),
    }
}

fn flag(config: &serde_json::Map<String, Json>, name: &str, origin: &str) -> Result<Option<bool>> {
    match config.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(other) => bail!(
            "{origin}: {name} must be true or false, not {}",
            kind(other)
        ),
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}
