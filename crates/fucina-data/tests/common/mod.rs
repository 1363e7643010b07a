//! A small multilingual corpus and a tokenizer trained on it with the real
//! tokenizers crate.

#![allow(dead_code)]

pub mod chats;

use fucina_data::{train_bpe, TextTokenizer};
use std::path::{Path, PathBuf};

pub const DOCS: &[&str] = &[
    "Der Bär läuft über die Brücke, während die Bäume grün sind.",
    "Zażółć gęślą jaźń. Łódź leży w Polsce.",
    "Blåbærsyltetøy på brødskiva, sa Øystein.",
    "Şişli'de güzel bir gün; çay içip simit yedik.",
    "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "The quick brown fox jumps over the lazy dog.\nA second line of the same document.",
    "Numbers 12345 and punctuation: (a), [b], {c}!",
    "Emoji and CJK: 🦀 日本語 テキスト",
];

/// `docs` as text files: two documents per file, separated by blank lines
/// (one with spaces, to exercise whitespace-only separators), in nested dirs.
pub fn write_corpus(dir: &Path, docs: &[&str]) -> PathBuf {
    let root = dir.join("corpus");
    for (i, pair) in docs.chunks(2).enumerate() {
        let sub = root.join(format!("part{}", i % 2));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}.txt")),
            pair.join("\n\n   \n") + "\n\n",
        )
        .unwrap();
    }
    std::fs::write(root.join("ignored.csv"), "not,a,document\n").unwrap();
    root
}

pub fn trained_tokenizer(dir: &Path) -> (PathBuf, TextTokenizer) {
    let corpus = write_corpus(&dir.join("tok"), DOCS);
    let path = dir.join("tokenizer.json");
    train_bpe(&[corpus], 400, &path, false).unwrap();
    let tok = TextTokenizer::from_file(&path).unwrap();
    (path, tok)
}

pub const CHATML: &str =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Words, and every other character alone; `<|im_start|>` = 0,
/// `<|im_end|>` = 1, `<|endoftext|>` = 15 and `<pad>` = 16 are special. The
/// ids of the words are their index in the list below plus 2.
pub fn word_tokenizer() -> TextTokenizer {
    TextTokenizer::from_json_str(&word_tokenizer_json()).unwrap()
}

pub fn word_tokenizer_json() -> String {
    let words = [
        "\n",
        " ",
        "system",
        "user",
        "assistant",
        "Be",
        "kind",
        "Hi",
        "Hello",
        "there",
        "Bye",
        "Ciao",
        "[UNK]",
    ];
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|im_start|>".into(), 0.into());
    vocab.insert("<|im_end|>".into(), 1.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert((*w).into(), (i + 2).into());
    }
    vocab.insert("<|endoftext|>".into(), 15.into());
    vocab.insert("<pad>".into(), 16.into());
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<|im_start|>"), special(1, "<|im_end|>"),
                         special(15, "<|endoftext|>"), special(16, "<pad>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+|[^\\w]"},
                          "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    json.to_string()
}
