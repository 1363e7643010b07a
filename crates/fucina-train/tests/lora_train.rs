//! LoRA fine-tuning of a Hugging Face checkpoint (the transformers-written fixture): the base
//! weights after training are bit-identical to the file's, the adapters moved, and the merged
//! export equals W + (alpha/r)·B·A computed here from the two files on the host. Checkpoints
//! hold only the adapters, and refuse a base other than the one trained on.

use burn::backend::Flex;
use fucina_data::ShardWriter;
use fucina_dist::SingleProcess;
use fucina_model::hf::HfCheckpoint;
use fucina_train::export::{export, ExportRequest, Exported};
use fucina_train::{train, RunConfig, TrainOptions};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type B = Flex;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/llama-gqa")
}

/// A word-level tokenizer over the fixture's 256 ids, so the data fits the model's vocab.
fn write_tokenizer(path: &Path) {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|endoftext|>".into(), 0.into());
    for i in 1..256 {
        vocab.insert(format!("w{i}"), i.into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}
    });
    std::fs::write(path, serde_json::to_string(&json).unwrap()).unwrap();
}

fn write_shard(path: &Path, n: usize, salt: u32) {
    let mut w = ShardWriter::create(path, 256, Some(0)).unwrap();
    // A learnable pattern: short repeating phrases.
    let tokens: Vec<u32> = (0..n as u32)
        .map(|i| 1 + ((i % 7) * 31 + (i / 7 % 5) * 3 + salt) % 255)
        .collect();
    w.push(&tokens).unwrap();
    w.finish().unwrap();
}

pub fn lora_run(dir: &Path, extra: &[&str]) -> RunConfig {
    std::fs::create_dir_all(dir).unwrap();
    write_tokenizer(&dir.join("tokenizer.json"));
    write_shard(&dir.join("train_000000.bin"), 4000, 0);
    write_shard(&dir.join("val_000000.bin"), 600, 3);
    let text = format!(
        r#"out_dir = "{out}"
seed = 5
[model]
hf = "{hf}"
[lora]
r = 4
alpha = 8.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
[data]
dir = ""
tokenizer = "{dir}/tokenizer.json"
train_files = ["{dir}/train_000000.bin"]
val_files = ["{dir}/val_000000.bin"]
seq_len = 16
[train]
steps = 6
global_batch_tokens = 128
micro_batch_size = 4
lr = 1e-2
weight_decay = 0.0
[eval]
every = 3
batches = 2
[checkpoint]
every = 3
keep = 0
"#,
        out = dir.join("run").display(),
        hf = fixture().display(),
        dir = dir.display(),
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml_str(&text, &extra).expect("valid LoRA test config")
}

/// Every weight of a safetensors directory (one file or shards) as f64, by name.
fn read_tensors(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Weights only: the fixtures also hold transformers' outputs.
        let outputs = ["reference.safetensors", "packed.safetensors"];
        if path.extension().is_none_or(|e| e != "safetensors")
            || outputs.iter().any(|o| path.ends_with(o))
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let values = fucina_model::hf::HfDtype::from_safetensors(view.dtype())
                .unwrap()
                .decode(view.data())
                .into_iter()
                .map(f64::from)
                .collect();
            out.insert(name.to_string(), (view.shape().to_vec(), values));
        }
    }
    out
}

