//! `fucina bench generate`: greedy generation tokens/s with and without the key/value cache, on
//! a fresh model of a preset (the weights do not change the work), measured in one run.

use crate::backend::{BackendKind, BackendTask};
use crate::generate::Decoding;
use anyhow::{bail, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use fucina_model::Llama;

pub struct GenerateBench {
    pub preset: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

/// (tokens/s with the cache, without) after a warm-up.
pub fn run(bench: GenerateBench) -> Result<(f64, f64)> {
    if bench.prompt_tokens == 0 || bench.new_tokens == 0 {
        bail!("--prompt-tokens and --tokens must be positive");
    }
    let text = format!(
        "out_dir = \"unused\"\n[model]\npreset = \"{}\"\n[data]\ndir = \"builtin\"\nseq_len = 16\n\
         [train]\nsteps = 1\nglobal_batch_tokens = 16\nmicro_batch_size = 1\nlr = 1e-3\n",
        bench.preset
    );
    let config = crate::RunConfig::from_toml_str(&text, &[])?;
    let model = config.model_config()?;
    if bench.prompt_tokens + bench.new_tokens > model.max_position_embeddings {
        bail!(
            "{} + {} tokens exceed the preset's context of {}",
            bench.prompt_tokens,
            bench.new_tokens,
            model.max_position_embeddings
        );
    }
    crate::dispatch(BackendKind::Cpu, 0, Task { bench, model })?
}

struct Task {
    bench: GenerateBench,
    model: fucina_model::LlamaConfig,
}

impl BackendTask for Task {
    type Output = Result<(f64, f64)>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(f64, f64)> {
        let model = Llama::<B>::new(&self.model, &device).valid();
        let vocab = self.model.vocab_size as u32;
        let prompt: Vec<u32> = (0..self.bench.prompt_tokens as u32)
            .map(|i| (i * 7919) % vocab)
            .collect();
        let speed = |cache: bool, new: usize| {
            let decoding = Decoding {
                max_new: new,
                temperature: 0.0,
                top_k: 0,
                repetition_penalty: 1.0,
                seed: 0,
                stops: Vec::new(),
                cache,
            };
            let started = std::time::Instant::now();
            let out = decoding.run(&model, &prompt, false, &device);
            out.len() as f64 / started.elapsed().as_secs_f64()
        };
        speed(true, 2);
        let cached = speed(true, self.bench.new_tokens);
        let recomputed = speed(false, self.bench.new_tokens);
        Ok((cached, recomputed))
    }
}
