//! Model hyper-parameters under Hugging Face `LlamaConfig` names, so a `config.json` maps one-to-one.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention; equal to `num_attention_heads` when absent (plain multi-head).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Explicit per-head width (Mistral, Llama 3.2 style); `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation (HF `initializer_range`).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Stretches RoPE to a longer context than the model was pre-trained on (Llama 3.1+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Mistral's attention window. fucina attends to the whole sequence, which is the same
    /// thing as long as no sequence is longer than the window (see `check_seq_len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
}

/// RoPE frequency scaling, under Hugging Face's `rope_scaling` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RopeScaling {
    /// Llama 3.1's: low frequencies slowed by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    pub fn validate(&self) -> Result<()> {
        match *self {
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let positive = |v: f64| v.is_finite() && v > 0.0;
                if !positive(factor) || !positive(low_freq_factor) || !positive(high_freq_factor) {
                    bail!(
                        "rope_scaling: factor, low_freq_factor and high_freq_factor must be positive"
                    );
                }
                // The ramp between the two divides by their difference.
                if high_freq_factor <= low_freq_factor {
                    bail!(
                        "rope_scaling: high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                    );
                }
                if original_max_position_embeddings == 0 {
                    bail!("rope_scaling: original_max_position_embeddings must be positive");
                }
            }
        }
        Ok(())
    }
}

fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_initializer_range() -> f64 {
    0.02
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Reads a model config from TOML (fucina's `configs/models/`) or JSON: a HF `config.json`
    /// (recognised by `architectures` or `model_type`, checked as on import) or these fields.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let config: Self = if path.extension().is_some_and(|e| e == "json") {
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("invalid model config {}", path.display()))?;
            if value.get("architectures").is_some() || value.get("model_type").is_some() {
                return Ok(crate::hf::HfConfig::from_value(value)
                    .with_context(|| format!("invalid model config {}", path.display()))?
                    .model);
            }
            serde_json::from_value(value)
                .with_context(|| format!("invalid model config {}", path.display()))?
        } else {
            toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("invalid model config {}: {e}", path.display()))?
        };
        config
            .validate()
            .with_context(|| format!("invalid model config {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("{name} must be positive");
            }
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {} (set head_dim explicitly)",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            bail!(
                "num_attention_heads {} must be a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim()
            );
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.rms_norm_eps) || !positive(self.rope_theta) {
            bail!("rms_norm_eps and rope_theta must be positive");
        }
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate()?;
        }
        if self.sliding_window == Some(0) {
            bail!("sliding_window must be positive (or absent)");
        }
        Ok(())
    }

    /// Refuses sequences the model cannot treat as Hugging Face does: beyond the rotary table,
    /// or beyond a sliding window, where HF would stop attending to early tokens and fucina
    /// (which has no windowed attention) would not.
    pub fn check_seq_len(&self, seq_len: usize) -> Result<()> {
        if seq_len > self.max_position_embeddings {
            bail!(
                "sequence length {seq_len} exceeds the model's max_position_embeddings {}",
                self.max_position_embeddings
            );
        }
        if let Some(window) = self.sliding_window {
            if seq_len > window {
                bail!(
                    "sequence length {seq_len} exceeds the model's sliding_window {window}: fucina has no windowed attention, so it would attend further back than the model was trained to"
                );
            }
        }
        Ok(())
    }

    fn per_layer_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim();
        let kv = self.kv_heads() * self.head_dim();
        let attention = h * q + 2 * h * kv + q * h;
        attention + 3 * h * self.intermediate_size + 2 * h
    }

    /// Closed-form parameter count, independent of the module tree (tests compare the two).
    pub fn num_parameters(&self) -> usize {
        let (h, v) = (self.hidden_size, self.vocab_size);
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * self.per_layer_parameters() + h + head
    }

    /// Training FLOPs per token: 6 × the parameters a token is multiplied with (the embedding
    /// lookup is free, the LM head is not, tied or not) + attention scores (PaLM, appendix B).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let matmul_params = self.num_hidden_layers * self.per_layer_parameters()
            + self.vocab_size * self.hidden_size;
        let attention =
            12 * self.num_hidden_layers * seq_len * self.num_attention_heads * self.head_dim();
        6.0 * matmul_params as f64 + attention as f64
    }
}
