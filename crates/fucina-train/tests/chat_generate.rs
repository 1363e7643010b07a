//! `fucina generate --chat` against transformers 5.23.0 (scripts/hf_fixtures_generate.py).

use burn::backend::Flex;
use fucina_model::hf::HfCheckpoint;
use fucina_train::generate::{ChatRequest, Decoding};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The llama-gqa weights, Qwen2-Instruct's chat template and the fixture's word-level
/// tokenizer, as a Hugging Face model directory.
fn write_model_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(fixtures().join("hf/llama-gqa")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let copy = |from: &str, to: &str| std::fs::copy(fixtures().join(from), dir.join(to)).unwrap();
    copy(
        "chat/qwen2-7b-instruct/tokenizer_config.json",
        "tokenizer_config.json",
    );
    copy("chat-generate/tokenizer.json", "tokenizer.json");
}

/// `generate --chat` against transformers 5.23.0 (scripts/hf_fixtures_generate.py): on the
/// model directory above, the chat prompt's ids (Qwen2's template rendered, its markers encoded
/// as the special tokens they are) and 12 greedy tokens equal `apply_chat_template` and
/// `generate`'s, with the key/value cache and without (the runner-up logit is ≥ 0.0145 behind
/// at every step, far above the 1e-6 the two implementations differ by).
#[test]
fn chat_generation_equals_transformers_greedy() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model_dir(&model);
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("chat-generate/greedy.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        let list = v.as_array().unwrap();
        list.iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let text = format!(
        "out_dir = \"{}\"\n[model]\nhf = \"{}\"\n[data]\ndir = \"\"\ntrain_files = [\"unused.bin\"]\ntokenizer = \"{}\"\nseq_len = 16\n\
         [train]\nsteps = 1\nglobal_batch_tokens = 16\nmicro_batch_size = 1\nlr = 1e-3\n",
        tmp.path().join("run").display(),
        model.display(),
        model.join("tokenizer.json").display()
    );
    let config = fucina_train::RunConfig::from_toml_str(&text, &[]).unwrap();
    let tokenizer = fucina_train::data::load_tokenizer(&config.data.tokenizer).unwrap();
    let messages = &fixture["messages"];
    let request = ChatRequest {
        system: Some(messages[0]["content"].as_str().unwrap().into()),
        ..Default::default()
    };
    let user = messages[1]["content"].as_str().unwrap();
    let prompt =
        fucina_train::chat_prompt::ChatPrompt::build(&config, &tokenizer, &request, user).unwrap();
    assert_eq!(prompt.ids, ids(&fixture["prompt_ids"]), "{}", prompt.text);
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    assert!(prompt.stops.contains(&im_end), "{:?}", prompt.stops);

    let device = Default::default();
    let weights = HfCheckpoint::open(&model)
        .unwrap()
        .load::<Flex>(&device, false);
    let weights = weights.unwrap();
    for cache in [true, false] {
        let decoding = Decoding {
            max_new: 12,
            temperature: 0.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: 0,
            stops: prompt.stops.clone(),
            cache,
        };
        let generated = decoding.run(&weights, &prompt.ids, false, &device);
        assert_eq!(generated, ids(&fixture["generated_ids"]), "cache {cache}");
    }
}
