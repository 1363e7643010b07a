//! Checkpoints whose tensors do not fit their config are refused at open, naming the tensor,
//! the file and what was expected.

mod hf_common;

use fucina_model::hf::{export, ExportOptions, HfCheckpoint};
use hf_common::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// A valid single-file checkpoint of a tiny model, in f32.
fn checkpoint(tied: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(tied);
    let out = dir.path().join("ckpt");
    export(
        &random_model(&config, 5),
        &config,
        &out,
        &ExportOptions::default(),
    )
    .unwrap();
    dir
}

fn rewrite(dir: &Path, edit: impl FnOnce(&mut Tensors)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn refused(dir: &Path) -> String {
    match HfCheckpoint::open(dir) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_names(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn missing_tensor() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    rewrite(&ckpt, |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    assert_names(
        &refused(&ckpt),
        &["model.layers.1.mlp.up_proj.weight", "missing", "[24, 16]"],
    );
}

#[test]
fn untied_config_without_a_head_hints_at_tying() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    rewrite(&ckpt, |t| {
        t.remove("lm_head.weight");
    });
    assert_names(&refused(&ckpt), &["lm_head.weight", "tie_word_embeddings"]);
}

#[test]
fn unexpected_tensor() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    rewrite(&ckpt, |t| {
        t.insert(
            "model.layers.0.self_attn.q_proj.bias".into(),
            (Dtype::F32, vec![16], vec![0; 64]),
        );
    });
    assert_names(
        &refused(&ckpt),
        &["model.layers.0.self_attn.q_proj.bias", "model.safetensors"],
    );
}

#[test]
fn misshapen_tensor() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    rewrite(&ckpt, |t| {
        // 4 KV heads' worth where the config says 2.
        t.insert(
            "model.layers.0.self_attn.k_proj.weight".into(),
            (Dtype::F32, vec![16, 16], vec![0; 16 * 16 * 4]),
        );
    });
    assert_names(
        &refused(&ckpt),
        &[
            "model.layers.0.self_attn.k_proj.weight",
            "model.safetensors",
            "[16, 16]",
            "[8, 16]",
        ],
    );
}

#[test]
fn transposed_tensor() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    rewrite(&ckpt, |t| {
        let (d, _, b) = t.remove("model.layers.1.mlp.down_proj.weight").unwrap();
        t.insert(
            "model.layers.1.mlp.down_proj.weight".into(),
            (d, vec![24, 16], b),
        );
    });
    assert_names(
        &refused(&ckpt),
        &[
            "model.layers.1.mlp.down_proj.weight",
            "[24, 16]",
            "[16, 24]",
        ],
    );
}

#[test]
fn unsupported_dtype() {
    for (dtype, size) in [(Dtype::F64, 8), (Dtype::I8, 1), (Dtype::F8_E4M3, 1)] {
        let dir = checkpoint(false);
        let ckpt = dir.path().join("ckpt");
        rewrite(&ckpt, |t| {
            t.insert(
                "model.norm.weight".into(),
                (dtype, vec![16], vec![0; 16 * size]),
            );
        });
        assert_names(
            &refused(&ckpt),
            &["model.norm.weight", &format!("{dtype:?}")],
        );
    }
}

#[test]
fn tied_checkpoint_may_ship_its_head_only_if_it_is_the_embedding() {
    let dir = checkpoint(true);
    let ckpt = dir.path().join("ckpt");
    rewrite(&ckpt, |t| {
        let embed = t["model.embed_tokens.weight"].clone();
        t.insert("lm_head.weight".into(), embed);
        // Old checkpoints also carry RoPE's frequency buffer.
        t.insert(
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            (Dtype::F32, vec![2], vec![0; 8]),
        );
    });
    HfCheckpoint::open(&ckpt)
        .unwrap()
        .load::<B>(&Default::default(), false)
        .unwrap();
    rewrite(&ckpt, |t| {
        let (d, s, mut b) = t["model.embed_tokens.weight"].clone();
        b[100] ^= 0x40;
        t.insert("lm_head.weight".into(), (d, s, b));
    });
    let e = HfCheckpoint::open(&ckpt)
        .unwrap()
        .load::<B>(&Default::default(), false)
        .unwrap_err();
    assert_names(
        &format!("{e:#}"),
        &[
            "lm_head.weight",
            "model.embed_tokens.weight",
            "tie_word_embeddings",
        ],
    );
}

#[test]
fn broken_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(false);
    let ckpt = dir.path().join("ckpt");
    let options = ExportOptions {
        max_shard_bytes: 4000,
        ..Default::default()
    };
    export(&random_model(&config, 5), &config, &ckpt, &options).unwrap();
    let index_path = ckpt.join("model.safetensors.index.json");
    let original = std::fs::read_to_string(&index_path).unwrap();
    let mut index: serde_json::Value = serde_json::from_str(&original).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    let moved = map["model.norm.weight"].as_str().unwrap().to_string();
    let other = map["model.embed_tokens.weight"].clone();
    assert_ne!(other, moved.as_str());
    map.insert("model.norm.weight".into(), other);
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_names(&refused(&ckpt), &["model.norm.weight", &moved]);

    let mut index: serde_json::Value = serde_json::from_str(&original).unwrap();
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_names(
        &refused(&ckpt),
        &["model.norm.weight", "../elsewhere.safetensors"],
    );

    let mut index: serde_json::Value = serde_json::from_str(&original).unwrap();
    index["weight_map"]["model.norm.weight"] = "model-00099-of-00099.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_names(&refused(&ckpt), &["model-00099-of-00099.safetensors"]);
}

#[test]
fn no_weights_or_pickled_weights() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    std::fs::remove_file(ckpt.join("model.safetensors")).unwrap();
    assert_names(
        &refused(&ckpt),
        &["model.safetensors", "model.safetensors.index.json"],
    );
    std::fs::write(ckpt.join("pytorch_model.bin"), b"pickle").unwrap();
    assert_names(&refused(&ckpt), &["pytorch_model.bin", "safetensors"]);
    std::fs::remove_file(ckpt.join("config.json")).unwrap();
    assert_names(&refused(&ckpt), &["config.json"]);
}

#[test]
fn truncated_file() {
    let dir = checkpoint(false);
    let ckpt = dir.path().join("ckpt");
    let path = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    assert_names(
        &refused(&ckpt),
        &["model.safetensors", "not a valid safetensors file"],
    );
}
