//! Loss masks agree with transformers on real models' chat templates
//! (`tests/fixtures/chat/<model>/masks.json`, written by
//! `scripts/hf_fixtures_masks.py`): the four instruct templates, the Llama 3
//! template as base models ship it (the assistant header appended whether or
//! not a generation prompt is asked for) and a ChatML variant that does the
//! same. For each conversation the fixture holds the token ids transformers
//! gives and the assistant mask of `apply_chat_template(...,
//! return_assistant_tokens_mask=True)` on a copy of the template with
//! `{% generation %}` blocks (`generation_template`), which renders
//! identically. fucina must give the same ids and mask from the original
//! template (replies located by offsets) and from the copy (the blocks).

use fucina_data::{ChatEncoder, ChatTemplate, Conversation, TextTokenizer, TokenizerConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `FUCINA_CHAT_FIXTURES` points at another directory of them (e.g. made by
/// `hf_fixtures_masks.py --fixtures DIR --tokenizer a-real-tokenizer.json`).
fn fixture_root() -> PathBuf {
    std::env::var_os("FUCINA_CHAT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat"))
}

struct Fixture {
    dir: PathBuf,
    generation_template: String,
    /// `(messages, ids, mask)`.
    conversations: Vec<(minijinja::Value, Vec<u32>, Vec<u8>)>,
}

fn fixtures() -> (TextTokenizer, Vec<Fixture>) {
    let root = fixture_root();
    let tokenizer = TextTokenizer::from_file(root.join("tokenizer.json"))
        .unwrap_or_else(|e| panic!("{}: {e:#}", root.display()));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("no chat fixtures at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("masks.json").is_file())
        .collect();
    dirs.sort();
    let fixtures = dirs
        .into_iter()
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("masks.json")).unwrap();
            let json: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["tokenizer"], "../tokenizer.json", "{}", dir.display());
            let conversations = json["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    // Parsed into template values, which keep the key order.
                    let messages: minijinja::Value =
                        serde_json::from_str(&c["messages"].to_string()).unwrap();
                    let ids = serde_json::from_value(c["ids"].clone()).unwrap();
                    let mask = serde_json::from_value(c["mask"].clone()).unwrap();
                    (messages, ids, mask)
                })
                .collect();
            Fixture {
                generation_template: json["generation_template"].as_str().unwrap().to_owned(),
                dir,
                conversations,
            }
        })
        .collect();
    (tokenizer, fixtures)
}

/// The fixture's config with its template replaced by `template`.
fn with_template(dir: &Path, template: &str) -> ChatTemplate {
    let path = dir.join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["chat_template"] = Value::from(template);
    let origin = format!("{} ({{% generation %}} copy)", path.display());
    ChatTemplate::new(TokenizerConfig::from_json_str(&config.to_string(), &origin).unwrap())
        .unwrap()
}

/// Tokens with the masked ones in brackets, for failure messages.
fn show(tokenizer: &TextTokenizer, ids: &[u32], mask: &[u8]) -> String {
    ids.iter()
        .zip(mask)
        .map(|(&id, &m)| {
            let piece = tokenizer.inner().id_to_token(id).unwrap_or_default();
            if m == 1 {
                format!("[{piece}]")
            } else {
                piece
            }
        })
        .collect()
}

#[test]
fn masks_match_transformers_on_real_templates() {
    let (tokenizer, fixtures) = fixtures();
    if std::env::var_os("FUCINA_CHAT_FIXTURES").is_none() {
        assert!(
            fixtures.len() >= 6,
            "expected the four instruct templates and two that always append the header"
        );
    }
    let mut checked = 0;
    for fixture in &fixtures {
        let name = fixture
            .dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let original = ChatTemplate::from_file(fixture.dir.join("tokenizer_config.json")).unwrap();
        assert!(!original.has_generation_blocks(), "{name}");
        let generation = with_template(&fixture.dir, &fixture.generation_template);
        assert!(generation.has_generation_blocks(), "{name}");
        let encoders = [
            ("offsets", ChatEncoder::new(original, &tokenizer)),
            (
                "generation blocks",
                ChatEncoder::new(generation, &tokenizer),
            ),
        ];
        assert!(fixture.conversations.len() >= 6, "{name}");
        for (i, (messages, ids, mask)) in fixture.conversations.iter().enumerate() {
            let conversation = Conversation::from_value(messages).unwrap();
            assert!(mask.contains(&1), "{name} {i}: transformers masked nothing");
            for (how, encoder) in &encoders {
                let got = encoder
                    .encode(&conversation)
                    .unwrap_or_else(|e| panic!("{name} conversation {i} ({how}): {e:#}"));
                assert_eq!(&got.tokens, ids, "{name} conversation {i} ({how}): ids");
                assert_eq!(
                    &got.mask,
                    mask,
                    "{name} conversation {i} ({how}):\n fucina       {}\n transformers {}",
                    show(&tokenizer, &got.tokens, &got.mask),
                    show(&tokenizer, ids, mask)
                );
            }
            checked += 1;
        }
    }
    eprintln!(
        "{checked} conversations in {} templates: ids and masks equal transformers'",
        fixtures.len()
    );
}

/// The case: Llama 3's template as base models ship it appends the
/// assistant header after every conversation. Multi-turn conversations
/// encode, and the header is not masked in.
#[test]
fn an_assistant_header_appended_anyway_is_not_trained_on() {
    let (tokenizer, fixtures) = fixtures();
    let base = fixtures
        .iter()
        .find(|f| f.dir.ends_with("llama-3-8b-base"))
        .expect("llama-3-8b-base fixture");
    let template = ChatTemplate::from_file(base.dir.join("tokenizer_config.json")).unwrap();
    let encoder = ChatEncoder::new(template, &tokenizer);
    let conversation = Conversation::from_pairs(&[
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "And of Italy?"),
        ("assistant", "Rome."),
    ])
    .unwrap();
    let (text, spans) = encoder
        .template()
        .assistant_spans(&conversation, encoder.end_tokens())
        .unwrap();
    assert!(
        text.ends_with("Rome.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        "{text:?}"
    );
    let replies: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
    assert_eq!(replies, ["Paris.<|eot_id|>", "Rome.<|eot_id|>"]);
    let encoded = encoder.encode(&conversation).unwrap();
    let eot = tokenizer.token_to_id("<|eot_id|>").unwrap();
    let last = encoded.mask.iter().rposition(|&m| m == 1).unwrap();
    assert_eq!(
        encoded.tokens[last], eot,
        "the last masked token ends the reply"
    );
    // Special-token text as special tokens, as in a rendered conversation.
    let mut parsing = tokenizer.inner().clone();
    parsing.set_encode_special_tokens(false);
    let header = parsing
        .encode("<|start_header_id|>assistant<|end_header_id|>\n\n", false)
        .unwrap();
    assert_eq!(
        encoded.tokens[last + 1..],
        *header.get_ids(),
        "only the appended header follows, unmasked"
    );
    let masked = encoded.mask.iter().filter(|&&m| m == 1).count();
    let reply_tokens = |text: &str| parsing.encode(text, false).unwrap().len();
    assert_eq!(
        masked,
        reply_tokens("Paris.<|eot_id|>") + reply_tokens("Rome.<|eot_id|>")
    );
}
