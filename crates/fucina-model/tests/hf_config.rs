//! config.json parsing: what is read, what is refused (by name), llama3 rope scaling by hand.

use fucina_model::config::RopeScaling;
use fucina_model::hf::{Architecture, HfConfig, HfDtype};
use fucina_model::rope::inv_freqs;
use fucina_model::LlamaConfig;
use serde_json::{json, Value};
use std::path::Path;

fn fixture_config(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
        .join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A real transformers 4 style Llama config (EuroLLM-like layout, tiny numbers).
fn llama_v4() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 4,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 160,
        "max_position_embeddings": 4096,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": null,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.2",
        "use_cache": true,
        "vocab_size": 256
    })
}

fn refused(value: Value) -> String {
    match HfConfig::from_value(value) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn with(mut value: Value, key: &str, v: Value) -> Value {
    value[key] = v;
    value
}

#[test]
fn reads_a_transformers_4_llama_config() {
    let c = HfConfig::from_value(llama_v4()).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.torch_dtype, Some(HfDtype::BF16));
    let m = &c.model;
    assert_eq!(
        (m.vocab_size, m.hidden_size, m.intermediate_size),
        (256, 64, 160)
    );
    assert_eq!(
        (m.num_hidden_layers, m.num_attention_heads, m.kv_heads()),
        (2, 4, 2)
    );
    assert_eq!((m.head_dim(), m.max_position_embeddings), (16, 4096));
    assert_eq!((m.rms_norm_eps, m.rope_theta), (1e-5, 10_000.0));
    assert_eq!((m.rope_scaling.clone(), m.sliding_window), (None, None));
    // Kept verbatim for export.
    assert_eq!(c.kept["eos_token_id"], json!(4));
    assert_eq!(c.kept["transformers_version"], json!("4.44.2"));
    assert_eq!(c.kept["pretraining_tp"], json!(1));
}

#[test]
fn missing_fields_take_transformers_class_defaults() {
    let mut v = llama_v4();
    for key in [
        "num_key_value_heads",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
    ] {
        v.as_object_mut().unwrap().remove(key);
    }
    let m = HfConfig::from_value(v).unwrap().model;
    assert_eq!(
        (m.kv_heads(), m.rms_norm_eps, m.rope_theta),
        (4, 1e-6, 10_000.0)
    );
    assert_eq!(m.max_position_embeddings, 2048);
    // Mistral's defaults differ: 8 KV heads and a 4096-token window unless it says null.
    let mut v = with(llama_v4(), "architectures", json!(["MistralForCausalLM"]));
    v["model_type"] = json!("mistral");
    for key in [
        "num_key_value_heads",
        "attention_bias",
        "mlp_bias",
        "pretraining_tp",
        "num_attention_heads",
    ] {
        v.as_object_mut().unwrap().remove(key);
    }
    v["num_attention_heads"] = json!(8);
    let m = HfConfig::from_value(v.clone()).unwrap().model;
    assert_eq!((m.kv_heads(), m.sliding_window), (8, Some(4096)));
    v["sliding_window"] = Value::Null;
    assert_eq!(HfConfig::from_value(v).unwrap().model.sliding_window, None);
}

#[test]
fn reads_llama3_scaling_in_every_layout() {
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let v4 = with(
        with(llama_v4(), "rope_theta", json!(500000.0)),
        "rope_scaling",
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    );
    // Before transformers 4.43 the key was "type".
    let old = with(
        with(llama_v4(), "rope_theta", json!(500000.0)),
        "rope_scaling",
        json!({"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    );
    let mut v5 = llama_v4();
    v5.as_object_mut().unwrap().remove("rope_theta");
    v5.as_object_mut().unwrap().remove("rope_scaling");
    v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    for v in [v4, old, v5] {
        let m = HfConfig::from_value(v).unwrap().model;
        assert_eq!(m.rope_scaling.as_ref(), Some(&scaling));
        assert_eq!(m.rope_theta, 500000.0);
    }
}

#[test]
fn llama3_frequencies_worked_by_hand() {
    // head_dim 8, θ 10⁴: frequencies 1, 0.1, 0.01, 0.001, wavelengths 2π·(1, 10, 100, 1000).
    // Original context 1000: wavelengths under 1000/4 = 250 keep their frequency, over
    // 1000/1 are slowed by 8, and 628.3 sits on the ramp: s = (1000/628.3 − 1)/(4 − 1)
    // = 0.1971831, frequency 0.01·((1 − s)/8 + s) = 0.002975352.
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 1000,
    };
    let got = inv_freqs(8, 10_000.0, Some(&scaling));
    let want = [1.0, 0.1, 0.002975352, 0.000125];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-6 * w, "{got:?}");
    }
    assert_eq!(inv_freqs(8, 10_000.0, None).len(), 4);
    let plain = inv_freqs(8, 10_000.0, None);
    for (g, w) in plain.iter().zip([1.0, 0.1, 0.01, 0.001]) {
        assert!((g - w).abs() <= 1e-12, "{plain:?}");
    }
}

