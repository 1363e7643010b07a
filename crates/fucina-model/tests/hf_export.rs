//! Export: transformers' sharding and index, config.json as transformers writes it, and a
//! destination that is either complete or untouched.

mod hf_common;

use fucina_model::hf::{export, ExportOptions, HfCheckpoint, HfConfig, HfDtype};
use hf_common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sharding_writes_a_valid_index() {
    let config = tiny(false);
    let model = random_model(&config, 21);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let max = 3000;
    let options = ExportOptions {
        max_shard_bytes: max,
        ..Default::default()
    };
    let summary = export(&model, &config, &out, &options).unwrap();
    let n = summary.weight_files.len();
    assert!(n > 3, "{:?}", summary.weight_files);
    let index = json(&out.join("model.safetensors.index.json"));
    assert_eq!(
        index["metadata"]["total_size"],
        (config.num_parameters() * 4) as u64
    );
    assert_eq!(
        index["metadata"]["total_parameters"],
        config.num_parameters() as u64
    );
    let weight_map = index["weight_map"].as_object().unwrap();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, file) in summary.weight_files.iter().enumerate() {
        assert_eq!(file, &format!("model-{:05}-of-{n:05}.safetensors", i + 1));
        let bytes = std::fs::read(out.join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let size: usize = st.tensors().iter().map(|(_, v)| v.data().len()).sum();
        assert!(size as u64 <= max || st.len() == 1, "{file}: {size} bytes");
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let format = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format").cloned());
        assert_eq!(format.as_deref(), Some("pt"), "{file}");
        for name in st.names() {
            assert!(
                seen.insert(name.to_string(), file.clone()).is_none(),
                "{name} twice"
            );
            assert_eq!(weight_map[name], file.as_str(), "{name}");
        }
    }
    assert_eq!(seen.len(), weight_map.len());
    // 2 layers × 9 tensors + embedding, final norm and head.
    assert_eq!(seen.len(), 2 * 9 + 3);
    assert!(!out.join("model.safetensors").exists());
    let loaded = HfCheckpoint::open(&out)
        .unwrap()
        .load::<B>(&Default::default(), false)
        .unwrap();
    assert_eq!(weights(&loaded), weights(&model));
}

