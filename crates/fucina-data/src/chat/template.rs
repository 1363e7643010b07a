//! Rendering chat templates with the Jinja settings transformers uses:
//! `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, a Python `json.dumps` `tojson`, Python string and dict
//! methods, no auto-escaping, and the named special tokens as variables.

use super::config::TokenizerConfig;
use super::conversation::Conversation;
use super::pyjson;
use anyhow::{anyhow, Context, Result};
use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind};
use sha2::{Digest, Sha256};
use std::path::Path;

const NAME: &str = "chat_template";

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    sha256: String,
    config: TokenizerConfig,
}

impl ChatTemplate {
    /// Loads the template of a `tokenizer_config.json` (see `TokenizerConfig::from_file`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(TokenizerConfig::from_file(path)?)
    }

    pub fn new(config: TokenizerConfig) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Output is model input, not HTML, whatever the template's file name.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, state, value| {
            if matches!(value.kind(), ValueKind::Seq | ValueKind::Map) {
                let mut s = String::new();
                pyjson::repr(value, &mut s)?;
                out.write_str(&s).map_err(Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", pyjson::tojson);
        let source = rewrite_generation_tags(&config.chat_template);
        env.add_template_owned(NAME, source)
            .map_err(|e| anyhow!("{}: the chat template does not parse: {e:#}", config.origin))?;
        let sha256 = Sha256::digest(config.chat_template.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            env,
            origin: config.origin.clone(),
            sha256,
            config,
        })
    }

    /// Where the template came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Hex SHA-256 of the template source, which `prepare` records.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The whole conversation as text, as `apply_chat_template(messages,
    /// add_generation_prompt=…, tokenize=False)` renders it. Fails if the
    /// template raises (e.g. on roles it does not accept).
    pub fn render(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_messages(conversation.messages(), add_generation_prompt)
    }

    /// Renders the first `n` messages only.
    pub fn render_prefix(
        &self,
        conversation: &Conversation,
        n: usize,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_messages(&conversation.messages()[..n], add_generation_prompt)
    }

    fn render_messages(&self, messages: &[Value], add_generation_prompt: bool) -> Result<String> {
        let mut vars: Vec<(&str, Value)> = self
            .config
            .special_tokens
            .iter()
            .map(|(name, token)| (name.as_str(), Value::from(token.as_str())))
            .collect();
        // After the tokens, so these win on a name clash, as in transformers.
        vars.extend([
            ("messages", Value::from(messages.to_vec())),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ]);
        let template = self
            .env
            .get_template(NAME)
            .context("chat template not loaded")?;
        template.render(Value::from_iter(vars)).map_err(|e| {
            anyhow!(
                "{}: rendering the chat template failed: {}",
                self.origin,
                describe(&e)
            )
        })
    }
}

/// The message a template passed to `raise_exception`, or minijinja's own
/// description of the failure.
fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => match e.line() {
            Some(line) => format!("{detail} (template line {line})"),
            None => detail.to_owned(),
        },
        _ => e.to_string(),
    }
}

fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        )
    })?;
    Ok(out)
}

/// transformers registers a `{% generation %}…{% endgeneration %}` tag that
/// marks assistant text and renders its body unchanged; minijinja has no
/// such tag, so it becomes an `if true` block with the same whitespace
/// control markers, which renders identically.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        let body_start = 2 + tag[2..].starts_with(['-', '+']) as usize;
        let body = &tag[body_start..];
        let word_at = body.len() - body.trim_start().len();
        let word = &body[word_at..];
        let replaced = [("endgeneration", "endif"), ("generation", "if true")]
            .into_iter()
            .find_map(|(from, to)| {
                let after = word.strip_prefix(from)?;
                let trimmed = after.trim_start();
                let closes = trimmed.starts_with("%}")
                    || trimmed.starts_with("-%}")
                    || trimmed.starts_with("+%}");
                closes.then_some((from.len(), to))
            });
        match replaced {
            Some((len, to)) => {
                out.push_str(&tag[..body_start + word_at]);
                out.push_str(to);
                rest = &tag[body_start + word_at + len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::rewrite_generation_tags;

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags(
                "a{% generation %}b{%- endgeneration -%}c{% if x %}{%generation%}"
            ),
            "a{% if true %}b{%- endif -%}c{% if x %}{%if true%}"
        );
        assert_eq!(
            rewrite_generation_tags("{% generations %}"),
            "{% generations %}"
        );
    }
}
