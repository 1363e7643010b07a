//! LoRA adapters (Hu et al., 2021) in PEFT's conventions, so adapters trained here load in
//! `peft` unchanged: `y = W x + (alpha / r) · B A dropout(x)`, A initialised like PEFT's
//! `kaiming_uniform_(a=√5)` (uniform ±1/√in) and B zero, so a fresh adapter changes nothing.

use crate::model::Llama;
use anyhow::{bail, Result};
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The projections an adapter can wrap, under PEFT's `target_modules` names.
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank of the update B·A.
    pub r: usize,
    /// The update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    #[serde(default)]
    pub dropout: f64,
    /// Which projections get an adapter (PEFT names: q_proj … down_proj).
    pub target_modules: Vec<String>,
}

impl LoraSpec {
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            bail!("lora.r must be positive");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("lora.alpha must be a positive number, got {}", self.alpha);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora.dropout must be in [0, 1), got {}", self.dropout);
        }
        if self.target_modules.is_empty() {
            bail!(
                "lora.target_modules is empty; name some of {}",
                TARGETS.join(", ")
            );
        }
        for t in &self.target_modules {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "lora.target_modules: unknown module {t:?}; the Llama-family projections are {}",
                    TARGETS.join(", ")
                );
            }
        }
        Ok(())
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Adapter parameters on a model of shape `config`: r × (in + out) per wrapped projection.
    pub fn parameters(&self, config: &crate::LlamaConfig) -> usize {
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let (q, kv) = (
            config.num_attention_heads * config.head_dim(),
            config.kv_heads() * config.head_dim(),
        );
        let dims = [
            ("q_proj", h, q),
            ("k_proj", h, kv),
            ("v_proj", h, kv),
            ("o_proj", q, h),
            ("gate_proj", h, f),
            ("up_proj", h, f),
            ("down_proj", f, h),
        ];
        let per_layer: usize = dims
            .iter()
            .filter(|(name, _, _)| self.targets(name))
            .map(|(_, d_in, d_out)| self.r * (d_in + d_out))
            .sum();
        per_layer * config.num_hidden_layers
    }

    pub fn targets(&self, name: &str) -> bool {
        self.target_modules.iter().any(|t| t == name)
    }
}

#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// PEFT's `lora_A.weight` transposed: [in, r].
    pub lora_a: Param<Tensor<B, 2>>,
    /// PEFT's `lora_B.weight` transposed: [r, out].
    pub lora_b: Param<Tensor<B, 2>>,
    dropout: Dropout,
    scale: f64,
}

impl<B: Backend> Lora<B> {
    /// A is drawn on the host from `seed`, so every rank and every backend starts from the
    /// same adapter without a broadcast.
    pub fn new(d_in: usize, d_out: usize, spec: &LoraSpec, seed: u64, device: &B::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let values: Vec<f32> = (0..d_in * spec.r)
            .map(|i| ((2.0 * unit(seed, i as u64) - 1.0) * bound) as f32)
            .collect();
        let a = Tensor::from_data(TensorData::new(values, [d_in, spec.r]), device);
        Self {
            lora_a: Param::from_tensor(a),
            lora_b: Initializer::Zeros.init([spec.r, d_out], device),
            dropout: DropoutConfig::new(spec.dropout).init(),
            scale: spec.scale(),
        }
    }

    /// The adapter's contribution for `x`: [..., in] → [..., out].
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let a = self.lora_a.val().unsqueeze::<D>();
        let b = self.lora_b.val().unsqueeze::<D>();
        self.dropout
            .forward(x)
            .matmul(a)
            .matmul(b)
            .mul_scalar(self.scale)
    }

    /// `scale · A·B` in burn's [in, out] layout: what merging adds to the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale)
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }
}

/// A uniform draw in [0, 1) for index `i` of stream `seed` (splitmix64: stateless, so the
/// value at any index is known without generating the ones before).
fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed
        .wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix(x: u64) -> u64 {
    (unit(x, 0) * (1u64 << 53) as f64) as u64
}

