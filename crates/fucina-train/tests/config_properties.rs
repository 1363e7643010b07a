//! Property tests of the config loader over generated inputs: random edits of a good config and
//! random `--set` overrides never panic, every refusal says something, and whatever loads keeps
//! the invariants the trainer relies on. Seeded, so a failure reproduces.

use fucina_train::RunConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GOOD: &str = r#"out_dir = "/tmp/x"
seed = 3
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
warmup_steps = 2
[eval]
every = 5
[checkpoint]
every = 5
keep = 2
[dist]
bucket_mb = 1
"#;

const KEYS: &[&str] = &[
    "seed",
    "backend",
    "precision",
    "out_dir",
    "model.preset",
    "model.hidden_size",
    "model.num_attention_heads",
    "model.num_key_value_heads",
    "model.vocab_size",
    "model.max_position_embeddings",
    "data.seq_len",
    "data.dir",
    "train.steps",
    "train.global_batch_tokens",
    "train.micro_batch_size",
    "train.lr",
    "train.min_lr",
    "train.beta1",
    "train.eps",
    "train.grad_clip",
    "train.on_nonfinite",
    "eval.every",
    "eval.batches",
    "checkpoint.keep",
    "dist.bucket_mb",
    "dist.timeout_seconds",
    "metrics.tensorboard",
    "train.nope",
];
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "3",
    "64",
    "1e-3",
    "1e309",
    "nan",
    "inf",
    "-inf",
    "\"x\"",
    "true",
    "[1, 2]",
    "{ a = 1 }",
    "99999999999999999999",
    "0.5",
    "\"bf16\"",
    "\"cuda\"",
    "\"abort\"",
    "",
];

fn check(text: &str, overrides: &[String]) {
    match RunConfig::from_toml_str(text, overrides) {
        Ok(c) => {
            let model = c.model_config().unwrap();
            assert!(c.data.seq_len > 0 && c.data.seq_len <= model.max_position_embeddings);
            assert!(c.train.global_batch_tokens.is_multiple_of(c.data.seq_len));
            assert!(c.train.micro_batch_size > 0 && c.train.lr > 0.0 && c.train.lr.is_finite());
            assert!(model.hidden_size.is_multiple_of(model.num_attention_heads));
        }
        Err(e) => assert!(!format!("{e:#}").trim().is_empty(), "an empty error"),
    }
}

#[test]
fn random_overrides_never_panic() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..3000 {
        let n = rng.random_range(1..4);
        let overrides: Vec<String> = (0..n)
            .map(|_| {
                let key = KEYS[rng.random_range(0..KEYS.len())];
                let value = VALUES[rng.random_range(0..VALUES.len())];
                format!("{key}={value}")
            })
            .collect();
        let result = std::panic::catch_unwind(|| check(GOOD, &overrides));
        assert!(result.is_ok(), "panicked on --set {overrides:?}");
    }
}

#[test]
fn random_edits_of_the_text_never_panic() {
    let mut rng = StdRng::seed_from_u64(4);
    let bytes = GOOD.as_bytes();
    for _ in 0..3000 {
        let mut text = bytes.to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..text.len());
            match rng.random_range(0..3) {
                0 => {
                    let end = (at + rng.random_range(1..12)).min(text.len());
                    text.drain(at..end);
                }
                1 => text.insert(at, b"=[]{}\"#.\n0-9ae_ "[rng.random_range(0..16)]),
                _ => text[at] = rng.random_range(b' '..=b'~'),
            }
            if text.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let result = std::panic::catch_unwind(|| check(&text, &[]));
        assert!(result.is_ok(), "panicked on:\n{text}");
    }
}