#[test]
fn lora_trains_only_adapters_and_merges_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = lora_run(tmp.path(), &[]);
    let summary = train(run.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    assert_eq!(summary.steps, 6);
    assert!(
        summary.losses[5] < summary.losses[0],
        "{:?}",
        summary.losses
    );

    // The trained model's base weights against the fixture's, loaded independently.
    let device = Default::default();
    let ckpt = fucina_train::export::checkpoint_dir(&run.out_dir).unwrap();
    for (file, held) in [
        ("model.mpk", false),
        ("trainable.safetensors", true),
        ("base.json", true),
    ] {
        assert_eq!(
            ckpt.join(file).is_file(),
            held,
            "{file} in {}",
            ckpt.display()
        );
    }
    let trained =
        fucina_train::export::trained_model::<burn::backend::Autodiff<B>>(&ckpt, &run, &device)
            .unwrap();
    let base = HfCheckpoint::open(fixture())
        .unwrap()
        .load::<B>(&device, false)
        .unwrap();
    let bits = |t: burn::tensor::Tensor<B, 2>| t.into_data().into_vec::<f32>().unwrap();
    for (l, (got, want)) in trained.layers.iter().zip(&base.layers).enumerate() {
        let pairs = [
            (&got.self_attn.q_proj.weight, &want.self_attn.q_proj.weight),
            (&got.self_attn.v_proj.weight, &want.self_attn.v_proj.weight),
            (&got.mlp.down_proj.weight, &want.mlp.down_proj.weight),
        ];
        for (g, w) in pairs {
            assert_eq!(
                bits(g.val()),
                bits(w.val()),
                "layer {l}: a frozen weight moved"
            );
        }
        let b = got.self_attn.q_lora.as_ref().unwrap().lora_b.val();
        assert!(
            bits(b).iter().any(|v| *v != 0.0),
            "layer {l}: the adapter did not train"
        );
    }
    let emb = |m: &fucina_model::Llama<B>| {
        m.embed_tokens
            .weight
            .val()
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    };
    assert_eq!(emb(&trained), emb(&base));

    // Adapter and merged exports; the merge is checked from the files alone.
    let request = |out: &str, merge| ExportRequest {
        source: run.out_dir.clone(),
        out: tmp.path().join(out),
        dtype: None,
        merge,
        max_shard_bytes: 5_000_000_000,
        overwrite: false,
        progress: false,
    };
    let Exported::Adapter(adapter) = export(request("adapter", false)).unwrap() else {
        panic!("a LoRA run exports an adapter by default");
    };
    assert_eq!(adapter.tensors, 2 * 7 * 2);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["peft_type"], "LORA");
    let Exported::Model(merged) = export(request("merged", true)).unwrap() else {
        panic!("--merge exports a model");
    };
    // Tokenizer-side files travel from the imported checkpoint (this fixture has only this one).
    assert_eq!(merged.tokenizer_files, ["generation_config.json"]);

    let (base_t, lora_t, merged_t) = (
        read_tensors(&fixture()),
        read_tensors(&adapter.dir),
        read_tensors(&merged.dir),
    );
    let scale = 8.0 / 4.0;
    let mut checked = 0;
    for l in 0..2 {
        for (parent, module) in [
            ("self_attn", "q_proj"),
            ("self_attn", "o_proj"),
            ("mlp", "gate_proj"),
            ("mlp", "down_proj"),
        ] {
            let name = format!("model.layers.{l}.{parent}.{module}.weight");
            let (shape, w) = &base_t[&name];
            let (out_dim, in_dim) = (shape[0], shape[1]);
            let key =
                |m: &str| format!("base_model.model.model.layers.{l}.{parent}.{module}.{m}.weight");
            let (a_shape, a) = &lora_t[&key("lora_A")];
            let (_, b) = &lora_t[&key("lora_B")];
            let r = a_shape[0];
            let (_, got) = &merged_t[&name];
            for o in 0..out_dim {
                for i in 0..in_dim {
                    let ba: f64 = (0..r).map(|k| b[o * r + k] * a[k * in_dim + i]).sum();
                    let want = w[o * in_dim + i] + scale * ba;
                    assert!((got[o * in_dim + i] - want).abs() < 1e-5, "{name}[{o},{i}]");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
    // Untargeted weights are carried over unchanged.
    assert_eq!(
        merged_t["model.norm.weight"].1,
        base_t["model.norm.weight"].1
    );
}

#[test]
fn resuming_with_other_adapters_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = lora_run(tmp.path(), &["train.steps=3"]);
    train(run.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    let resume = || TrainOptions {
        resume: Some("auto".into()),
        ..Default::default()
    };
    let mut without = run.clone();
    without.lora = None;
    let e = format!(
        "{:#}",
        train(without, &SingleProcess, resume()).unwrap_err()
    );
    assert!(
        e.contains("trained with LoRA r = 4") && e.contains("asks for no LoRA"),
        "{e}"
    );
    let mut other = run.clone();
    other.lora.as_mut().unwrap().r = 8;
    let e = format!("{:#}", train(other, &SingleProcess, resume()).unwrap_err());
    assert!(e.contains("LoRA r = 8"), "{e}");
}

#[test]
fn resuming_or_exporting_on_another_base_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, base.join(path.file_name().unwrap())).unwrap();
    }
    let hf = format!("model.hf=\"{}\"", base.display());
    let run = lora_run(&tmp.path().join("run"), &["train.steps=3", &hf]);
    train(run.clone(), &SingleProcess, TrainOptions::default()).unwrap();

    let shard = base.join("model-00002-of-00003.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let resume = TrainOptions {
        resume: Some("auto".into()),
        ..Default::default()
    };
    let e = format!(
        "{:#}",
        train(run.clone(), &SingleProcess, resume).unwrap_err()
    );
    assert!(
        e.contains("not the base these adapters were trained on")
            && e.contains("model-00002-of-00003.safetensors has other contents"),
        "{e}"
    );
    let request = ExportRequest {
        source: run.out_dir.clone(),
        out: tmp.path().join("adapter"),
        dtype: None,
        merge: true,
        max_shard_bytes: 5_000_000_000,
        overwrite: false,
        progress: false,
    };
    let e = format!("{:#}", export(request).unwrap_err());
    assert!(e.contains("model-00002-of-00003.safetensors"), "{e}");
}
