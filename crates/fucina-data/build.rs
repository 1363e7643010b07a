//! Embeds the built-in corpus: every `corpus/*.txt` (named by language) and
//! `corpus/tokenizer.json` if present. The file list is generated here
//! rather than written by hand so adding a language needs no code change.

use std::fmt::Write;
use std::path::Path;
use std::{env, fs};

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let corpus = Path::new(&manifest).join("corpus");
    println!("cargo:rerun-if-changed=build.rs");
    // A missing path would make cargo rerun this script on every build, so
    // until corpus/ exists watch the crate root, where it would appear.
    let watched = if corpus.is_dir() {
        &corpus
    } else {
        Path::new(&manifest)
    };
    println!("cargo:rerun-if-changed={}", watched.display());

    let mut texts: Vec<_> = fs::read_dir(&corpus)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    texts.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"));
    texts.sort();

    let mut src = String::from("/// (language, whole file text), sorted by language.\n");
    src.push_str("static CORPUS_FILES: &[(&str, &str)] = &[\n");
    for path in &texts {
        let lang = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 corpus file name");
        let path = path.to_str().expect("UTF-8 corpus path");
        writeln!(src, "    ({lang:?}, include_str!({path:?})),").expect("writing to a String");
    }
    src.push_str("];\n");
    let tokenizer = corpus.join("tokenizer.json");
    match tokenizer.to_str().filter(|_| tokenizer.is_file()) {
        Some(path) => writeln!(
            src,
            "static TOKENIZER_JSON: Option<&str> = Some(include_str!({path:?}));"
        ),
        None => writeln!(src, "static TOKENIZER_JSON: Option<&str> = None;"),
    }
    .expect("writing to a String");

    let out =
        Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin_corpus.rs");
    fs::write(&out, src).expect("writing builtin_corpus.rs");
}
