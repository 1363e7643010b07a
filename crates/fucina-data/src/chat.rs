//! Chat templates and loss masks for supervised fine-tuning on conversations.
//!
//! A model's `tokenizer_config.json` carries its chat template (Jinja) and
//! special tokens. `ChatTemplate` renders a conversation to text the way
//! transformers' `apply_chat_template(..., tokenize=False)` does, and
//! `ChatEncoder` tokenizes that text and marks which tokens the model is
//! trained to produce: the assistant replies, each with the end-of-turn token
//! that closes it, and nothing else.
//!
//! How replies are located (`ChatTemplate::assistant_spans`): the whole
//! conversation is rendered once (`add_generation_prompt=false`). A template
//! with `{% generation %}` blocks gets what they enclose, as transformers'
//! `return_assistant_tokens_mask`. Otherwise each reply is found in that
//! rendering by character offsets: it starts where the prompt before it ends
//! (the conversation up to it rendered with the generation prompt, when that
//! is how the whole rendering starts; else where the reply's text is found,
//! searching forward from the previous message's), and ends after the first
//! special token (or `eos_token`) following its text: the end-of-turn token.
//! So a generation header the template appends anyway, a default system
//! prompt, or earlier turns it renders differently do not move the mask. A
//! template that does not write a reply's text (as given or trimmed) is
//! refused with an error that suggests `--chat-template`. The rendering is
//! tokenized once, with special-token text parsed as special tokens like
//! transformers does (`add_special_tokens=False`: nothing is added beyond
//! what the template writes), and a token counts when its text overlaps a
//! reply, so a token straddling the start of a reply (` Paris` after
//! `[/INST]`) counts, as it does in transformers.

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
