//! fucina's exports as plain transformers and peft saw them (tests/fixtures/hf-export, made by
//! scripts/hf-export-fixtures.sh: fine-tuned with fucina, exported, loaded by the Python
//! libraries, logits recorded). Here fucina loads the same directories and must agree.

mod hf_common;

use fucina_model::hf::{export, ExportOptions, HfCheckpoint};
use fucina_model::peft;
use hf_common::*;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read_f32(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn reference_tokens(name: &str) -> Vec<i64> {
    let path = fixtures()
        .join("hf")
        .join(name)
        .join("reference.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("tokens")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn exports_load_in_fucina_with_transformers_logits() {
    for name in ["llama-gqa", "llama3-tied", "mistral"] {
        let dir = fixtures().join("hf-export").join(name);
        let model = HfCheckpoint::open(dir.join("model"))
            .unwrap()
            .load::<B>(&Default::default(), false)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let logits = floats(model.forward(tokens(&reference_tokens(name), 2)));
        let want = read_f32(&dir.join("transformers.safetensors"), "logits");
        assert_close(&format!("{name} export"), &logits, &want);
        // The fine-tuning must have changed the model, or this checks nothing new.
        let before = read_f32(
            &fixtures()
                .join("hf")
                .join(name)
                .join("reference.safetensors"),
            "logits",
        );
        let moved = logits
            .iter()
            .zip(&before)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            moved > 1e-2,
            "{name}: the export equals the untrained model"
        );
    }
}

#[test]
fn peft_adapter_gives_peft_logits_and_merges_into_the_exported_model() {
    let base_dir = fixtures().join("hf/llama-gqa");
    let dir = fixtures().join("hf-export/llama-gqa");
    let device = Default::default();
    let checkpoint = HfCheckpoint::open(&base_dir).unwrap();
    let base = checkpoint.load::<B>(&device, false).unwrap();
    let (adapted, spec) = peft::load_adapter(base, &dir.join("adapter"), &device).unwrap();
    assert_eq!((spec.r, spec.alpha), (4, 8.0));
    let ids = reference_tokens("llama-gqa");
    let want = read_f32(&dir.join("peft.safetensors"), "logits");
    assert_close(
        "base + adapter vs peft",
        &floats(adapted.forward(tokens(&ids, 2))),
        &want,
    );

    // Merging here and exporting reproduces the committed merged model tensor for tensor.
    let merged = adapted.merge_lora();
    assert_close(
        "merged vs peft",
        &floats(merged.forward(tokens(&ids, 2))),
        &want,
    );
    let tmp = tempfile::tempdir().unwrap();
    let options = ExportOptions {
        source: Some(checkpoint.hf_config().clone()),
        ..Default::default()
    };
    export(
        &merged,
        checkpoint.config(),
        &tmp.path().join("m"),
        &options,
    )
    .unwrap();
    let ours = HfCheckpoint::open(tmp.path().join("m"))
        .unwrap()
        .load::<B>(&device, false)
        .unwrap();
    let committed = HfCheckpoint::open(dir.join("model"))
        .unwrap()
        .load::<B>(&device, false)
        .unwrap();
    for ((a, wa), (b, wb)) in weights(&ours).iter().zip(weights(&committed).iter()) {
        assert_eq!(a, b);
        let worst = wa
            .iter()
            .zip(wb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-6, "{a}: merged weights differ by {worst}");
    }

    // And the adapter survives a save → load round trip bit for bit.
    let adapter_dir = tmp.path().join("adapter");
    let (again, _) = peft::load_adapter(
        checkpoint.load::<B>(&device, false).unwrap(),
        &dir.join("adapter"),
        &device,
    )
    .unwrap();
    peft::save_adapter(&again, &spec, "base", &adapter_dir, false).unwrap();
    let (a, b) = (
        std::fs::read(adapter_dir.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(dir.join("adapter/adapter_model.safetensors")).unwrap(),
    );
    assert!(a == b, "adapter bytes changed in a round trip");
}

#[test]
fn bad_adapters_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("hf-export/llama-gqa/adapter");
    let device = Default::default();
    let base = || {
        HfCheckpoint::open(fixtures().join("hf/llama-gqa"))
            .unwrap()
            .load::<B>(&device, false)
            .unwrap()
    };
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    let cases = [
        ("use_dora", serde_json::json!(true), "use_dora"),
        ("peft_type", serde_json::json!("IA3"), "IA3"),
        (
            "target_modules",
            serde_json::json!(["q_proj", "qkv"]),
            "qkv",
        ),
        ("r", serde_json::json!(8), "shape"),
    ];
    for (field, value, needle) in cases {
        let dir = tmp.path().join(field);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            src.join("adapter_model.safetensors"),
            dir.join("adapter_model.safetensors"),
        )
        .unwrap();
        let mut c = config.clone();
        c[field] = value;
        std::fs::write(dir.join("adapter_config.json"), c.to_string()).unwrap();
        let e = format!(
            "{:#}",
            peft::load_adapter(base(), &dir, &device).unwrap_err()
        );
        assert!(e.contains(needle), "{field}: {e}");
    }
}
