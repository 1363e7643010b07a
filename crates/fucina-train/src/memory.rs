//! Predicted bytes per rank, for `fucina launch`'s check against a device's memory. A first-order
//! model: what autodiff keeps per token and layer, not what an allocator rounds up to.

use crate::backend::BackendKind;
use crate::config::{Precision, RunConfig};
use anyhow::Result;

#[derive(Debug, Clone, Copy)]
pub struct MemoryEstimate {
    pub parameters: u64,
    pub gradients: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// Kept for backward over one micro-batch.
    pub activations: u64,
    /// Host copies for the gradient all-reduce; on a GPU they live in host memory instead.
    pub sync_buffers: u64,
    /// Runtime, allocator slack, data and tokenizer.
    pub runtime: u64,
}

impl MemoryEstimate {
    /// On the device (for CPU backends the device is host memory).
    pub fn device_total(&self, cpu: bool) -> u64 {
        let device = self.parameters + self.gradients + self.optimizer + self.activations;
        device + self.runtime + if cpu { self.sync_buffers } else { 0 }
    }
}

pub fn estimate(config: &RunConfig) -> Result<MemoryEstimate> {
    let model = config.model_config()?;
    let bytes: u64 = match config.precision {
        Precision::F32 => 4,
        Precision::Bf16 => 2,
    };
    let params = model.num_parameters() as u64;
    // Under LoRA only the adapters have gradients, optimizer state and all-reduce buffers.
    let trainable = match &config.lora {
        Some(spec) => spec.parameters(&model) as u64,
        None => params,
    };
    let (h, i, v) = (
        model.hidden_size as u64,
        model.intermediate_size as u64,
        model.vocab_size as u64,
    );
    let kv = (model.kv_heads() * model.head_dim()) as u64;
    let heads = model.num_attention_heads as u64;
    let seq = config.data.seq_len as u64;
    // Per token and layer: norms and residuals (~14 h), k/v before and after RoPE, the SwiGLU
    // branch (gate, up, activation, product, ~5 I) and the attention scores, mask and softmax.
    let per_layer = 14 * h + 3 * kv + 5 * i + 3 * heads * seq;
    // Logits, log-softmax and their gradient dominate the head.
    let per_token = per_layer * model.num_hidden_layers as u64 + 3 * v + 3 * h;
    let tokens = config.train.micro_batch_size as u64 * seq;
    let cpu = matches!(
        config.backend,
        BackendKind::Cpu | BackendKind::Flex | BackendKind::Ndarray
    );
    Ok(MemoryEstimate {
        parameters: (params + trainable * config.lora.is_some() as u64) * bytes,
        gradients: trainable * bytes,
        optimizer: 2 * trainable * bytes,
        activations: per_token * tokens * bytes,
        sync_buffers: trainable * 4 + 2 * (config.dist.bucket_bytes() as u64).min(trainable * 4),
        runtime: if cpu { 300 << 20 } else { 1 << 30 },
    })
}
