//! Predicted bytes per rank, for `fucina launch`'s check against a device's memory. A first-order
//! model: what autodiff keeps per token and layer, not what an allocator rounds up to.

use crate::backend::BackendKind;
use crate::checkpoint::WeightsFormat;
use crate::config::{Checkpointing, Precision, RunConfig};
use crate::threads::cpu_parts;
use anyhow::Result;

#[derive(Debug, Clone, Copy)]
pub struct MemoryEstimate {
    /// The weights the forward and backward use (bf16 in mixed precision).
    pub parameters: u64,
    /// Mixed precision's f32 master weights; with `[dist] shard_optimizer`, this rank's 1/N of
    /// them, in host memory beside the moments.
    pub masters: u64,
    /// The step's gradients; with block checkpointing and accumulation, also the micro-batch's
    /// own while the sum of the earlier ones is held.
    pub gradients: u64,
    /// The f32 gradients of half-precision runs: the sum over micro-batches (and CPU parts),
    /// or, replicated in mixed precision, the averaged gradients handed to the f32 optimizer.
    pub f32_gradients: u64,
    /// AdamW's two moments; with `[dist] shard_optimizer`, this rank's 1/N of them, in f32
    /// host memory.
    pub optimizer: u64,
    /// The moments live in host memory (sharded), not on the device.
    pub optimizer_on_host: bool,
    /// Kept for backward over one micro-batch (with `activation_checkpointing = "block"`, the
    /// blocks' inputs and one graph at a time), beyond what the gradients reuse.
    pub activations: u64,
    /// Host copies for the gradient all-reduce; on a GPU they live in host memory instead.
    pub sync_buffers: u64,
    /// Runtime, allocator slack, data and tokenizer.
    pub runtime: u64,
    /// Host memory of a checkpoint while it is copied and written: the serialised weights
    /// (or adapters) and moments this rank saves, with the serialiser's buffers. Taken at a
    /// step's end, after the activations and gradients are freed.
    pub checkpoint: u64,
}

impl MemoryEstimate {
    /// On the device (for CPU backends the device is host memory).
    pub fn device_total(&self, cpu: bool) -> u64 {
        // Between steps the weights, masters, moments and runtime stay.
        let kept = self.parameters + self.masters + self.optimizer + self.runtime;
        let training = self.training_total(cpu);
        match cpu {
            // The checkpoint's copy lives in host memory, which is the device here.
            true => training.max(kept + self.checkpoint),
            false => training,
        }
    }

    /// As `device_total` during a step, without a checkpoint's copy.
    pub fn training_total(&self, cpu: bool) -> u64 {
        let (on_device, on_host) = match self.optimizer_on_host {
            true => (0, self.optimizer + self.masters),
            false => (self.optimizer + self.masters, 0),
        };
        let device = self.parameters + on_device + self.gradients + self.f32_gradients;
        let device = device + self.activations + self.runtime;
        device + if cpu { self.sync_buffers + on_host } else { 0 }
    }
}