/// Every field transformers 5 (config.json) and 4 (config.v4.json) wrote for the fixture is in
/// the export with the same value: either version reads the same model from it.
#[test]
fn config_json_holds_what_transformers_4_and_5_write() {
    for name in ["llama-gqa", "mistral", "llama3-tied"] {
        let checkpoint = HfCheckpoint::open(fixture(name)).unwrap();
        let model = checkpoint.load::<B>(&Default::default(), false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let options = ExportOptions {
            source: Some(checkpoint.hf_config().clone()),
            ..Default::default()
        };
        export(&model, checkpoint.config(), &out, &options).unwrap();
        let written = json(&out.join("config.json"));
        for reference in ["config.json", "config.v4.json"] {
            let reference = json(&fixture(name).join(reference));
            for (key, value) in reference.as_object().unwrap() {
                assert_eq!(written.get(key), Some(value), "{name}: {key}");
            }
        }
    }
}

#[test]
fn fresh_model_exports_as_llama_in_the_chosen_dtype() {
    let config = tiny(true);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let options = ExportOptions {
        dtype: Some(HfDtype::BF16),
        ..Default::default()
    };
    export(&random_model(&config, 3), &config, &out, &options).unwrap();
    let written = json(&out.join("config.json"));
    assert_eq!(
        written["architectures"],
        serde_json::json!(["LlamaForCausalLM"])
    );
    assert_eq!(written["model_type"], "llama");
    assert_eq!(written["torch_dtype"], "bfloat16");
    assert_eq!(written["hidden_act"], "silu");
    assert_eq!(written["tie_word_embeddings"], true);
    assert_eq!(written["num_key_value_heads"], 2);
    assert_eq!(written["rope_scaling"], Value::Null);
    assert!(written.get("sliding_window").is_none());
    let again = HfConfig::from_value(written).unwrap();
    assert_eq!(again.model, config);
}

#[test]
fn refuses_a_non_empty_destination_unless_told() {
    let config = tiny(false);
    let model = random_model(&config, 4);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = export(&model, &config, &out, &ExportOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("not empty"), "{e:#}");
    assert!(out.join("notes.txt").exists());
    let options = ExportOptions {
        overwrite: true,
        ..Default::default()
    };
    export(&model, &config, &out, &options).unwrap();
    assert!(!out.join("notes.txt").exists(), "replaced, not merged");
    assert!(out.join("model.safetensors").exists());
    // Only the export is left next to it: no staging or set-aside directories.
    let siblings: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(siblings.len(), 1);
}

#[test]
fn a_failed_export_leaves_nothing() {
    let config = tiny(false);
    let model = random_model(&config, 4);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let options = ExportOptions {
        tokenizer_dir: Some(dir.path().join("no-such-tokenizer")),
        ..Default::default()
    };
    let e = export(&model, &config, &out, &options).unwrap_err();
    assert!(format!("{e:#}").contains("no-such-tokenizer"), "{e:#}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A model that does not match the config it is exported under.
    let mut other = config.clone();
    other.intermediate_size = 32;
    let e = export(&model, &other, &out, &ExportOptions::default()).unwrap_err();
    let message = format!("{e:#}");
    assert!(
        message.contains("model.layers.0.mlp.gate_proj.weight"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A failure after the weights are written (here: a tokenizer file that cannot be read, the
/// last step) removes the staging directory and leaves an existing export as it was.
#[cfg(target_os = "linux")]
#[test]
fn a_failure_late_in_the_export_leaves_the_old_one() {
    let config = tiny(false);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    export(
        &random_model(&config, 1),
        &config,
        &out,
        &ExportOptions::default(),
    )
    .unwrap();
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let tokenizer = dir.path().join("tok");
    std::fs::create_dir(&tokenizer).unwrap();
    // A regular file whose reads fail.
    std::os::unix::fs::symlink("/proc/self/mem", tokenizer.join("tokenizer.json")).unwrap();
    let options = ExportOptions {
        tokenizer_dir: Some(tokenizer),
        overwrite: true,
        ..Default::default()
    };
    let e = export(&random_model(&config, 2), &config, &out, &options).unwrap_err();
    assert!(format!("{e:#}").contains("cannot copy"), "{e:#}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["out", "tok"]);
}

#[test]
fn copies_tokenizer_files() {
    let config = tiny(false);
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tok");
    std::fs::create_dir(&tokenizer).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json", "unrelated.txt"] {
        std::fs::write(tokenizer.join(file), file).unwrap();
    }
    let out = dir.path().join("out");
    let options = ExportOptions {
        tokenizer_dir: Some(tokenizer),
        ..Default::default()
    };
    let summary = export(&random_model(&config, 1), &config, &out, &options).unwrap();
    assert_eq!(
        summary.tokenizer_files,
        ["tokenizer.json", "tokenizer_config.json"]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
        "tokenizer.json"
    );
    assert!(!out.join("unrelated.txt").exists());
}

#[test]
fn refuses_a_model_with_unmerged_adapters() {
    let config = tiny(false);
    let spec = fucina_model::LoraSpec {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["q_proj".into()],
    };
    let model = random_model(&config, 1).with_lora(&spec, 0, &Default::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let e = export(&model, &config, &out, &ExportOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("LoRA"), "{e:#}");
    export(
        &model.merge_lora(),
        &config,
        &out,
        &ExportOptions::default(),
    )
    .unwrap();
}

#[test]
fn default_dtype_is_the_sources_even_when_config_json_omits_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("mistral");
    std::fs::create_dir(&source).unwrap();
    for entry in std::fs::read_dir(fixture("mistral")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, source.join(path.file_name().unwrap())).unwrap();
    }
    let mut config = json(&source.join("config.json"));
    config.as_object_mut().unwrap().remove("dtype");
    std::fs::write(source.join("config.json"), config.to_string()).unwrap();
    let checkpoint = HfCheckpoint::open(&source).unwrap();
    assert_eq!(checkpoint.torch_dtype(), Some(HfDtype::BF16));
    let model = checkpoint.load::<B>(&Default::default(), false).unwrap();
    let options = ExportOptions {
        source: Some(checkpoint.hf_config().clone()),
        ..Default::default()
    };
    let out = dir.path().join("out");
    let summary = export(&model, checkpoint.config(), &out, &options).unwrap();
    assert_eq!(summary.dtype, HfDtype::BF16);
    assert_eq!(json(&out.join("config.json"))["torch_dtype"], "bfloat16");
}
