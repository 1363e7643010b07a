//! The JSONL shapes a conversation comes in, read into one `Conversation`
//! through an explicit role table per shape. A record that cannot be trained
//! on is not an error but a `Skip`, which `prepare` counts and reports with
//! its line: one bad record in a large download should not stop the run, nor
//! pass silently.
//!
//! - OpenAI `{"messages": [{"role", "content", …}]}`: roles `MESSAGE_ROLES`,
//!   passed on unchanged with the message's other fields (`tool_calls`, …).
//! - ShareGPT `{"conversations": [{"from", "value"}]}`: `from` mapped by
//!   `SHAREGPT_ROLES`; other fields of a turn are not passed on.
//! - `{"prompt": "…", "completion": "…"}`: a user turn and an assistant turn.
//!
//! `messages` or `conversations` make a line a conversation even beside a
//! `"text"`; `prompt`/`completion` only without one (text corpora carry
//! prompts as metadata). Both lists on one line is a skipped record.

use super::conversation::{describe, Conversation};
use minijinja::value::{Value, ValueKind};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Roles accepted in `messages`: what chat templates render. `tool` replies
/// keep their fields (`tool_call_id`, `name`) for the template.
pub const MESSAGE_ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// ShareGPT `from` values and the role each becomes. Anything else
/// (`chatgpt`, `bing`, `function_call`, `observation`, `tool` …) is an
/// unknown role: their meaning varies between datasets, and a tool turn
/// needs fields a ShareGPT turn does not have.
pub const SHAREGPT_ROLES: &[(&str, &str)] = &[
    ("system", "system"),
    ("human", "user"),
    ("user", "user"),
    ("gpt", "assistant"),
    ("assistant", "assistant"),
];

/// Why a conversation is left out of the prepared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A role outside its format's table, named as written.
    UnknownRole(String),
    /// No assistant turn, so nothing to train on.
    NoAssistant,
    /// An empty or whitespace-only message, e.g. `messages[2]`.
    EmptyMessage(String),
    /// Not the shape of its format: what is wrong, e.g.
    /// `messages[1].content must be a string, not a number (3)`.
    Malformed(String),
    /// Both `messages` and `conversations`: which one is meant is unclear.
    TwoLists,
    /// The chat template rendered no token of the assistant turns.
    NothingRendered,
}

/// The fields of a JSONL line that decide what it holds; of the
/// conversation fields only the presence is read here (null counts as
/// absent).
#[derive(Deserialize)]
pub(crate) struct JsonlLine {
    pub text: Option<String>,
    messages: Option<IgnoredAny>,
    conversations: Option<IgnoredAny>,
    prompt: Option<IgnoredAny>,
    completion: Option<IgnoredAny>,
}

impl JsonlLine {
    pub fn is_conversation(&self) -> bool {
        self.messages.is_some()
            || self.conversations.is_some()
            || (self.text.is_none() && (self.prompt.is_some() || self.completion.is_some()))
    }
}

/// Template values keep the order of an object's fields.
#[derive(Deserialize)]
struct ChatFields {
    messages: Option<Value>,
    conversations: Option<Value>,
    prompt: Option<Value>,
    completion: Option<Value>,
}

/// The conversation on a line for which `JsonlLine::is_conversation` holds.
pub(crate) fn read_conversation(line: &str) -> Result<Conversation, Skip> {
    let fields: ChatFields =
        serde_json::from_str(line).map_err(|e| Skip::Malformed(e.to_string()))?;
    match (fields.messages, fields.conversations) {
        (Some(_), Some(_)) => Err(Skip::TwoLists),
        (Some(messages), None) => {
            let conversation = Conversation::from_value(&messages).map_err(Skip::Malformed)?;
            for i in 0..conversation.len() {
                let role = conversation.role(i);
                if !MESSAGE_ROLES.contains(&role) {
                    return Err(Skip::UnknownRole(role.to_owned()));
                }
            }
            checked(conversation, |i| format!("messages[{i}]"))
        }
        (None, Some(turns)) => checked(sharegpt(&turns)?, |i| format!("conversations[{i}]")),
        (None, None) => {
            let field = |value: Option<Value>, name: &str| {
                let value = value.ok_or_else(|| match name {
                    "completion" => Skip::NoAssistant,
                    _ => Skip::Malformed("a \"completion\" without a \"prompt\"".into()),
                })?;
                value.as_str().map(str::to_owned).ok_or_else(|| {
                    Skip::Malformed(format!(
                        "\"{name}\" must be a string, not {}",
                        describe(&value)
                    ))
                })
            };
            let prompt = field(fields.prompt, "prompt")?;
            let completion = field(fields.completion, "completion")?;
            let pairs = [("user", prompt), ("assistant", completion)];
            let conversation = Conversation::from_pairs(&pairs).map_err(Skip::Malformed)?;
            checked(conversation, |i| ["prompt", "completion"][i].to_owned())
        }
    }
}

/// `{"from", "value"}` turns as `{"role", "content"}` messages.
fn sharegpt(turns: &Value) -> Result<Conversation, Skip> {
    if turns.kind() != ValueKind::Seq {
        return Err(Skip::Malformed(format!(
            "\"conversations\" must be a list of {{\"from\", \"value\"}} objects, not {}",
            describe(turns)
        )));
    }
    let turns: Vec<Value> = turns
        .try_iter()
        .map_err(|e| Skip::Malformed(e.to_string()))?
        .collect();
    if turns.is_empty() {
        return Err(Skip::Malformed("\"conversations\" is empty".into()));
    }
    let mut pairs = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        if turn.kind() != ValueKind::Map {
            return Err(Skip::Malformed(format!(
                "conversations[{i}] must be an object, not {}",
                describe(turn)
            )));
        }
        let field = |name: &str| {
            let value = turn.get_item(&Value::from(name)).unwrap_or_default();
            match value.as_str() {
                Some(s) => Ok(s.to_owned()),
                None => Err(Skip::Malformed(format!(
                    "conversations[{i}].{name} must be a string, not {}",
                    describe(&value)
                ))),
            }
        };
        let from = field("from")?;
        let value = field("value")?;
        let Some(&(_, role)) = SHAREGPT_ROLES.iter().find(|(f, _)| *f == from) else {
            return Err(Skip::UnknownRole(from));
        };
        pairs.push((role, value));
    }
    Conversation::from_pairs(&pairs).map_err(Skip::Malformed)
}

/// Refuses empty messages (an assistant's `tool_calls` may stand for its
/// content) and conversations with no assistant turn.
fn checked(
    conversation: Conversation,
    name: impl Fn(usize) -> String,
) -> Result<Conversation, Skip> {
    for i in 0..conversation.len() {
        if conversation.content(i).trim().is_empty() && !conversation.calls_tools(i) {
            return Err(Skip::EmptyMessage(name(i)));
        }
    }
    if !(0..conversation.len()).any(|i| conversation.role(i) == "assistant") {
        return Err(Skip::NoAssistant);
    }
    Ok(conversation)
}
