//! `fucina generate --chat`: the conversation rendered with the run's chat template (the one
//! its data was prepared with, else its base model's), encoded with special tokens as the
//! tokenizer defines them, and the tokens generation stops at: every end-of-text or
//! end-of-turn id that `generation_config.json`, `tokenizer_config.json` and the tokenizer name.

use crate::config::RunConfig;
use crate::export_chat::ChatExport;
use anyhow::{bail, Context, Result};
use fucina_data::{ChatTemplate, Conversation, TextTokenizer, TokenizerConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// A system message first.
    pub system: Option<String>,
    /// A JSON file holding a list of `{"role", "content"}` messages (or `{"messages": [...]}`).
    pub messages: Option<PathBuf>,
    /// A `tokenizer_config.json` (or its directory) whose template replaces the run's.
    pub chat_template: Option<PathBuf>,
}

pub struct ChatPrompt {
    pub ids: Vec<u32>,
    pub stops: Vec<u32>,
    pub text: String,
}

impl ChatPrompt {
    /// The prompt for `request` plus a last user message `user` (if not empty), ending with
    /// the template's generation prompt.
    pub fn build(
        config: &RunConfig,
        tokenizer: &TextTokenizer,
        request: &ChatRequest,
        user: &str,
    ) -> Result<Self> {
        let mut messages: Vec<(String, String)> = Vec::new();
        if let Some(system) = &request.system {
            messages.push(("system".into(), system.clone()));
        }
        if let Some(path) = &request.messages {
            messages.extend(read_messages(path)?);
        }
        if !user.is_empty() {
            messages.push(("user".into(), user.to_string()));
        }
        if messages.iter().all(|(role, _)| role == "system") {
            bail!("--chat needs a user message: --prompt TEXT or --messages FILE");
        }
        let conversation = Conversation::from_pairs(&messages).map_err(anyhow::Error::msg)?;
        let (template, stops_config) = template(config, request)?;
        let text = template.render(&conversation, true)?;
        // The rendering's special-token texts are those tokens, as transformers encodes it.
        let mut inner = tokenizer.inner().clone();
        inner.set_encode_special_tokens(false);
        let ids = inner
            .encode(text.as_str(), false)
            .map_err(|e| anyhow::anyhow!("tokenizing the chat prompt: {e}"))?
            .get_ids()
            .to_vec();
        let mut stops: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        if let Some(eos) = template.config().token("eos_token") {
            stops.extend(tokenizer.token_to_id(eos));
        }
        stops.extend(stops_config);
        stops.sort_unstable();
        stops.dedup();
        if stops.is_empty() {
            bail!("no end-of-turn token to stop at: the tokenizer and its configs name none");
        }
        Ok(Self { ids, stops, text })
    }
}

fn read_messages(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let list = match &value {
        Value::Array(list) => list,
        Value::Object(o) => match o.get("messages") {
            Some(Value::Array(list)) => list,
            _ => bail!(
                "{}: expected a list of messages or {{\"messages\": [...]}}",
                path.display()
            ),
        },
        _ => bail!("{}: expected a list of messages", path.display()),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |k: &str| m.get(k).and_then(Value::as_str).map(String::from);
            match (field("role"), field("content")) {
                (Some(role), Some(content)) => Ok((role, content)),
                _ => bail!(
                    "{}: message {i} needs string \"role\" and \"content\"",
                    path.display()
                ),
            }
        })
        .collect()
}

/// The template to render with, and the stop ids of the generation config beside it.
fn template(config: &RunConfig, request: &ChatRequest) -> Result<(ChatTemplate, Vec<u32>)> {
    // Where the model's tokenizer files are: model.hf, else beside data.tokenizer.
    let home: Option<PathBuf> = match config.hf_dir()? {
        Some(dir) => Some(dir),
        None => Path::new(&config.data.tokenizer)
            .parent()
            .map(Path::to_path_buf),
    };
    let stops = home.as_deref().map(generation_stops).unwrap_or_default();
    if let Some(path) = &request.chat_template {
        return Ok((ChatTemplate::from_file(path)?, stops));
    }
    let file = home.as_ref().map(|h| h.join("tokenizer_config.json"));
    let mut json = match file.as_ref().filter(|f| f.is_file()) {
        Some(f) => serde_json::from_str(&std::fs::read_to_string(f)?)
            .with_context(|| format!("{} is not JSON", f.display()))?,
        None => Value::Object(Default::default()),
    };
    let origin = match ChatExport::of_run(config)? {
        Some(chat) => {
            json["chat_template"] = Value::String(chat.template);
            "the chat template the run's data was prepared with".to_string()
        }
        None if json.get("chat_template").is_some() => file
            .as_ref()
            .map_or(String::new(), |f| f.display().to_string()),
        None => bail!(
            "no chat template: the run's data holds no conversations and its model has no \
             tokenizer_config.json with one; give one with --chat-template FILE"
        ),
    };
    let parsed = TokenizerConfig::from_json_str(&json.to_string(), &origin)?;
    Ok((ChatTemplate::new(parsed)?, stops))
}

/// `eos_token_id` (one or several) of a `generation_config.json` in `dir`.
fn generation_stops(dir: &Path) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    match &value["eos_token_id"] {
        Value::Array(ids) => ids
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        v => v.as_u64().map(|v| v as u32).into_iter().collect(),
    }
}
