//! Chat templates render exactly as transformers' `apply_chat_template(...,
//! tokenize=False)`: checked against renderings transformers produced for
//! real models' templates (`tests/fixtures/chat/<model>/` at the repository
//! root), and against a small template worked out by hand.

use fucina_data::{ChatEncoder, ChatTemplate, Conversation, TokenizerConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every fixture directory: `tokenizer_config.json` and `cases.json`, a list
/// of `{"messages", "add_generation_prompt", "rendered"}` or `{"messages", "error": true}`.
/// `FUCINA_CHAT_FIXTURES` points at another directory of them.
fn fixture_dirs() -> Vec<PathBuf> {
    let root = std::env::var_os("FUCINA_CHAT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("no chat fixtures at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cases.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no chat fixtures under {}",
        root.display()
    );
    dirs
}

#[test]
fn real_model_templates_render_as_transformers_does() {
    let mut checked = 0;
    // The fixtures' tokenizer, whose special tokens include the templates' control tokens.
    let root = fixture_dirs()[0].parent().unwrap().to_owned();
    let tokenizer = fucina_data::TextTokenizer::from_file(root.join("tokenizer.json")).unwrap();
    for dir in fixture_dirs() {
        let template = ChatTemplate::from_file(dir.join("tokenizer_config.json"))
            .unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
        let encoder = ChatEncoder::new(template, &tokenizer);
        let template = encoder.template();
        // Parsed straight into template values, which keep the JSON key
        // order, as Python dicts do (a template may print whole messages).
        let cases: Vec<minijinja::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap())
                .unwrap();
        assert!(!cases.is_empty(), "{}: no cases", dir.display());
        for (i, case) in cases.iter().enumerate() {
            let name = format!("{} case {i}", dir.display());
            let field = |k: &str| case.get_attr(k).unwrap();
            let conversation = Conversation::from_value(&field("messages"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let gen = field("add_generation_prompt").is_true();
            let result = template.render(&conversation, gen);
            if field("error").is_true() {
                assert!(
                    result.is_err(),
                    "{name}: expected an error, rendered {result:?}"
                );
            } else {
                let expected = field("rendered");
                let expected = expected.as_str().expect("rendered or error");
                let got = result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
                assert_eq!(got, expected, "{name}");
                if !gen {
                    check_spans(&encoder, &conversation, &name);
                }
            }
            checked += 1;
        }
    }
    eprintln!("{checked} fixture cases match");
}

/// Each assistant span holds that reply's text (or, for templates that trim
/// it, its trimmed text) and ends with the end-of-turn token.
fn check_spans(encoder: &ChatEncoder, conversation: &Conversation, name: &str) {
    let end_tokens = encoder.end_tokens();
    let (text, spans) = encoder
        .template()
        .assistant_spans(conversation, end_tokens)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let replies: Vec<&str> = (0..conversation.len())
        .filter(|&i| conversation.role(i) == "assistant")
        .map(|i| conversation.content(i).trim())
        .collect();
    assert_eq!(spans.len(), replies.len(), "{name}");
    for (span, reply) in spans.iter().zip(replies) {
        let span = &text[span.clone()];
        assert!(span.contains(reply), "{name}: {span:?} lacks {reply:?}");
        assert!(
            end_tokens.iter().any(|t| span.ends_with(t.as_str())),
            "{name}: {span:?} does not end with an end-of-turn token"
        );
    }
}

/// A template exercising the Jinja settings transformers uses, with its
/// output worked out by hand from the Jinja rules.
#[test]
fn hand_worked_template() {
    let dir = tempfile::tempdir().unwrap();
    let template = r#"{{ bos_token }}
{% for m in messages %}
    {% if m.role not in ['user', 'assistant'] %}
        {{ raise_exception('Unknown role: ' + m.role) }}
    {% endif %}
{{ m.role | upper }}: {{ m.content.strip() }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}

{% endfor %}
{% if add_generation_prompt %}
ASSISTANT:
{% endif %}
{{ messages[0] | tojson }}"#;
    let config = serde_json::json!({
        "chat_template": template,
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "add_bos_token": true,
    });
    let path = dir.path().join("tokenizer_config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let t = ChatTemplate::from_file(&path).unwrap();
    assert_eq!(t.config().add_bos_token, Some(true));
    assert_eq!(t.config().add_eos_token, None);

    let conv = Conversation::from_pairs(&[("user", " Ciao "), ("assistant", "Salve, ü")]).unwrap();
    // trim_blocks drops the newline after each block tag (so after the
    // `endif` closing each message line, leaving the blank line's newline),
    // lstrip_blocks the indentation before one; `{{ }}` keeps its newline.
    let expected_tail = "{\"role\": \"user\", \"content\": \" Ciao \"}";
    assert_eq!(
        t.render(&conv, false).unwrap(),
        format!("<s>\nUSER: Ciao\nASSISTANT: Salve, ü</s>\n{expected_tail}")
    );
    assert_eq!(
        t.render(&conv, true).unwrap(),
        format!("<s>\nUSER: Ciao\nASSISTANT: Salve, ü</s>\nASSISTANT:\n{expected_tail}")
    );
    let bad = Conversation::from_pairs(&[("tool", "x")]).unwrap();
    let err = format!("{:#}", t.render(&bad, false).unwrap_err());
    assert!(err.contains("Unknown role: tool"), "{err}");
}

#[test]
fn config_errors_name_the_file_and_field() {
    let err = |json: &str| {
        format!(
            "{:#}",
            TokenizerConfig::from_json_str(json, "cfg.json").unwrap_err()
        )
    };
    assert!(err("{}").contains("cfg.json has no chat_template"));
    assert!(err(r#"{"chat_template": 3}"#).contains("chat_template must be a string"));
    let e = err(
        r#"{"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "rag", "template": "y"}]}"#,
    );
    assert!(
        e.contains("rag, tool_use") && e.contains("\"default\""),
        "{e}"
    );
    let e = err(r#"{"chat_template": "x", "eos_token": {"lstrip": true}}"#);
    assert!(
        e.contains("eos_token is an object without a string \"content\""),
        "{e}"
    );
    assert!(err(r#"{"chat_template": "x", "add_bos_token": "yes"}"#)
        .contains("add_bos_token must be true or false"));
    assert!(err("[").contains("cfg.json is not valid JSON"));

    let listed = TokenizerConfig::from_json_str(
        r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
            "eos_token": "</s>", "pad_token": null, "extra_special_tokens": {"image_token": "<img>"}}"#,
        "cfg.json",
    )
    .unwrap();
    assert_eq!(listed.chat_template, "D");
    assert_eq!(listed.token("eos_token"), Some("</s>"));
    assert_eq!(listed.token("pad_token"), None);
    assert_eq!(listed.token("image_token"), Some("<img>"));

    let bad = ChatTemplate::new(
        TokenizerConfig::from_json_str(r#"{"chat_template": "{% if %}"}"#, "cfg.json").unwrap(),
    );
    let e = format!("{:#}", bad.err().unwrap());
    assert!(
        e.contains("cfg.json: the chat template does not parse"),
        "{e}"
    );
}

#[test]
fn messages_are_validated() {
    let check = |json: &str| {
        let v: Value = serde_json::from_str(json).unwrap();
        Conversation::from_value(&minijinja::Value::from_serialize(&v)).map(|c| c.len())
    };
    assert_eq!(
        check(r#"[{"role": "user", "content": "x", "name": null}]"#),
        Ok(1)
    );
    assert_eq!(check("[]").unwrap_err(), "\"messages\" is empty");
    assert!(check(r#"{"role": "user"}"#)
        .unwrap_err()
        .contains("must be a list"));
    assert!(check(r#"["hi"]"#)
        .unwrap_err()
        .contains("messages[0] must be an object"));
    assert_eq!(
        check(r#"[{"role": "user", "content": "x"}, {"role": 1, "content": "y"}]"#).unwrap_err(),
        "messages[1].role must be a string, not a number (1)"
    );
    assert_eq!(
        check(r#"[{"role": "user"}]"#).unwrap_err(),
        "messages[0].content must be a string, not missing"
    );
    assert_eq!(
        check(r#"[{"role": "user", "content": null}]"#).unwrap_err(),
        "messages[0].content must be a string, not null"
    );
}
