//! Tokenizer loading, BPE training and lossless round trips.

mod common;

use fucina_data::tokenizer::ENDOFTEXT;
use fucina_data::{train_bpe, TextTokenizer};

#[test]
fn trained_bpe_round_trips_multilingual_text() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tok) = common::trained_tokenizer(dir.path());
    assert_eq!(tok.eos_id(), Some(0));
    assert_eq!(tok.token_to_id(ENDOFTEXT), Some(0));
    assert_eq!(tok.bos_id(), None);
    let vocab = tok.vocab_size();
    assert_eq!(
        vocab, 400,
        "the corpus has enough pairs to fill the vocabulary"
    );

    let unseen = "Ærøskøbing, Gdańsk, İstanbul — ΑΒΓΔ αβγδ ﬁ\ttab\r\nCRLF  double  space \u{1F600}";
    for text in
        common::DOCS
            .iter()
            .copied()
            .chain([unseen, "", " leading space", "ä", "ł", "ø", "ş", "Ω"])
    {
        let ids = tok.encode(text).unwrap();
        assert!(ids.iter().all(|&i| i < vocab));
        assert_eq!(tok.decode(&ids).unwrap(), text, "ids {ids:?}");
    }
    // Special-token strings in text stay text: no spurious EOS.
    let mention = "a <|endoftext|> b";
    let ids = tok.encode(mention).unwrap();
    assert!(!ids.contains(&0), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), mention);

    // Merges were learned: without them every byte would be one token.
    let sample = common::DOCS.join(" ");
    let n = tok.encode(&sample).unwrap().len();
    assert!(
        n < sample.len() * 2 / 3,
        "{n} tokens for {} bytes",
        sample.len()
    );
    let batch = tok
        .encode_batch(common::DOCS.iter().map(|s| s.to_string()).collect())
        .unwrap();
    for (ids, text) in batch.iter().zip(common::DOCS) {
        assert_eq!(ids, &tok.encode(text).unwrap());
    }

    // The file is pretty JSON, and reloading it from a string hashes the same.
    let json = std::fs::read_to_string(&path).unwrap();
    assert!(json.contains("\n  "));
    let again = TextTokenizer::from_json_str(&json).unwrap();
    assert_eq!(again.sha256(), tok.sha256());
    assert_eq!(tok.sha256().len(), 64);
}

#[test]
fn vocab_too_small_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = common::write_corpus(dir.path(), common::DOCS);
    let err = train_bpe(&[corpus], 256, &dir.path().join("t.json"), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("256") && err.contains("at least 257"), "{err}");
}

#[test]
fn loading_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = format!("{:#}", TextTokenizer::from_file(&missing).err().unwrap());
    assert!(err.contains("missing.json"), "{err}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"model\": 3}").unwrap();
    let err = format!("{:#}", TextTokenizer::from_file(&bad).err().unwrap());
    assert!(
        err.contains("bad.json") && err.contains("not a valid tokenizer.json"),
        "{err}"
    );
}

#[test]
fn special_token_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = common::trained_tokenizer(dir.path());
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Add </s> and <s> as extra special tokens: </s> outranks <|endoftext|>.
    let added = json["added_tokens"].as_array_mut().unwrap();
    let template = added[0].clone();
    let n = json["model"]["vocab"].as_object().unwrap().len() as u64;
    for (i, content) in ["</s>", "<s>"].iter().enumerate() {
        let mut t = template.clone();
        t["id"] = (n + i as u64).into();
        t["content"] = (*content).into();
        json["added_tokens"].as_array_mut().unwrap().push(t);
    }
    let tok = TextTokenizer::from_json_str(&json.to_string()).unwrap();
    assert_eq!(tok.eos_id(), Some(n as u32));
    assert_eq!(tok.bos_id(), Some(n as u32 + 1));
    assert_eq!(tok.vocab_size(), n as u32 + 2);
}

/// A word-level tokenizer.json: `words` in order, then `special` tokens as added tokens.
fn word_level(dir: &std::path::Path, words: &[&str], added: &[(&str, bool)]) -> std::path::PathBuf {
    let mut vocab = serde_json::Map::new();
    for (i, w) in words.iter().chain(added.iter().map(|(t, _)| t)).enumerate() {
        vocab.insert(w.to_string(), i.into());
    }
    let added: Vec<serde_json::Value> = added
        .iter()
        .enumerate()
        .map(|(i, (content, special))| {
            serde_json::json!({"id": words.len() + i, "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": special})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": words[0]}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// End-of-text comes from the tokenizer's own metadata: `tokenizer_config.json`'s eos_token
/// (string or object), else the candidate the tokenizer declares special — never an ordinary
/// token that happens to be spelt `</s>`, as in Gemma's vocabulary.
#[test]
fn end_of_text_comes_from_the_tokenizers_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let config = |d: &std::path::Path, eos: serde_json::Value| {
        let json = serde_json::json!({ "eos_token": eos });
        std::fs::write(d.join("tokenizer_config.json"), json.to_string()).unwrap();
    };

    // Llama 3 Instruct: eos_token <|eot_id|>; the base model's tokenizer alone: <|end_of_text|>.
    let llama = dir("llama3");
    let special = [
        ("<|begin_of_text|>", true),
        ("<|end_of_text|>", true),
        ("<|eot_id|>", true),
    ];
    let path = word_level(&llama, &["<unk>", "hello"], &special);
    assert_eq!(TextTokenizer::from_file(&path).unwrap().eos_id(), Some(3));
    config(&llama, "<|eot_id|>".into());
    let tok = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(
        (tok.eos_id(), tok.eos_token()),
        (Some(4), Some("<|eot_id|>"))
    );

    // Gemma: an ordinary "</s>" (not special) before the special <eos> and <end_of_turn>.
    let gemma = dir("gemma");
    let path = word_level(
        &gemma,
        &["<unk>", "</s>", "ciao"],
        &[("<eos>", true), ("<end_of_turn>", true)],
    );
    assert_eq!(TextTokenizer::from_file(&path).unwrap().eos_id(), Some(3));
    config(
        &gemma,
        serde_json::json!({"content": "<eos>", "special": true}),
    );
    assert_eq!(TextTokenizer::from_file(&path).unwrap().eos_id(), Some(3));

    // Mistral: </s> special, named by an object.
    let mistral = dir("mistral");
    let path = word_level(
        &mistral,
        &["<unk>", "bonjour"],
        &[("<s>", true), ("</s>", true)],
    );
    config(&mistral, serde_json::json!({"content": "</s>"}));
    assert_eq!(TextTokenizer::from_file(&path).unwrap().eos_id(), Some(3));

    // A config naming a token the vocabulary lacks is an error, not a silent fallback.
    config(&mistral, "<|im_end|>".into());
    let err = format!("{:#}", TextTokenizer::from_file(&path).unwrap_err());
    assert!(
        err.contains("tokenizer_config.json") && err.contains("<|im_end|>"),
        "{err}"
    );
}
