//! Chat templates and loss masks for supervised fine-tuning on conversations.
//!
//! A model's `tokenizer_config.json` carries its chat template (Jinja) and
//! special tokens. `ChatTemplate` renders a conversation to text the way
//! transformers' `apply_chat_template(..., tokenize=False)` does, and
//! `ChatEncoder` tokenizes that text and marks which tokens the model is
//! trained to produce: the assistant replies, each with the end-of-turn text
//! the template writes after it, and nothing else.
//!
//! How replies are located: for assistant message `i` the conversation is
//! rendered up to message `i − 1` with the generation prompt (everything the
//! model sees before it starts answering) and up to message `i` without it;
//! the reply is the text between the two. Both renderings must be prefixes of
//! the whole conversation's rendering, or the template is refused with an
//! error naming it (a template that rewrites earlier turns depending on what
//! follows cannot be split this way). The whole rendering is tokenized once,
//! with special-token text parsed as special tokens like transformers does
//! (`add_special_tokens=False`: nothing is added beyond what the template
//! writes), and a token counts when its text overlaps a reply, so a token
//! straddling the start of a reply counts.

mod config;
mod conversation;
mod encode;
mod formats;
mod pyjson;
mod skipped;
mod template;

pub use config::{TokenizerConfig, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
pub use conversation::Conversation;
pub use encode::{ChatEncoder, EncodedChat};
pub(crate) use formats::{read_conversation, JsonlLine, Skip};
pub use formats::{MESSAGE_ROLES, SHAREGPT_ROLES};
pub(crate) use skipped::SkipReport;
pub use template::ChatTemplate;
