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
