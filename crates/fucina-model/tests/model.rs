//! The burn model against the naive reference, and the properties a decoder must have.

mod naive;

use burn::backend::Flex;
use burn::prelude::*;
use fucina_model::{Llama, LlamaConfig};

type B = Flex;

fn config(tied: bool, kv_heads: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 24,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(kv_heads),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 500.0,
        max_position_embeddings: 32,
        tie_word_embeddings: tied,
        // Large weights so that attention is far from uniform and RoPE matters.
        initializer_range: 0.3,
        rope_scaling: None,
        sliding_window: None,
    }
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

fn tokens(ids: &[usize]) -> Tensor<B, 2, Int> {
    let data: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), &Default::default())
}

fn naive_weights(model: &Llama<B>) -> naive::Weights {
    naive::Weights {
        embed: values(model.embed_tokens.weight.val()),
        layers: model
            .layers
            .iter()
            .map(|b| naive::LayerWeights {
                ln1: values(b.input_layernorm.gamma.val()),
                wq: values(b.self_attn.q_proj.weight.val()),
                wk: values(b.self_attn.k_proj.weight.val()),
                wv: values(b.self_attn.v_proj.weight.val()),
                wo: values(b.self_attn.o_proj.weight.val()),
                ln2: values(b.post_attention_layernorm.gamma.val()),
                gate: values(b.mlp.gate_proj.weight.val()),
                up: values(b.mlp.up_proj.weight.val()),
                down: values(b.mlp.down_proj.weight.val()),
            })
            .collect(),
        norm: values(model.norm.gamma.val()),
        head: model.lm_head.as_ref().map(|h| values(h.weight.val())),
    }
}

fn check_against_naive(config: LlamaConfig) {
    let device = Default::default();
    B::seed(&device, 7);
    let model = Llama::<B>::new(&config, &device);
    let shape = naive::Shape {
        vocab: config.vocab_size,
        hidden: config.hidden_size,
        heads: config.num_attention_heads,
        kv_heads: config.kv_heads(),
        head_dim: config.head_dim(),
        eps: config.rms_norm_eps,
        theta: config.rope_theta,
    };
    let ids = [3, 17, 60, 0, 42, 42, 9, 31, 5, 12, 58, 1];
    let expected = naive::forward(&naive_weights(&model), &shape, &ids);
    let got = values(model.forward(tokens(&ids)));
    let scale = expected.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(g, e)| (g - e).abs())
        .fold(0.0, f64::max);
    assert!(
        scale > 1.0,
        "logits too small to be a meaningful check: {scale}"
    );
    assert!(
        worst <= 1e-4 * scale,
        "max |Δ| {worst} against logits up to {scale}"
    );
}

#[test]
fn forward_matches_naive_reference_with_gqa() {
    check_against_naive(config(false, 2));
}

#[test]
fn forward_matches_naive_reference_multi_head_tied() {
    check_against_naive(config(true, 4));
}

#[test]
fn naive_rope_is_sensitive_to_the_pairing_convention() {
    // Guards the reference itself: rotate-half and interleaved pairing must give different results.
    let mut x: Vec<f64> = (0..8).map(|i| i as f64 + 1.0).collect();
    let original = x.clone();
    naive::rope(&mut x, 1, 1, 8, 10_000.0);
    assert_eq!(x, original, "position 0 is not rotated");
    let mut y: Vec<f64> = (0..16).map(|i| i as f64 + 1.0).collect();
    naive::rope(&mut y, 2, 1, 8, 10_000.0);
    // Position 1, pair (0, 4): angle 1 rad.
    let (a, b) = (9.0, 13.0);
    assert!((y[8] - (a * 1f64.cos() - b * 1f64.sin())).abs() < 1e-12);
    assert!((y[12] - (b * 1f64.cos() + a * 1f64.sin())).abs() < 1e-12);
}

#[test]
fn later_tokens_do_not_change_earlier_logits() {
    let device = Default::default();
    B::seed(&device, 1);
    let config = config(false, 2);
    let model = Llama::<B>::new(&config, &device);
    let a = values(model.forward(tokens(&[1, 2, 3, 4, 5, 6, 7, 8])));
    let b = values(model.forward(tokens(&[1, 2, 3, 4, 5, 50, 51, 52])));
    let v = config.vocab_size;
    for i in 0..5 * v {
        assert!(
            (a[i] - b[i]).abs() <= 1e-5,
            "logit {i} changed: {} vs {}",
            a[i],
            b[i]
        );
    }
    let changed = (5 * v..8 * v)
        .filter(|&i| (a[i] - b[i]).abs() > 1e-3)
        .count();
    assert!(changed > v, "changed tokens must change their own logits");
}

#[test]
fn parameter_count_matches_closed_form() {
    let device = Default::default();
    for cfg in [config(false, 2), config(true, 4), config(true, 1)] {
        let model = Llama::<B>::new(&cfg, &device);
        assert_eq!(model.num_params(), cfg.num_parameters(), "{cfg:?}");
    }
    let small: LlamaConfig =
        toml::from_str(fucina_model::presets::preset("small").unwrap()).unwrap();
    let millions = small.num_parameters() as f64 / 1e6;
    assert!(
        (10.0..=20.0).contains(&millions),
        "small preset has {millions}M parameters"
    );
}

#[test]
fn initial_loss_is_about_ln_vocab() {
    let device = Default::default();
    B::seed(&device, 3);
    let mut cfg = config(false, 2);
    cfg.initializer_range = 0.02;
    cfg.vocab_size = 4096;
    let model = Llama::<B>::new(&cfg, &device);
    let ids: Vec<usize> = (0..32).map(|i| (i * 131) % 4096).collect();
    let targets: Vec<usize> = ids.iter().map(|t| (t + 1) % 4096).collect();
    let loss = model
        .loss(tokens(&ids), tokens(&targets))
        .into_scalar()
        .elem::<f64>();
    let expected = (4096f64).ln();
    assert!(
        (loss - expected).abs() < 0.05,
        "initial loss {loss}, ln(vocab) {expected}"
    );
}

#[test]
fn loss_equals_mean_negative_log_softmax() {
    let device = Default::default();
    B::seed(&device, 5);
    let cfg = config(true, 2);
    let model = Llama::<B>::new(&cfg, &device);
    let (ids, targets) = ([4usize, 8, 15, 16, 23, 42], [8usize, 15, 16, 23, 42, 4]);
    let logits = values(model.forward(tokens(&ids)));
    let v = cfg.vocab_size;
    let expected: f64 = (0..ids.len())
        .map(|t| {
            let row = &logits[t * v..(t + 1) * v];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[targets[t]]
        })
        .sum::<f64>()
        / ids.len() as f64;
    let loss = model
        .loss(tokens(&ids), tokens(&targets))
        .into_scalar()
        .elem::<f64>();
    assert!(
        (loss - expected).abs() < 1e-4 * expected.abs().max(1.0),
        "{loss} vs {expected}"
    );
}
