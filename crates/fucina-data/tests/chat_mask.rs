//! The loss mask of a conversation, worked out by hand for a ChatML-style
//! template and a word-level tokenizer whose tokens can be counted.

mod common;

use common::{word_tokenizer, CHATML};
use fucina_data::{ChatEncoder, ChatTemplate, Conversation, TokenizerConfig};

fn template(source: &str) -> ChatTemplate {
    let config = serde_json::json!({"chat_template": source, "eos_token": "<|im_end|>"});
    ChatTemplate::new(TokenizerConfig::from_json_str(&config.to_string(), "test-config").unwrap())
        .unwrap()
}

#[test]
fn assistant_replies_and_their_end_of_turn_are_masked_in() {
    let encoder = ChatEncoder::new(template(CHATML), &word_tokenizer());
    let conv = Conversation::from_pairs(&[
        ("system", "Be kind"),
        ("user", "Hi"),
        ("assistant", "Hello there"),
        ("user", "Bye"),
        ("assistant", "Ciao"),
    ])
    .unwrap();
    let encoded = encoder.encode(&conv).unwrap();
    // <|im_start|>=0 <|im_end|>=1 \n=2 " "=3 system=4 user=5 assistant=6 Be=7
    // kind=8 Hi=9 Hello=10 there=11 Bye=12 Ciao=13
    #[rustfmt::skip]
    let tokens = [
        0, 4, 2, 7, 3, 8, 1, 2,     // <|im_start|>system\nBe kind<|im_end|>\n
        0, 5, 2, 9, 1, 2,           // <|im_start|>user\nHi<|im_end|>\n
        0, 6, 2, 10, 3, 11, 1, 2,   // <|im_start|>assistant\nHello there<|im_end|>\n
        0, 5, 2, 12, 1, 2,          // <|im_start|>user\nBye<|im_end|>\n
        0, 6, 2, 13, 1, 2,          // <|im_start|>assistant\nCiao<|im_end|>\n
    ];
    // The newline the template writes after <|im_end|> is not the model's to
    // write (generation stops at <|im_end|>), so it is not trained on.
    #[rustfmt::skip]
    let mask = [
        0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0,
        0, 0, 0, 1, 1, 1, 1, 0,     // the reply and its <|im_end|>
        0, 0, 0, 0, 0, 0,
        0, 0, 0, 1, 1, 0,
    ];
    assert_eq!(encoded.tokens, tokens);
    assert_eq!(encoded.mask, mask);

    let (text, spans) = encoder
        .template()
        .assistant_spans(&conv, encoder.end_tokens())
        .unwrap();
    let replies: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
    assert_eq!(replies, ["Hello there<|im_end|>", "Ciao<|im_end|>"]);

    // Offsets are bytes: a two-byte character before the reply must not shift the mask.
    let accented = Conversation::from_pairs(&[("user", "Grüße"), ("assistant", "Ciao")]).unwrap();
    let encoded = encoder.encode(&accented).unwrap();
    assert_eq!(
        encoded.tokens,
        [0, 5, 2, 14, 1, 2, 0, 6, 2, 13, 1, 2],
        "Grüße is [UNK]"
    );
    assert_eq!(encoded.mask, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]);

    let no_reply = Conversation::from_pairs(&[("user", "Hi")]).unwrap();
    let encoded = encoder.encode(&no_reply).unwrap();
    assert_eq!(encoded.tokens, [0, 5, 2, 9, 1, 2]);
    assert_eq!(encoded.mask, [0; 6]);
}

#[test]
fn special_token_text_in_a_template_is_one_token() {
    // The plain tokenizer (used for pre-training text) spells it out instead.
    let tok = word_tokenizer();
    assert_ne!(tok.encode("<|im_end|>").unwrap(), [1]);
    let encoder = ChatEncoder::new(template(CHATML), &tok);
    let conv = Conversation::from_pairs(&[("user", "Hi")]).unwrap();
    assert_eq!(encoder.encode(&conv).unwrap().tokens[4], 1);
}

/// The reply's text and where it ends, per message, as `assistant_spans` finds them.
fn replies(source: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    let encoder = ChatEncoder::new(template(source), &word_tokenizer());
    let conv = Conversation::from_pairs(pairs).unwrap();
    let (text, spans) = encoder
        .template()
        .assistant_spans(&conv, encoder.end_tokens())
        .unwrap();
    spans.iter().map(|s| text[s.clone()].to_owned()).collect()
}

