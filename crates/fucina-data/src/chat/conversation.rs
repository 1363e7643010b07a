//! A validated conversation, held as template values.

use minijinja::value::{Value, ValueKind};

/// Names a message's reasoning may come under; transformers copies it to
/// `thinking` and `reasoning_content`, which different templates read.
const REASONING_FIELDS: &[&str] = &["reasoning_content", "thinking", "reasoning"];

/// A non-empty list of messages, each with a string `role` and `content`.
/// Other fields are kept and passed to the template in their original order
/// (they may matter to it, e.g. a tool call's `name`).
#[derive(Debug, Clone)]
pub struct Conversation {
    messages: Vec<Value>,
    roles: Vec<String>,
    contents: Vec<String>,
}

impl Conversation {
    /// Builds a conversation of plain `(role, content)` messages.
    pub fn from_pairs<R: AsRef<str>, C: AsRef<str>>(pairs: &[(R, C)]) -> Result<Self, String> {
        let messages: Vec<Value> = pairs
            .iter()
            .map(|(r, c)| {
                Value::from_iter([
                    ("role", Value::from(r.as_ref())),
                    ("content", Value::from(c.as_ref())),
                ])
            })
            .collect();
        Self::from_value(&Value::from(messages))
    }

    /// Validates the value of a `"messages"` field (parsed JSON). The error
    /// says what is wrong; callers add where.
    pub fn from_value(messages: &Value) -> Result<Self, String> {
        if messages.kind() != ValueKind::Seq {
            return Err(format!(
                "\"messages\" must be a list of {{\"role\", \"content\"}} objects, not {}",
                describe(messages)
            ));
        }
        let items: Vec<Value> = messages.try_iter().map_err(|e| e.to_string())?.collect();
        if items.is_empty() {
            return Err("\"messages\" is empty".into());
        }
        let (mut out, mut roles, mut contents) = (Vec::new(), Vec::new(), Vec::new());
        for (i, message) in items.iter().enumerate() {
            if message.kind() != ValueKind::Map {
                return Err(format!(
                    "messages[{i}] must be an object, not {}",
                    describe(message)
                ));
            }
            let field = |name: &str| message.get_item(&Value::from(name)).unwrap_or_default();
            let role = field("role");
            let Some(role) = role.as_str() else {
                return Err(format!(
                    "messages[{i}].role must be a string, not {}",
                    describe(&role)
                ));
            };
            let content = field("content");
            let Some(content) = content.as_str() else {
                return Err(format!(
                    "messages[{i}].content must be a string, not {}",
                    describe(&content)
                ));
            };
            roles.push(role.to_owned());
            contents.push(content.to_owned());
            out.push(template_message(message));
        }
        Ok(Self {
            messages: out,
            roles,
            contents,
        })
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn role(&self, i: usize) -> &str {
        &self.roles[i]
    }

    pub fn content(&self, i: usize) -> &str {
        &self.contents[i]
    }

    /// Whether message `i` carries tool calls, which may stand in for its
    /// content (an assistant turn that only calls a tool).
    pub fn calls_tools(&self, i: usize) -> bool {
        let calls = self.messages[i]
            .get_item(&Value::from("tool_calls"))
            .unwrap_or_default();
        calls.kind() == ValueKind::Seq && calls.len().is_some_and(|n| n > 0)
    }

    /// The messages as the template sees them.
    pub(crate) fn messages(&self) -> &[Value] {
        &self.messages
    }
}

/// The message as transformers hands it to the template: fields set to
/// null dropped, and reasoning copied under the names templates read
/// (`thinking` first, `reasoning_content` in place or last).
fn template_message(message: &Value) -> Value {
    let mut fields: Vec<(Value, Value)> = message
        .try_iter()
        .into_iter()
        .flatten()
        .filter_map(|k| {
            let v = message.get_item(&k).ok()?;
            (!v.is_none() && !v.is_undefined()).then_some((k, v))
        })
        .collect();
    let get = |fields: &[(Value, Value)], name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone())
    };
    let reasoning = REASONING_FIELDS.iter().find_map(|n| get(&fields, n));
    if let Some(reasoning) = reasoning {
        // Python's `{"thinking": r, **message, …}` keeps `thinking` first, with the message's value if it has one.
        let thinking = get(&fields, "thinking").unwrap_or_else(|| reasoning.clone());
        fields.retain(|(k, _)| k.as_str() != Some("thinking"));
        fields.insert(0, (Value::from("thinking"), thinking));
        match fields
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some("reasoning_content"))
        {
            Some((_, v)) => *v = reasoning,
            None => fields.push((Value::from("reasoning_content"), reasoning)),
        }
    }
    Value::from_iter(fields)
}

pub(super) fn describe(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => "missing".into(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => format!("a boolean ({value})"),
        ValueKind::Number => format!("a number ({value})"),
        ValueKind::String => "a string".into(),
        ValueKind::Seq => "a list".into(),
        ValueKind::Map => "an object".into(),
        _ => value.kind().to_string(),
    }
}
