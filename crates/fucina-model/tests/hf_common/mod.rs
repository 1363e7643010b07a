//! Shared helpers of the Hugging Face import/export tests.
#![allow(dead_code)]

use burn::backend::Flex;
use burn::prelude::*;
use fucina_model::{Llama, LlamaConfig};

pub type B = Flex;

/// A model small enough to write and read in milliseconds, with GQA.
pub fn tiny(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: tied,
        initializer_range: 0.3,
        rope_scaling: None,
        sliding_window: None,
    }
}

pub fn random_model(config: &LlamaConfig, seed: u64) -> Llama<B> {
    let device = Default::default();
    B::seed(&device, seed);
    let mut model = Llama::<B>::new(config, &device);
    // Norm weights start at one; make them differ so a swapped norm shows.
    let jitter = |n: usize| {
        Tensor::<B, 1>::random([n], burn::tensor::Distribution::Uniform(0.5, 1.5), &device)
    };
    let h = config.hidden_size;
    model.norm.gamma = burn::module::Param::from_tensor(jitter(h));
    for layer in &mut model.layers {
        layer.input_layernorm.gamma = burn::module::Param::from_tensor(jitter(h));
        layer.post_attention_layernorm.gamma = burn::module::Param::from_tensor(jitter(h));
    }
    model
}

pub fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Every weight under its Hugging Face name, in burn's layout.
pub fn weights(model: &Llama<B>) -> Vec<(String, Vec<f32>)> {
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        floats(model.embed_tokens.weight.val()),
    )];
    for (i, l) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let (a, m) = (&l.self_attn, &l.mlp);
        out.extend([
            (
                format!("{p}.input_layernorm.weight"),
                floats(l.input_layernorm.gamma.val()),
            ),
            (
                format!("{p}.self_attn.q_proj.weight"),
                floats(a.q_proj.weight.val()),
            ),
            (
                format!("{p}.self_attn.k_proj.weight"),
                floats(a.k_proj.weight.val()),
            ),
            (
                format!("{p}.self_attn.v_proj.weight"),
                floats(a.v_proj.weight.val()),
            ),
            (
                format!("{p}.self_attn.o_proj.weight"),
                floats(a.o_proj.weight.val()),
            ),
            (
                format!("{p}.post_attention_layernorm.weight"),
                floats(l.post_attention_layernorm.gamma.val()),
            ),
            (
                format!("{p}.mlp.gate_proj.weight"),
                floats(m.gate_proj.weight.val()),
            ),
            (
                format!("{p}.mlp.up_proj.weight"),
                floats(m.up_proj.weight.val()),
            ),
            (
                format!("{p}.mlp.down_proj.weight"),
                floats(m.down_proj.weight.val()),
            ),
        ]);
    }
    out.push((
        "model.norm.weight".to_string(),
        floats(model.norm.gamma.val()),
    ));
    if let Some(head) = &model.lm_head {
        out.push(("lm_head.weight".to_string(), floats(head.weight.val())));
    }
    out
}

pub fn tokens(ids: &[i64], rows: usize) -> Tensor<B, 2, Int> {
    let cols = ids.len() / rows;
    let data: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), &Default::default())
}

/// max|a−b| / max|b| within 1e-4, and each element within 1e-4 of its own size plus a floor
/// of 1e-5 · max|b|: f32 rounding is absolute, so near-zero logits err as much as large ones.
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 1.0, "{what}: reference too small to test ({scale})");
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max |Δ| {worst} against values up to {scale}"
    );
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (b.abs() + 0.1 * scale),
            "{what}[{i}]: {a} vs {b}"
        );
    }
    eprintln!(
        "{what}: max |Δ| {worst:.2e}, relative {:.2e}",
        worst / scale
    );
}
