//! Data made with one tokenizer is refused for a run that trains with another, and a run from a
//! Hugging Face model must name the model's tokenizer.

use fucina_data::{prepare, PrepareOptions, TextTokenizer};
use fucina_dist::SingleProcess;
use fucina_train::{train, RunConfig, TrainOptions};
use std::path::Path;

const CONFIG: &str = r#"out_dir = "OUT"
[model]
preset = "tiny"
[data]
dir = "DATA"
tokenizer = "TOKENIZER"
seq_len = 16
[train]
steps = 1
global_batch_tokens = 32
micro_batch_size = 2
lr = 1e-3
"#;

fn config(out: &Path, data: &Path, tokenizer: &str, extra: &[&str]) -> RunConfig {
    let text = CONFIG
        .replace("OUT", out.to_str().unwrap())
        .replace("DATA", data.to_str().unwrap())
        .replace("TOKENIZER", tokenizer);
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml_str(&text, &extra).unwrap()
}

#[test]
fn shards_of_another_tokenizer_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("corpus.txt");
    std::fs::write(
        &text,
        "la forgia arde\n\nil mare è calmo oggi\n\n".repeat(50),
    )
    .unwrap();
    let tokenizer_path = tmp.path().join("tokenizer.json");
    fucina_data::train_bpe(std::slice::from_ref(&text), 300, &tokenizer_path, false).unwrap();
    let tokenizer = TextTokenizer::from_file(&tokenizer_path).unwrap();
    let data = tmp.path().join("data");
    let options = PrepareOptions {
        val_fraction: 0.1,
        ..Default::default()
    };
    prepare(&tokenizer, &[text], &data, &options).unwrap();

    let run = config(&tmp.path().join("a"), &data, "builtin", &[]);
    let e = format!(
        "{:#}",
        train(run, &SingleProcess, TrainOptions::default()).unwrap_err()
    );
    assert!(e.contains("another tokenizer"), "{e}");

    let run = config(
        &tmp.path().join("b"),
        &data,
        tokenizer_path.to_str().unwrap(),
        &[],
    );
    train(run, &SingleProcess, TrainOptions::default()).unwrap();
}

#[test]
fn a_hugging_face_run_needs_the_models_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/llama-gqa");
    let text = CONFIG
        .replace("OUT", tmp.path().to_str().unwrap())
        .replace("DATA", "builtin")
        .replace("TOKENIZER", "builtin")
        .replace("preset = \"tiny\"", &format!("hf = \"{}\"", hf.display()));
    let run = RunConfig::from_toml_str(&text, &[]).unwrap();
    let e = format!(
        "{:#}",
        train(run, &SingleProcess, TrainOptions::default()).unwrap_err()
    );
    assert!(e.contains("data.tokenizer"), "{e}");
}