/// `base(x)`, plus the adapter's update when there is one.
pub fn project<B: Backend>(
    base: &Linear<B>,
    lora: &Option<Lora<B>>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    // One [batch·seq, in] gemm: a [batch, seq, in] input would be a batch of gemms that
    // repack the weight per row and, backwards, sum per-row weight gradients in a pass of
    // their own.
    let [batch, seq, d_in] = x.dims();
    let x = x.reshape([batch * seq, d_in]);
    let y = match lora {
        Some(adapter) => base.forward(x.clone()) + adapter.forward(x),
        None => base.forward(x),
    };
    let d_out = y.dims()[1];
    y.reshape([batch, seq, d_out])
}

fn adapter<B: Backend>(
    base: &Linear<B>,
    spec: &LoraSpec,
    seed: u64,
    device: &B::Device,
) -> Option<Lora<B>> {
    let [d_in, d_out] = base.weight.dims();
    Some(Lora::new(d_in, d_out, spec, seed, device))
}

fn merged<B: Backend>(base: Linear<B>, lora: Option<Lora<B>>) -> Linear<B> {
    match lora {
        Some(adapter) => {
            let mut base = base;
            let weight = base.weight.val() + adapter.delta();
            base.weight = Param::initialized(base.weight.id, weight);
            base
        }
        None => base,
    }
}

impl<B: Backend> Llama<B> {
    /// Freezes every base weight and wraps the projections `spec` names with fresh adapters,
    /// which are then the only trainable parameters.
    pub fn with_lora(self, spec: &LoraSpec, seed: u64, device: &B::Device) -> Self {
        let mut model = self.no_grad();
        for (l, layer) in model.layers.iter_mut().enumerate() {
            let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
            let slots = [
                ("q_proj", &attn.q_proj, &mut attn.q_lora),
                ("k_proj", &attn.k_proj, &mut attn.k_lora),
                ("v_proj", &attn.v_proj, &mut attn.v_lora),
                ("o_proj", &attn.o_proj, &mut attn.o_lora),
                ("gate_proj", &mlp.gate_proj, &mut mlp.gate_lora),
                ("up_proj", &mlp.up_proj, &mut mlp.up_lora),
                ("down_proj", &mlp.down_proj, &mut mlp.down_lora),
            ];
            for (t, (name, base, slot)) in slots.into_iter().enumerate() {
                if spec.targets(name) {
                    let stream = splitmix(seed ^ splitmix((l * TARGETS.len() + t) as u64));
                    *slot = adapter(base, spec, stream, device);
                }
            }
        }
        model
    }

    pub fn has_lora(&self) -> bool {
        self.layers.iter().any(|l| {
            let (a, m) = (&l.self_attn, &l.mlp);
            [&a.q_lora, &a.k_lora, &a.v_lora, &a.o_lora]
                .into_iter()
                .chain([&m.gate_lora, &m.up_lora, &m.down_lora])
                .any(Option::is_some)
        })
    }

    /// Folds every adapter into its base weight (W + scale·A·B) and drops the adapters: a
    /// plain model that any Llama loader reads.
    pub fn merge_lora(mut self) -> Self {
        for layer in &mut self.layers {
            let attn = &mut layer.self_attn;
            attn.q_proj = merged(attn.q_proj.clone(), attn.q_lora.take());
            attn.k_proj = merged(attn.k_proj.clone(), attn.k_lora.take());
            attn.v_proj = merged(attn.v_proj.clone(), attn.v_lora.take());
            attn.o_proj = merged(attn.o_proj.clone(), attn.o_lora.take());
            let mlp = &mut layer.mlp;
            mlp.gate_proj = merged(mlp.gate_proj.clone(), mlp.gate_lora.take());
            mlp.up_proj = merged(mlp.up_proj.clone(), mlp.up_lora.take());
            mlp.down_proj = merged(mlp.down_proj.clone(), mlp.down_lora.take());
        }
        self
    }
}