/// Per rank of a job of `world_size` ranks.
pub fn estimate(config: &RunConfig, world_size: usize) -> Result<MemoryEstimate> {
    let model = config.model_config()?;
    // Bytes per value of the weights, gradients and activations (the compute dtype), and of
    // replicated AdamW moments.
    let (bytes, moment_bytes): (u64, u64) = match config.precision {
        Precision::F32 | Precision::Bf16 => (config.precision.compute_dtype().size() as u64, 4),
        Precision::Bf16Pure => (2, 2),
    };
    // Softmax probabilities and the loss's log-softmax are f32 whatever the compute dtype.
    let f32_share = 4u64.div_ceil(bytes);
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
    let cpu = matches!(
        config.backend,
        BackendKind::Cpu | BackendKind::Flex | BackendKind::Ndarray
    );
    // Flex runs attention, SwiGLU, RMSNorm and the loss as fused kernels (fucina_model::fused)
    // that keep only their inputs and the attention probabilities for the backward pass.
    let fused = config.backend == BackendKind::Flex
        || (config.backend == BackendKind::Cpu && cfg!(feature = "flex"));
    // On the cubecl backends attention is the flash kernels (fucina_model::fused::flash),
    // which keep one f32 logsumexp per head and token for the backward and no scores; the
    // composed attention elsewhere keeps two rows of seq scores per head and token.
    let flash = matches!(
        config.backend,
        BackendKind::Wgpu | BackendKind::Cuda | BackendKind::Rocm
    ) && model.head_dim() <= 256
        && fucina_model::fused::flash_enabled()
        && fucina_model::fused::flash_within_loop_limit(
            seq as usize,
            model.head_dim(),
            config.backend == BackendKind::Wgpu,
        );
    let scores = match flash {
        true => f32_share * heads,
        false => 2 * f32_share * heads * seq,
    };
    let (per_layer, head) = match fused {
        // Per token and layer: the two norms' inputs and outputs (4 h), q, k, v and the
        // attention output (2 h + 2 kv), gate, up and their product (3 I), one probability per
        // head and key. The head keeps its norm's input and output and the logits.
        true => (
            6 * h + 2 * kv + 3 * i + f32_share * heads * seq,
            f32_share * v + 2 * h,
        ),
        // Norms and residuals (~14 h), k/v before and after RoPE, the SwiGLU branch (gate,
        // up, activation, product, ~5 I) and attention's `scores`; at the head, logits,
        // log-softmax and their gradient.
        false => (14 * h + 3 * kv + 5 * i + scores, 3 * f32_share * v + 3 * h),
    };
    let rows = config.train.micro_batch_size;
    // A CPU rank trains a micro-batch in parts, as many at once as it has threads (this
    // process's pool: the check runs where the run will); a GPU takes it whole.
    let (in_flight, sequential_parts) = match cpu {
        true => {
            let parts = cpu_parts(rows, config.data.seq_len);
            let threads = rayon::current_num_threads();
            (rows.div_ceil(parts) * parts.min(threads), parts > threads)
        }
        false => (rows, false),
    };
    let tokens = in_flight.min(rows) as u64 * seq;
    // The head and the loss hold the logits of one chunk of rows at a time in each part in
    // flight (crate::head): the logits' share of the head counts only those tokens.
    let parts_in_flight = match cpu {
        true => cpu_parts(rows, config.data.seq_len).min(rayon::current_num_threads()),
        false => 1,
    } as u64;
    let chunk = crate::head::chunk_rows(
        v as usize,
        crate::threads::Memory::of(&config.train).logits_chunk_bytes,
    ) as u64;
    let logits_tokens = chunk.saturating_mul(parts_in_flight).min(tokens.max(1));
    let logits = f32_share * v * if fused { 1 } else { 3 };
    let head = head - logits + (logits * logits_tokens).div_ceil(tokens.max(1));
    let layers = model.num_hidden_layers as u64;
    // The fused loss's gradient, one more logits-sized buffer, is made while every layer's
    // activations are still held: the peak of a run without checkpointing. (The composed head
    // counts it above; under block checkpointing the head runs beside the blocks' inputs only.)
    let logits_grad = match fused {
        true => (f32_share * v * logits_tokens).div_ceil(tokens.max(1)),
        false => 0,
    };
    let per_token = match config.train.activation_checkpointing {
        Checkpointing::None => per_layer * layers + head + logits_grad,
        // Each block's input and the gradient coming back through the blocks (f32, the
        // residual stream), and one graph at a time: the head's, then one recomputed block's
        // (see `checkpointing`).
        Checkpointing::Block => f32_share * (layers * h + h) + per_layer.max(head),
    };
    let grads = trainable * bytes;
    // Gradients of earlier micro-batches or parts are held while the next one runs.
    let accum = config.global_batch_seqs() / (world_size.max(1) * rows).max(1);
    // (The sharded optimizer sums micro-batches on the host: only a CPU's parts are held.)
    let held = (accum > 1 && !config.dist.shard_optimizer) || sequential_parts;
    let activations = per_token * tokens * bytes;
    let (gradients, activations) = match config.train.activation_checkpointing {
        // The gradients appear as the activations are freed: alone, they peak together at the
        // larger of the two (measured: the `mid` model of tests/memory_model.rs).
        Checkpointing::None if !held => (grads, activations.saturating_sub(grads)),
        Checkpointing::None => (grads, activations),
        // The micro-batch's gradients build up while only one block's graph is alive, on top
        // of the held sum.
        Checkpointing::Block => (grads * (1 + held as u64), activations),
    };
    let sharded = config.dist.shard_optimizer;
    let block = trainable.div_ceil(world_size.max(1) as u64);
    let optimizer = match sharded {
        // Each rank's block, padding included, of f32 moments.
        true => 2 * block * 4,
        false => 2 * trainable * moment_bytes,
    };
    let masters = match (config.precision.keeps_masters(), sharded) {
        (false, _) => 0,
        (true, true) => block * 4,
        (true, false) => trainable * 4,
    };
    // Gradients summed on the device: the parts of a CPU micro-batch, and the micro-batches
    // of a step unless the sharded optimizer sums them on the host.
    let parts = match cpu {
        true => cpu_parts(rows, config.data.seq_len),
        false => 1,
    };
    let contributions = match sharded {
        true => parts,
        false => parts * accumulation_steps(config, world_size),
    };
    let f32_gradients = match (bytes, contributions > 1 || masters > 0 && !sharded) {
        (2, true) => trainable * 4,
        _ => 0,
    };
    // What this rank saves: weights in f32 (all of them gathered on rank 0, or only what
    // trains), f32 moments (flat when sharded or adapter-only, else burn's record at their
    // dtype). Serialising holds a second copy of each tensor's data while the bytes grow:
    // measured ~1.5 times the saved bytes above the steady state (`small`, gpt2-124m).
    let all = params + trainable * config.lora.is_some() as u64;
    let (weights_saved, moments_saved) = match (config.weights_format()?, sharded) {
        (WeightsFormat::Record, true) => (all * 4, 2 * block * 4),
        (WeightsFormat::Record, false) => (all * 4, 2 * trainable * moment_bytes),
        (WeightsFormat::Trainable, true) => (block * 4, 2 * block * 4),
        (WeightsFormat::Trainable, false) => (trainable * 4, 2 * trainable * 4),
    };
    let checkpoint = (weights_saved + moments_saved) * 3 / 2;
    Ok(MemoryEstimate {
        checkpoint,
        parameters: (params + trainable * config.lora.is_some() as u64) * bytes,
        masters,
        gradients,
        f32_gradients,
        optimizer,
        optimizer_on_host: sharded,
        activations,
        // One replicated process keeps its gradients where they are (crate::grads).
        sync_buffers: match world_size <= 1 && !sharded {
            true => 0,
            false => trainable * 4 + 2 * (config.dist.bucket_bytes() as u64).min(trainable * 4),
        },
        // Measured on CPU: a `tiny` run peaks at ~71 MiB resident (binary, corpus, tokenizer,
        // thread stacks); a GPU process adds its runtime's context.
        runtime: if cpu { 64 << 20 } else { 1 << 30 },
    })
}

