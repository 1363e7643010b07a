//! The embedded corpus goes through the whole pipeline with its own tokenizer.

use fucina_data::corpus::{
    builtin_documents, builtin_languages, builtin_tokenizer_json, write_builtin_corpus,
};
use fucina_data::{prepare, PrepareOptions, TextTokenizer, TokenDataset};

#[test]
fn builtin_corpus_prepares_with_builtin_tokenizer() {
    let docs = builtin_documents();
    let Some(json) = builtin_tokenizer_json() else {
        eprintln!("no built-in tokenizer in this build; skipping");
        return;
    };
    assert!(!docs.is_empty());
    for lang in builtin_languages() {
        assert!(
            docs.iter().any(|(l, _)| *l == lang),
            "{lang} has no documents"
        );
    }
    let tok = TextTokenizer::from_json_str(json).unwrap();
    let eos = tok.eos_id().expect("built-in tokenizer has an EOS token");
    for (lang, text) in docs.iter().step_by(97) {
        assert_eq!(
            &tok.decode(&tok.encode(text).unwrap()).unwrap(),
            text,
            "{lang}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let files = write_builtin_corpus(&dir.path().join("corpus")).unwrap();
    assert_eq!(files.len(), builtin_languages().len());
    let opts = PrepareOptions {
        val_fraction: 0.05,
        shard_tokens: 1 << 16,
        progress: false,
        ..Default::default()
    };
    let summary = prepare(&tok, &files, &dir.path().join("out"), &opts).unwrap();
    assert_eq!(summary.train_docs + summary.val_docs, docs.len() as u64);
    let train = TokenDataset::open_glob_dir(&dir.path().join("out"), "train").unwrap();
    let mut tokens = vec![0; train.len()];
    train.read(0, &mut tokens);
    assert_eq!(
        tokens.iter().filter(|&&t| t == eos).count() as u64,
        summary.train_docs
    );
}
