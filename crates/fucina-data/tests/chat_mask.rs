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
    #[rustfmt::skip]
    let mask = [
        0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0,
        0, 0, 0, 1, 1, 1, 1, 1,     // the reply, its <|im_end|> and the newline the template puts after it
        0, 0, 0, 0, 0, 0,
        0, 0, 0, 1, 1, 1,
    ];
    assert_eq!(encoded.tokens, tokens);
    assert_eq!(encoded.mask, mask);

    let (text, spans) = encoder.template().assistant_spans(&conv).unwrap();
    let replies: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
    assert_eq!(replies, ["Hello there<|im_end|>\n", "Ciao<|im_end|>\n"]);

    // Offsets are bytes: a two-byte character before the reply must not shift the mask.
    let accented = Conversation::from_pairs(&[("user", "Grüße"), ("assistant", "Ciao")]).unwrap();
    let encoded = encoder.encode(&accented).unwrap();
    assert_eq!(
        encoded.tokens,
        [0, 5, 2, 14, 1, 2, 0, 6, 2, 13, 1, 2],
        "Grüße is [UNK]"
    );
    assert_eq!(encoded.mask, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);

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

#[test]
fn templates_that_rewrite_earlier_turns_are_refused() {
    // Marks the last message, so a prefix renders differently from the whole.
    let source =
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m.content }}\n{% endfor %}";
    let encoder = ChatEncoder::new(template(source), &word_tokenizer());
    let conv = Conversation::from_pairs(&[("user", "Hi"), ("assistant", "Ciao"), ("user", "Bye")])
        .unwrap();
    let err = format!("{:#}", encoder.encode(&conv).unwrap_err());
    assert!(
        err.contains("test-config") && err.contains("cannot be split into turns"),
        "{err}"
    );
}
