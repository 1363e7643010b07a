//! A small multilingual corpus and a tokenizer trained on it with the real
//! tokenizers crate.

#![allow(dead_code)]

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