#[test]
fn templates_that_rewrite_earlier_turns_still_give_each_reply() {
    // Marks the last message, so a prefix renders differently from the whole:
    // replies are then found by their text.
    let source =
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}<|im_start|>{{ m.role }}\n\
                  {{ m.content }}<|im_end|>\n{% endfor %}";
    let pairs = [
        ("user", "Hi"),
        ("assistant", "Ciao"),
        ("user", "Bye"),
        ("assistant", "Ciao"),
    ];
    assert_eq!(
        replies(source, &pairs),
        ["Ciao<|im_end|>", "Ciao<|im_end|>"]
    );

    // Drops the reasoning of earlier replies (as Qwen3's template does): the
    // last reply keeps it, and it is trained on, since the model writes it.
    let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
                  {% if m.role == 'assistant' and loop.last %}<think>{{ m.reasoning_content }}</think>{% endif %}\
                  {{ m.content }}<|im_end|>\n{% endfor %}\
                  {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let encoder = ChatEncoder::new(template(source), &word_tokenizer());
    let value = serde_json::json!([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ciao", "reasoning_content": "kind"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao", "reasoning_content": "Be kind"},
    ]);
    let conv = Conversation::from_value(&minijinja::Value::from_serialize(&value)).unwrap();
    let (text, spans) = encoder
        .template()
        .assistant_spans(&conv, encoder.end_tokens())
        .unwrap();
    let got: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
    assert_eq!(
        got,
        ["Ciao<|im_end|>", "<think>Be kind</think>Ciao<|im_end|>"]
    );

    // Without an end-of-turn token, a reply takes what the template writes
    // after it before the next turn. This template writes no generation
    // prompt, so a model prompted with it writes the role too: trained on.
    let source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}";
    let pairs = [
        ("user", "Hi"),
        ("assistant", "Ciao"),
        ("user", "Bye"),
        ("assistant", "Ciao"),
    ];
    assert_eq!(
        replies(source, &pairs),
        ["assistant: Ciao\n\n", "assistant: Ciao\n\n"]
    );
}

#[test]
fn a_default_system_prompt_and_an_appended_header_leave_the_replies_alone() {
    let source = "<|im_start|>system\nBe kind<|im_end|>\n\
                  {% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                  {{ '<|im_start|>assistant\\n' }}";
    // The reply's text also appears in the prompt and in the header.
    let pairs = [
        ("user", "assistant kind"),
        ("assistant", "assistant"),
        ("user", "kind"),
        ("assistant", "kind"),
    ];
    assert_eq!(
        replies(source, &pairs),
        ["assistant<|im_end|>", "kind<|im_end|>"]
    );
}

#[test]
fn generation_blocks_are_what_is_trained_on() {
    // Whitespace control on the tags works as on any block tag (the
    // rendering below is what jinja2 gives, as transformers sets it up).
    let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
                  {% if m.role == 'assistant' %}\n  {%- generation -%}\n  {{ m.content }}<|im_end|>\n  {%- endgeneration %}\n\
                  {% else %}{{ m.content }}<|im_end|>{% endif %}{{ '\\n' }}{% endfor %}";
    let pairs = [
        ("user", "Hi"),
        ("assistant", "Hello there"),
        ("user", "Bye"),
        ("assistant", "Ciao"),
    ];
    let t = template(source);
    assert!(t.has_generation_blocks());
    let conv = Conversation::from_pairs(&pairs).unwrap();
    let plain = t.render(&conv, false).unwrap();
    assert_eq!(
        plain,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nCiao<|im_end|>\n"
    );
    let (text, spans) = t.render_generation_spans(&conv).unwrap();
    assert_eq!(text, plain);
    let got: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
    assert_eq!(got, ["Hello there<|im_end|>", "Ciao<|im_end|>"]);
    // The blocks win over locating replies, even where they enclose less.
    let source = source.replace(
        "{{ m.content }}<|im_end|>\n  {%- endgeneration %}",
        "{{ m.content }}{%- endgeneration %}<|im_end|>",
    );
    assert_eq!(replies(&source, &pairs), ["Hello there", "Ciao"]);
}

#[test]
fn a_template_that_changes_a_reply_is_refused_suggesting_another() {
    let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | upper }}<|im_end|>\n{% endfor %}";
    let encoder = ChatEncoder::new(template(source), &word_tokenizer());
    let conv = Conversation::from_pairs(&[("user", "Hi"), ("assistant", "Ciao")]).unwrap();
    let err = format!("{:#}", encoder.encode(&conv).unwrap_err());
    assert!(
        err.contains("test-config")
            && err.contains("messages[1]")
            && err.contains("--chat-template")
            && err.contains("{% generation %}"),
        "{err}"
    );
}