#[test]
fn refusals_name_the_culprit() {
    let cases: Vec<(Value, &[&str])> = vec![
        (
            with(llama_v4(), "architectures", json!(["Qwen2ForCausalLM"])),
            &["Qwen2ForCausalLM"],
        ),
        (
            {
                let mut v = llama_v4();
                v.as_object_mut().unwrap().remove("architectures");
                with(v, "model_type", json!("gemma"))
            },
            &["gemma"],
        ),
        (
            with(llama_v4(), "model_type", json!("mistral")),
            &["model_type", "mistral"],
        ),
        (
            with(llama_v4(), "hidden_act", json!("gelu")),
            &["hidden_act", "gelu"],
        ),
        (
            with(llama_v4(), "attention_bias", json!(true)),
            &["attention_bias"],
        ),
        (with(llama_v4(), "mlp_bias", json!(true)), &["mlp_bias"]),
        (
            with(llama_v4(), "pretraining_tp", json!(2)),
            &["pretraining_tp"],
        ),
        (
            with(llama_v4(), "attention_dropout", json!(0.1)),
            &["attention_dropout"],
        ),
        (
            with(
                llama_v4(),
                "quantization_config",
                json!({"quant_method": "gptq"}),
            ),
            &["quantization_config"],
        ),
        (with(llama_v4(), "rope_magic", json!(3)), &["rope_magic"]),
        (
            with(llama_v4(), "partial_rotary_factor", json!(0.5)),
            &["partial_rotary_factor"],
        ),
        (
            {
                let mut v = llama_v4();
                v.as_object_mut().unwrap().remove("hidden_size");
                v
            },
            &["hidden_size", "missing"],
        ),
        (
            with(
                llama_v4(),
                "rope_scaling",
                json!({"rope_type": "llama3", "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
            ),
            &["factor"],
        ),
        (
            with(
                llama_v4(),
                "rope_scaling",
                json!({"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 4.0, "high_freq_factor": 4.0}),
            ),
            &["high_freq_factor"],
        ),
        (
            with(
                llama_v4(),
                "rope_parameters",
                json!({"rope_type": "default", "rope_theta": 500000.0}),
            ),
            &["rope_theta", "500000"],
        ),
        (
            with(
                with(
                    llama_v4(),
                    "rope_scaling",
                    json!({"rope_type": "llama3", "factor": 8.0,
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
                ),
                "rope_parameters",
                json!({"rope_type": "default"}),
            ),
            &["rope_scaling", "rope_parameters"],
        ),
        (
            with(llama_v4(), "num_key_value_heads", json!(3)),
            &["num_key_value_heads"],
        ),
        (with(llama_v4(), "vocab_size", json!(-1)), &["vocab_size"]),
    ];
    for rope in ["linear", "dynamic", "yarn", "longrope"] {
        let v = with(
            llama_v4(),
            "rope_scaling",
            json!({"rope_type": rope, "factor": 2.0}),
        );
        let message = refused(v);
        assert!(message.contains(rope), "{rope}: {message}");
    }
    for (value, needles) in cases {
        let message = refused(value);
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in: {message}");
        }
    }
}

#[test]
fn unknown_fields_are_listed_with_what_is_accepted() {
    let message = refused(with(
        with(llama_v4(), "num_experts", json!(8)),
        "use_sliding_window",
        json!(true),
    ));
    assert!(
        message.contains("num_experts") && message.contains("use_sliding_window"),
        "{message}"
    );
    assert!(
        message.contains("bos_token_id"),
        "lists the accepted fields: {message}"
    );
}

#[test]
fn fixture_configs_read_as_transformers_5_wrote_them() {
    let tied = HfConfig::from_value(fixture_config("llama3-tied")).unwrap();
    assert_eq!(tied.torch_dtype, Some(HfDtype::F16));
    assert!(tied.model.tie_word_embeddings);
    assert_eq!(tied.model.rope_theta, 500000.0);
    let mistral = HfConfig::from_value(fixture_config("mistral")).unwrap();
    assert_eq!(mistral.architecture, Architecture::Mistral);
    assert_eq!(
        (mistral.model.head_dim, mistral.model.sliding_window),
        (Some(32), None)
    );
}

#[test]
fn from_file_reads_hf_json_and_presets_still_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, fixture_config("llama-gqa").to_string()).unwrap();
    let m = LlamaConfig::from_file(&path).unwrap();
    assert_eq!(m.kv_heads(), 2);
    // Presets carry neither new field, and serialise without them.
    for (name, text) in fucina_model::presets::PRESETS {
        let c: LlamaConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((c.rope_scaling.clone(), c.sliding_window), (None, None));
        let back = toml::to_string(&c).unwrap();
        assert!(
            !back.contains("rope_scaling") && !back.contains("sliding_window"),
            "{back}"
        );
    }
    // A TOML model with llama3 scaling round-trips.
    let text = "vocab_size = 10\nhidden_size = 8\nintermediate_size = 8\nnum_hidden_layers = 1\n\
        num_attention_heads = 2\nmax_position_embeddings = 64\nsliding_window = 32\n\
        [rope_scaling]\nrope_type = \"llama3\"\nfactor = 8.0\nlow_freq_factor = 1.0\n\
        high_freq_factor = 4.0\noriginal_max_position_embeddings = 16\n";
    let c: LlamaConfig = toml::from_str(text).unwrap();
    c.validate().unwrap();
    assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0));
    let again: LlamaConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
    let bad = text.replace("rope_type = \"llama3\"", "rope_type = \"yarn\"");
    let e = toml::from_str::<LlamaConfig>(&bad).unwrap_err().to_string();
    assert!(e.contains("yarn"), "{e}");
}

#[test]
fn sequence_length_is_checked_against_positions_and_window() {
    let mut c = HfConfig::from_value(llama_v4()).unwrap().model;
    c.check_seq_len(4096).unwrap();
    let e = c.check_seq_len(4097).unwrap_err().to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
    c.sliding_window = Some(1024);
    c.check_seq_len(1024).unwrap();
    let e = c.check_seq_len(1025).unwrap_err().to_string();
    assert!(e.contains("sliding_window"), "{e}");
}
