//! Against checkpoints written by transformers' `save_pretrained`, with the logits and loss
//! transformers computed for them (tests/fixtures/hf, made by scripts/hf-fixtures.sh).

mod hf_common;

use fucina_model::hf::{export, ExportOptions, HfCheckpoint, HfConfig};
use hf_common::*;
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 3] = ["llama-gqa", "mistral", "llama3-tied"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
}

struct Reference {
    tokens: Vec<i64>,
    logits: Vec<f32>,
    loss: f32,
}

fn reference(dir: &Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tokens = st.tensor("tokens").unwrap();
    assert_eq!(tokens.shape(), &[2, 24]);
    let f32s = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    Reference {
        tokens: tokens
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        logits: f32s("logits"),
        loss: f32s("loss")[0],
    }
}

fn check_against_reference(dir: &Path, name: &str) {
    let reference = reference(&fixture(name));
    let checkpoint = HfCheckpoint::open(dir).unwrap();
    let model = checkpoint
        .load::<B>(&Default::default(), false)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let all = tokens(&reference.tokens, 2);
    assert_close(
        &format!("{name} logits"),
        &floats(model.forward(all.clone())),
        &reference.logits,
    );
    let inputs = all.clone().slice([0..2, 0..23]);
    let targets = all.slice([0..2, 1..24]);
    let loss = floats(model.loss(inputs, targets))[0];
    let relative = (loss - reference.loss).abs() / reference.loss.abs();
    assert!(
        relative <= 1e-4,
        "{name} loss {loss} vs transformers' {}",
        reference.loss
    );
    eprintln!(
        "{name} loss: {loss} vs {}, relative {relative:.2e}",
        reference.loss
    );
}

#[test]
fn logits_and_loss_match_transformers() {
    for name in FIXTURES {
        check_against_reference(&fixture(name), name);
    }
}

/// transformers 4 writes `rope_theta`/`rope_scaling`/`torch_dtype` where 5 writes
/// `rope_parameters`/`dtype`; the fixtures carry both layouts of the same config.
#[test]
fn transformers_4_layout_reads_the_same_model() {
    for name in FIXTURES {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::copy(
            fixture(name).join("config.v4.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let v4 = HfConfig::from_file(&dir.path().join("config.json")).unwrap();
        let v5 = HfConfig::from_file(&fixture(name).join("config.json")).unwrap();
        assert_eq!(v4.model, v5.model, "{name}");
        assert_eq!(v4.torch_dtype, v5.torch_dtype, "{name}");
        check_against_reference(dir.path(), name);
    }
}

#[test]
fn fixtures_have_the_shapes_they_claim() {
    let gqa = HfCheckpoint::open(fixture("llama-gqa")).unwrap();
    assert_eq!(gqa.config().kv_heads(), 2);
    assert!(gqa.weight_files().len() >= 2, "sharded");
    let mistral = HfCheckpoint::open(fixture("mistral")).unwrap();
    assert_eq!(mistral.config().head_dim(), 32);
    assert_ne!(
        mistral.config().hidden_size / mistral.config().num_attention_heads,
        32
    );
    assert_eq!(mistral.config().sliding_window, None);
    let tied = HfCheckpoint::open(fixture("llama3-tied")).unwrap();
    assert!(tied.config().tie_word_embeddings);
    assert!(tied.config().rope_scaling.is_some());
}

fn raw_tensors(dir: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("model") || !name.ends_with(".safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (tensor, view) in st.tensors() {
            let value = (view.dtype(), view.shape().to_vec(), view.data().to_vec());
            assert!(
                out.insert(tensor.clone(), value).is_none(),
                "{tensor} twice"
            );
        }
    }
    out
}

/// Import then export in the source's dtype writes back transformers' own bytes, and a
/// config.json that reads as the same model.
#[test]
fn reexport_reproduces_the_checkpoint_bytes() {
    for name in FIXTURES {
        let checkpoint = HfCheckpoint::open(fixture(name)).unwrap();
        let model = checkpoint.load::<B>(&Default::default(), false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export");
        let options = ExportOptions {
            source: Some(checkpoint.hf_config().clone()),
            tokenizer_dir: Some(fixture(name)),
            ..Default::default()
        };
        let summary = export(&model, checkpoint.config(), &out, &options).unwrap();
        assert_eq!(Some(summary.dtype), checkpoint.torch_dtype(), "{name}");
        assert_eq!(
            summary.tokenizer_files,
            ["generation_config.json"],
            "{name}"
        );
        let (source, exported) = (raw_tensors(&fixture(name)), raw_tensors(&out));
        assert_eq!(
            source.keys().collect::<Vec<_>>(),
            exported.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (tensor, value) in &source {
            assert!(exported[tensor] == *value, "{name}: {tensor} differs");
        }
        let again = HfConfig::from_file(&out.join("config.json")).unwrap();
        assert_eq!(&again, checkpoint.hf_config(), "{name}");
    }
}
