//! The tensors of a Llama-family checkpoint under Hugging Face names, in the order transformers
//! writes them, with their shapes in PyTorch's layout (a Linear weight is [out, in]).

use crate::config::LlamaConfig;

/// Which weight of `Llama` a checkpoint tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Embed,
    InputNorm(usize),
    Q(usize),
    K(usize),
    V(usize),
    O(usize),
    PostNorm(usize),
    Gate(usize),
    Up(usize),
    Down(usize),
    FinalNorm,
    Head,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub part: Part,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub(crate) const EMBED: &str = "model.embed_tokens.weight";
pub(crate) const HEAD: &str = "lm_head.weight";

/// Every tensor a checkpoint of `config` holds; a tied model has no `lm_head.weight`.
pub(crate) fn expected(config: &LlamaConfig) -> Vec<Entry> {
    let (v, h, f) = (
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
    );
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.kv_heads() * config.head_dim();
    let entry = |name: String, part, shape: &[usize]| Entry {
        name,
        part,
        shape: shape.to_vec(),
    };
    let mut out = vec![entry(EMBED.into(), Part::Embed, &[v, h])];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.extend([
            entry(
                format!("{p}.input_layernorm.weight"),
                Part::InputNorm(i),
                &[h],
            ),
            entry(format!("{p}.self_attn.q_proj.weight"), Part::Q(i), &[q, h]),
            entry(format!("{p}.self_attn.k_proj.weight"), Part::K(i), &[kv, h]),
            entry(format!("{p}.self_attn.v_proj.weight"), Part::V(i), &[kv, h]),
            entry(format!("{p}.self_attn.o_proj.weight"), Part::O(i), &[h, q]),
            entry(
                format!("{p}.post_attention_layernorm.weight"),
                Part::PostNorm(i),
                &[h],
            ),
            entry(format!("{p}.mlp.gate_proj.weight"), Part::Gate(i), &[f, h]),
            entry(format!("{p}.mlp.up_proj.weight"), Part::Up(i), &[f, h]),
            entry(format!("{p}.mlp.down_proj.weight"), Part::Down(i), &[h, f]),
        ]);
    }
    out.push(entry("model.norm.weight".into(), Part::FinalNorm, &[h]));
    if !config.tie_word_embeddings {
        out.push(entry(HEAD.into(), Part::Head, &[v, h]));
    }
    out
}

/// Buffers older checkpoints carry that are recomputed from the config, not learnt.
pub(crate) fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}
