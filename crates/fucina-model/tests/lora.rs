//! LoRA against hand computations: a fresh adapter is the identity, merging adds exactly
//! (alpha/r)·B·A (computed here on the host in f64), and only adapters receive gradients.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::prelude::*;
use fucina_model::{Llama, LlamaConfig, LoraSpec};

type B = Flex;
type A = Autodiff<Flex>;

fn config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 50,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 1000.0,
        max_position_embeddings: 16,
        tie_word_embeddings: false,
        initializer_range: 0.3,
        rope_scaling: None,
        sliding_window: None,
    }
}

fn spec(targets: &[&str]) -> LoraSpec {
    LoraSpec {
        r: 3,
        alpha: 6.0,
        dropout: 0.0,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
    }
}

fn all() -> Vec<&'static str> {
    fucina_model::lora::TARGETS.to_vec()
}

fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

fn tokens<BB: Backend>() -> Tensor<BB, 2, Int> {
    let ids: Vec<i32> = (0..2 * 9).map(|i| (i * 7 + 3) % 50).collect();
    Tensor::from_data(TensorData::new(ids, [2, 9]), &Default::default())
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Gives every B matrix non-zero values so the adapters change the model.
fn perturb(model: Llama<B>) -> Llama<B> {
    let mut model = model;
    let mut k = 0.0;
    for layer in &mut model.layers {
        let attn = &mut layer.self_attn;
        let mlp = &mut layer.mlp;
        for slot in [
            &mut attn.q_lora,
            &mut attn.k_lora,
            &mut attn.v_lora,
            &mut attn.o_lora,
            &mut mlp.gate_lora,
            &mut mlp.up_lora,
            &mut mlp.down_lora,
        ]
        .into_iter()
        .flatten()
        {
            let [r, out] = slot.lora_b.dims();
            let v: Vec<f32> = (0..r * out)
                .map(|i| (((i as f64 + k) * 0.37).sin() * 0.2) as f32)
                .collect();
            let t = Tensor::from_data(TensorData::new(v, [r, out]), &Default::default());
            slot.lora_b = Param::initialized(slot.lora_b.id, t);
            k += 1.0;
        }
    }
    model
}

#[test]
fn a_fresh_adapter_changes_nothing() {
    let device = Default::default();
    B::seed(&device, 5);
    let base = Llama::<B>::new(&config(), &device);
    let before = values(base.forward(tokens()));
    let adapted = base.with_lora(&spec(&all()), 1, &device);
    assert!(adapted.has_lora());
    let after = values(adapted.forward(tokens()));
    assert!(max_diff(&before, &after) < 1e-6);
}

#[test]
fn merged_weights_are_w_plus_scaled_b_a() {
    let device = Default::default();
    B::seed(&device, 6);
    let model = perturb(Llama::<B>::new(&config(), &device).with_lora(&spec(&all()), 2, &device));
    let adapted_logits = values(model.forward(tokens()));

    let attn = &model.layers[1].self_attn;
    let w = values(attn.v_proj.weight.val()); // [in, out]
    let lora = attn.v_lora.as_ref().unwrap();
    let (a, b) = (values(lora.lora_a.val()), values(lora.lora_b.val()));
    let [d_in, d_out] = attn.v_proj.weight.dims();
    let r = 3;
    let mut expected = w.clone();
    for i in 0..d_in {
        for o in 0..d_out {
            let ba: f64 = (0..r).map(|k| a[i * r + k] * b[k * d_out + o]).sum();
            expected[i * d_out + o] += 6.0 / 3.0 * ba;
        }
    }
    assert!(
        max_diff(&w, &expected) > 1e-3,
        "the perturbation must matter"
    );

    let merged = model.merge_lora();
    assert!(!merged.has_lora());
    let got = values(merged.layers[1].self_attn.v_proj.weight.val());
    assert!(max_diff(&got, &expected) < 1e-6);
    let merged_logits = values(merged.forward(tokens()));
    assert!(max_diff(&adapted_logits, &merged_logits) < 1e-4);
}

#[test]
fn only_adapters_get_gradients() {
    let device = Default::default();
    A::seed(&device, 7);
    let model =
        Llama::<A>::new(&config(), &device).with_lora(&spec(&["q_proj", "down_proj"]), 3, &device);
    let ids = tokens::<A>();
    let loss = model.loss(ids.clone(), ids);
    let grads = loss.backward();

    let attn = &model.layers[0].self_attn;
    let mlp = &model.layers[0].mlp;
    let q = attn.q_lora.as_ref().unwrap();
    // B starts at zero, so A's gradient is zero at step 0 but B's is not.
    assert!(q.lora_b.val().grad(&grads).is_some());
    assert!(mlp
        .down_lora
        .as_ref()
        .unwrap()
        .lora_b
        .val()
        .grad(&grads)
        .is_some());
    assert!(attn.k_lora.is_none() && mlp.up_lora.is_none());
    for frozen in [
        &attn.q_proj.weight,
        &attn.k_proj.weight,
        &mlp.down_proj.weight,
    ] {
        assert!(frozen.val().grad(&grads).is_none());
    }
    assert!(model.embed_tokens.weight.val().grad(&grads).is_none());
    assert!(model.norm.gamma.val().grad(&grads).is_none());
}

#[test]
fn adapters_are_the_same_for_the_same_seed_and_differ_otherwise() {
    let device = Default::default();
    let a = |seed| {
        B::seed(&device, 1);
        let m = Llama::<B>::new(&config(), &device).with_lora(&spec(&["o_proj"]), seed, &device);
        values(m.layers[1].self_attn.o_lora.as_ref().unwrap().lora_a.val())
    };
    assert_eq!(a(9), a(9));
    assert!(max_diff(&a(9), &a(10)) > 1e-3);
    let first = a(9);
    let bound = 1.0 / (16f64).sqrt();
    assert!(first.iter().all(|v| v.abs() <= bound));
}

#[test]
fn bad_specs_name_the_problem() {
    let mut s = spec(&["q_proj", "qkv"]);
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("\"qkv\"") && e.contains("down_proj"), "{e}");
    s.target_modules = vec![];
    assert!(s.validate().unwrap_err().to_string().contains("empty"));
    let mut s = spec(&["q_proj"]);
    s.r = 0;
    assert!(s.validate().unwrap_err().to_string().contains("lora.r"));
    let mut s = spec(&["q_proj"]);
    s.dropout = 1.0;
    assert!(s.validate().unwrap_err().to_string().contains("dropout"));
}

#[test]
fn parameter_count_matches_the_module_tree() {
    use burn::module::Module;
    let device = Default::default();
    let s = spec(&["q_proj", "v_proj", "down_proj"]);
    let base = Llama::<B>::new(&config(), &device);
    let before = base.num_params();
    let adapted = base.with_lora(&s, 1, &device);
    assert_eq!(adapted.num_params() - before, s.parameters(&config()));
    // By hand: r × (in + out) for q (16→16), v (16→8) and down (24→16), on 2 layers.
    assert_eq!(
        s.parameters(&config()),
        2 * 3 * ((16 + 16) + (16 + 8) + (24 + 16))
    );
}