/// Micro-batches per optimizer step on each rank.
fn accumulation_steps(config: &RunConfig, world_size: usize) -> usize {
    let per_rank = config.global_batch_seqs() / world_size.max(1);
    per_rank
        .div_ceil(config.train.micro_batch_size.max(1))
        .max(1)
}

#[cfg(test)]
mod tests {
    use crate::RunConfig;

    fn config(shard: bool) -> RunConfig {
        let text = format!(
            "out_dir = \"x\"\n[model]\npreset = \"tiny\"\n[data]\ndir = \"builtin\"\nseq_len = 32\n\
             [train]\nsteps = 1\nglobal_batch_tokens = 64\nmicro_batch_size = 1\nlr = 1e-3\n\
             [dist]\nshard_optimizer = {shard}\n"
        );
        RunConfig::from_toml_str(&text, &[]).unwrap()
    }

    #[test]
    fn chunked_logits_count_one_chunk_of_a_large_vocabulary() {
        let text = |chunk_mb: f64| {
            format!(
                "out_dir = \"x\"\n[model]\npreset = \"tiny\"\nvocab_size = 128256\nmax_position_embeddings = 1024\n[data]\n\
                 dir = \"builtin\"\nseq_len = 1024\n[train]\nsteps = 1\n\
                 global_batch_tokens = 4096\nmicro_batch_size = 4\nlr = 1e-3\n\
                 logits_chunk_mb = {chunk_mb}\n"
            )
        };
        let activations = |chunk_mb| {
            let config = RunConfig::from_toml_str(&text(chunk_mb), &[]).unwrap();
            super::estimate(&config, 1).unwrap().activations
        };
        let (whole, chunked) = (activations(0.0), activations(64.0));
        // Each part in flight (one thread's 1,024 tokens at least) has 0.5 GiB of f32 logits;
        // in chunks it holds 64 MiB of them.
        assert!(whole > 512 << 20, "{whole}");
        assert!(chunked < whole / 4, "{chunked} vs {whole}");
    }

    #[test]
    fn sharding_divides_the_optimizer_state_by_the_ranks() {
        let params = config(false).model_config().unwrap().num_parameters() as u64;
        let replicated = super::estimate(&config(false), 4).unwrap();
        assert_eq!(replicated.optimizer, 2 * params * 4);
        let sharded = super::estimate(&config(true), 4).unwrap();
        assert_eq!(sharded.optimizer, 2 * params.div_ceil(4) * 4);
        // On a GPU the sharded moments leave the device for host memory.
        let gpu_saving = replicated.device_total(false) - sharded.device_total(false);
        assert_eq!(gpu_saving, replicated.optimizer);
        let cpu_saving = replicated.training_total(true) - sharded.training_total(true);
        assert_eq!(cpu_saving, replicated.optimizer - sharded.optimizer);
        // A checkpoint copies this rank's moments only (1.5 times their bytes while
        // serialising), beside the weights rank 0 gathers either way.
        let copy_saving = replicated.checkpoint - sharded.checkpoint;
        let moments = replicated.optimizer - sharded.optimizer;
        assert!(
            copy_saving.abs_diff(moments * 3 / 2) <= 1,
            "{copy_saving} vs {moments}"
        );
    }
}
