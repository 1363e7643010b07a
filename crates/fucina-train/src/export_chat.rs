//! What a fine-tuned model's export carries of its training data: the chat template the
//! conversations were prepared with (`chat_template.jinja` beside the data's `meta.json`) and
//! the end-of-text and padding tokens its rows used, so transformers renders prompts and stops
//! generating as the model was trained to.

use crate::config::RunConfig;
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The template and the eos/pad ids of the run's chat data, if it has any.
pub struct ChatExport {
    pub template: String,
    pub eos_id: u32,
    pub pad_id: u32,
}

impl ChatExport {
    pub fn of_run(config: &RunConfig) -> Result<Option<Self>> {
        let data = &config.data;
        let dirs =
            std::iter::once(data.dir.as_str()).chain(data.sources.iter().map(|s| s.dir.as_str()));
        for dir in dirs.filter(|d| !d.is_empty() && Path::new(d).join("meta.json").is_file()) {
            if let Some((template, meta)) =
                fucina_data::prepare::template_file::read(Path::new(dir))?
            {
                let pad_id = meta.chat.as_ref().map_or(meta.eos_id, |c| c.pad_id);
                return Ok(Some(Self {
                    template,
                    eos_id: meta.eos_id,
                    pad_id,
                }));
            }
        }
        Ok(None)
    }

    /// Puts the template, eos and pad into the staged tokenizer files of `dir`.
    pub fn patch_tokenizer_files(&self, dir: &Path, config: &RunConfig) -> Result<()> {
        let tokenizer = crate::data::load_tokenizer(&config.data.tokenizer)?;
        let text = |id: u32| {
            tokenizer.inner().id_to_token(id).with_context(|| {
                format!("token id {id} of the prepared data is not in the tokenizer")
            })
        };
        let path = dir.join("tokenizer_config.json");
        let mut tokenizer_config = read_object(&path)?;
        tokenizer_config.insert("chat_template".into(), json!(self.template));
        tokenizer_config.insert("eos_token".into(), json!(text(self.eos_id)?));
        tokenizer_config.insert("pad_token".into(), json!(text(self.pad_id)?));
        write_object(&path, tokenizer_config)?;
        // transformers prefers a chat_template.jinja file to the config's field.
        std::fs::write(dir.join("chat_template.jinja"), &self.template)?;
        let generation = dir.join("generation_config.json");
        if generation.is_file() {
            let mut g = read_object(&generation)?;
            g.insert("eos_token_id".into(), self.eos_ids(g.get("eos_token_id")));
            g.insert("pad_token_id".into(), json!(self.pad_id));
            write_object(&generation, g)?;
        }
        Ok(())
    }

    /// Sets `eos_token_id` and `pad_token_id` of an exported `config.json`.
    pub fn patch_model_config(&self, out: &Path) -> Result<()> {
        let path = out.join("config.json");
        let mut c = read_object(&path)?;
        c.insert("eos_token_id".into(), self.eos_ids(c.get("eos_token_id")));
        c.insert("pad_token_id".into(), json!(self.pad_id));
        write_object(&path, c)
    }

    /// The data's eos added to the ids already named (a chat model stops at its end of turn
    /// and at the end of text alike).
    fn eos_ids(&self, existing: Option<&Value>) -> Value {
        let mut ids: Vec<u64> = match existing {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        };
        if ids.contains(&(self.eos_id as u64)) {
            return existing.cloned().unwrap_or(json!(self.eos_id));
        }
        ids.insert(0, self.eos_id as u64);
        match ids.len() {
            1 => json!(ids[0]),
            _ => json!(ids),
        }
    }
}

fn read_object(path: &Path) -> Result<Map<String, Value>> {
    if !path.is_file() {
        return Ok(Map::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))? {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("{} is not a JSON object", path.display()),
    }
}

fn write_object(path: &Path, map: Map<String, Value>) -> Result<()> {
    let text = serde_json::to_string_pretty(&Value::Object(map))?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
