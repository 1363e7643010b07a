//! Bad run configs fail with a message naming the key and what was expected.

use fucina_train::RunConfig;

const GOOD: &str = r#"
out_dir = "/tmp/x"
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 10
global_batch_tokens = 256
micro_batch_size = 2
lr = 1e-3
"#;

fn error(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    format!(
        "{:#}",
        RunConfig::from_toml_str(text, &overrides).unwrap_err()
    )
}

#[test]
fn good_config_loads_with_defaults() {
    let config = RunConfig::from_toml_str(GOOD, &[]).unwrap();
    assert_eq!(config.train.beta2, 0.95);
    assert_eq!(config.train.eps, 1e-8);
    assert_eq!(config.model_config().unwrap().hidden_size, 32);
}

#[test]
fn errors_name_the_key() {
    let cases: &[(&[&str], &str)] = &[
        (&["train.lr_max=1"], "lr_max"),
        (&["train.lr=\"fast\""], "train.lr"),
        (&["train.steps=-3"], "train.steps"),
        (&["backend=\"tpu\""], "tpu"),
        (&["model.hidden_size=30"], "num_attention_heads"),
        (&["model.preset=\"llama-99b\""], "llama-99b"),
        (&["model.hidden_sise=64"], "hidden_sise"),
        (
            &["data.seq_len=512", "train.global_batch_tokens=1024"],
            "max_position_embeddings",
        ),
        (
            &["train.global_batch_tokens=100"],
            "multiple of data.seq_len",
        ),
        (&["train.min_lr=1"], "train.min_lr"),
        (&["train.beta1=1.5"], "train.beta1"),
        (&["train.lr=0"], "train.lr"),
        (&["nonsense"], "key=value"),
    ];
    for (overrides, needle) in cases {
        let message = error(GOOD, overrides);
        assert!(
            message.contains(needle),
            "{overrides:?}: {message:?} does not mention {needle:?}"
        );
    }
    assert!(error("out_dir = 3", &[]).contains("out_dir"));
    assert!(error("[train\nsteps=1", &[]).contains("line"));
}

#[test]
fn overrides_parse_toml_values() {
    let config =
        RunConfig::from_toml_str(GOOD, &["train.lr=3e-4".into(), "out_dir=runs/a b".into()])
            .unwrap();
    assert_eq!(config.train.lr, 3e-4);
    assert_eq!(config.out_dir.to_str(), Some("runs/a b"));
}

#[test]
fn sections_take_defaults_for_missing_keys() {
    let text = format!("{GOOD}\n[checkpoint]\nevery = 3\n[eval]\nbatches = 2\n");
    let config = RunConfig::from_toml_str(&text, &[]).unwrap();
    assert_eq!((config.checkpoint.every, config.checkpoint.keep), (3, 3));
    assert_eq!((config.eval.every, config.eval.batches), (50, 2));
}

#[test]
fn tensorboard_is_on_by_default_and_survives_a_round_trip() {
    assert!(
        RunConfig::from_toml_str(GOOD, &[])
            .unwrap()
            .metrics
            .tensorboard
    );
    let off = RunConfig::from_toml_str(GOOD, &["metrics.tensorboard=false".into()]).unwrap();
    assert!(!off.metrics.tensorboard);
    let again = RunConfig::from_toml_str(&off.to_toml(), &[]).unwrap();
    assert!(!again.metrics.tensorboard);
    assert!(error(GOOD, &["metrics.tensorbord=true"]).contains("tensorbord"));
}

#[test]
fn bf16_needs_a_backend_with_bf16_tensors() {
    for precision in ["bf16", "bf16-pure"] {
        let set = format!("precision={precision}");
        let err = error(GOOD, &["backend=wgpu", &set]);
        assert!(err.contains("(WGSL) has no bf16"), "{err}");
        let err = error(GOOD, &["backend=ndarray", &set]);
        assert!(err.contains("NdArray backend has no bf16"), "{err}");
        for backend in ["cuda", "rocm", "flex"] {
            let overrides = [format!("backend={backend}"), set.clone()];
            let config = RunConfig::from_toml_str(GOOD, &overrides).unwrap();
            assert_eq!(config.precision.name(), precision);
        }
    }
    let err = error(GOOD, &["precision=fp8"]);
    assert!(err.contains("precision"), "{err}");
}

#[test]
fn languages_choose_from_the_builtin_corpus_only() {
    let config =
        RunConfig::from_toml_str(GOOD, &["data.languages=[\"it\",\"en\"]".into()]).unwrap();
    assert_eq!(config.data.builtin_subdir(), "builtin-en-it");
    let all = RunConfig::from_toml_str(GOOD, &[]).unwrap();
    assert_eq!(all.data.builtin_subdir(), "builtin");
    let unknown = error(GOOD, &["data.languages=[\"en\",\"xx\"]"]);
    assert!(
        unknown.contains("\"xx\"") && unknown.contains("en, "),
        "{unknown}"
    );
    let twice = error(GOOD, &["data.languages=[\"en\",\"en\"]"]);
    assert!(twice.contains("twice"), "{twice}");
    let own = error(GOOD, &["data.dir=\"my/data\"", "data.languages=[\"en\"]"]);
    assert!(own.contains("data.dir = \"builtin\""), "{own}");
}
