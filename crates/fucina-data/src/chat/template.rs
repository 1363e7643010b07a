//! Rendering chat templates with the Jinja settings transformers uses:
//! `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, a Python `json.dumps` `tojson`, Python string and dict
//! methods, no auto-escaping, and the named special tokens as variables.

use super::config::TokenizerConfig;
use super::conversation::Conversation;
use super::pyjson;
use anyhow::{anyhow, bail, Context, Result};
use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::Path;

const NAME: &str = "chat_template";

/// Template variables a `{% generation %}` block writes at its start and end
/// when the blocks are tracked (they are undefined, so empty, otherwise), and
/// the text they hold: private-use characters no conversation is expected to
/// contain.
const GENERATION_START_VAR: &str = "__fucina_generation_start";
const GENERATION_END_VAR: &str = "__fucina_generation_end";
const GENERATION_START: &str = "\u{10FFFD}fucina-generation-start\u{10FFFD}";
const GENERATION_END: &str = "\u{10FFFD}fucina-generation-end\u{10FFFD}";

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    sha256: String,
    config: TokenizerConfig,
    /// Whether the source has `{% generation %}` blocks.
    generation_blocks: bool,
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
        let (source, generation_blocks) = rewrite_generation_tags(&config.chat_template);
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
            generation_blocks,
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

    /// Whether the template marks assistant text with `{% generation %}`
    /// blocks (transformers' `return_assistant_tokens_mask` reads them).
    pub fn has_generation_blocks(&self) -> bool {
        self.generation_blocks
    }

    /// The whole conversation as text, as `apply_chat_template(messages,
    /// add_generation_prompt=…, tokenize=False)` renders it. Fails if the
    /// template raises (e.g. on roles it does not accept).
    pub fn render(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_messages(conversation.messages(), add_generation_prompt, false)
    }

    /// The whole conversation as `render(conversation, false)` gives it, and
    /// the byte ranges in it that the template's `{% generation %}` blocks
    /// wrote, in order (empty ones left out; a block inside another counts
    /// as part of it), as transformers records them for
    /// `return_assistant_tokens_mask`. No ranges if it has no such blocks.
    pub fn render_generation_spans(
        &self,
        conversation: &Conversation,
    ) -> Result<(String, Vec<Range<usize>>)> {
        let marked = self.render_messages(conversation.messages(), false, true)?;
        let mut text = String::with_capacity(marked.len());
        let mut spans = Vec::new();
        let (mut depth, mut start, mut rest) = (0usize, 0usize, marked.as_str());
        loop {
            let next = [(GENERATION_START, true), (GENERATION_END, false)]
                .into_iter()
                .filter_map(|(marker, opens)| rest.find(marker).map(|at| (at, marker, opens)))
                .min();
            let Some((at, marker, opens)) = next else {
                text.push_str(rest);
                break;
            };
            text.push_str(&rest[..at]);
            rest = &rest[at + marker.len()..];
            if opens {
                if depth == 0 {
                    start = text.len();
                }
                depth += 1;
            } else {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    anyhow!("{}: unbalanced {{% generation %}} blocks", self.origin)
                })?;
                if depth == 0 && text.len() > start {
                    spans.push(start..text.len());
                }
            }
        }
        if depth != 0 {
            bail!("{}: unbalanced {{% generation %}} blocks", self.origin);
        }
        Ok((text, spans))
    }

    /// Renders the first `n` messages only.
    pub fn render_prefix(
        &self,
        conversation: &Conversation,
        n: usize,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_messages(&conversation.messages()[..n], add_generation_prompt, false)
    }

    /// `mark_generation` makes `{% generation %}` blocks write their markers.
    fn render_messages(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        mark_generation: bool,
    ) -> Result<String> {
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
        if mark_generation {
            vars.extend([
                (GENERATION_START_VAR, Value::from(GENERATION_START)),
                (GENERATION_END_VAR, Value::from(GENERATION_END)),
            ]);
        }
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
/// such tag. Each becomes two nested `if true` blocks (`endif`s) around the
/// variable holding its start (end) marker: the outer tag keeps the original
/// tag's whitespace control on the left, the inner one on the right, so the
/// text around renders identically, and the marker is empty unless
/// `render_messages` is asked for the markers. Also says whether there was
/// any such tag.
fn rewrite_generation_tags(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut found = false;
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        let body_start = 2 + tag[2..].starts_with(['-', '+']) as usize;
        let body = &tag[body_start..];
        let word_at = body.len() - body.trim_start().len();
        let word = &body[word_at..];
        let replaced = [
            ("endgeneration", "endif", GENERATION_END_VAR, "endif"),
            ("generation", "if true", GENERATION_START_VAR, "if true"),
        ]
        .into_iter()
        .find_map(|(from, outer, var, inner)| {
            let after = word.strip_prefix(from)?;
            let gap = after.len() - after.trim_start().len();
            let close = ["%}", "-%}", "+%}"]
                .into_iter()
                .find(|c| after[gap..].starts_with(c))?;
            Some((from.len() + gap + close.len(), outer, var, inner, close))
        });
        match replaced {
            Some((len, outer, var, inner, close)) => {
                found = true;
                // `{%- generation -%}` → `{%- if true %}{{ start }}{% if true -%}`.
                out.push_str(&tag[..body_start]);
                out.push_str(&format!(" {outer} %}}{{{{ {var} }}}}{{% {inner} {close}"));
                rest = &tag[body_start + word_at + len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    (out, found)
}

#[cfg(test)]
mod tests {
    use super::rewrite_generation_tags;

    #[test]
    fn generation_tags_become_if_blocks() {
        let (out, found) = rewrite_generation_tags(
            "a{% generation %}b{%- endgeneration -%}c{% if x %}{%generation+%}",
        );
        assert!(found);
        assert_eq!(
            out,
            "a{% if true %}{{ __fucina_generation_start }}{% if true %}b\
             {%- endif %}{{ __fucina_generation_end }}{% endif -%}c{% if x %}\
             {% if true %}{{ __fucina_generation_start }}{% if true +%}"
        );
        assert_eq!(
            rewrite_generation_tags("{% generations %}"),
            ("{% generations %}".to_owned(), false)
        );
    }
}
