//! Sampling text from a model: temperature and top-k, seeded so a sample can be reproduced.

use crate::chat_prompt::ChatPrompt;
pub use crate::chat_prompt::ChatRequest;
use anyhow::{bail, Result};
use burn::prelude::*;
use fucina_data::TextTokenizer;
use fucina_model::{KvCache, Llama};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Continues `prompt` by up to `max_new` tokens, stopping at end-of-text. An empty prompt starts
/// at a document boundary. `temperature` 0 is greedy decoding. `repetition_penalty` > 1 makes
/// tokens already in the text less likely, as transformers' `repetition_penalty` (CTRL): their
/// logits are divided by it where positive, multiplied where negative; 1 leaves them alone.
#[allow(clippy::too_many_arguments)]
pub fn sample<B: Backend>(
    model: &Llama<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    max_new: usize,
    temperature: f64,
    top_k: usize,
    repetition_penalty: f64,
    seed: u64,
    device: &B::Device,
) -> Result<String> {
    if !temperature.is_finite() || temperature < 0.0 {
        bail!("temperature must be ≥ 0 (got {temperature})");
    }
    if !repetition_penalty.is_finite() || repetition_penalty <= 0.0 {
        bail!("repetition penalty must be > 0 (got {repetition_penalty}; 1 for none)");
    }
    let eos = tokenizer.eos_id();
    let mut tokens = tokenizer.encode(prompt)?;
    let prompt_len = tokens.len();
    if tokens.is_empty() {
        match eos.or(tokenizer.bos_id()) {
            Some(start) => tokens.push(start),
            None => bail!(
                "an empty prompt needs a tokenizer with an end-of-text or begin-of-text token"
            ),
        }
    }
    let skip = tokens.len() - prompt_len;
    let decoding = Decoding {
        max_new,
        temperature,
        top_k,
        repetition_penalty,
        seed,
        stops: eos.into_iter().collect(),
        cache: true,
    };
    // An empty continuation is no sample: end-of-text may only follow a first token.
    let new = decoding.run(model, &tokens, true, device);
    tokens.extend(new);
    tokenizer.decode(&tokens[skip..])
}

/// How tokens are chosen after a prompt.
#[derive(Debug, Clone)]
pub struct Decoding {
    pub max_new: usize,
    /// 0: greedy.
    pub temperature: f64,
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub seed: u64,
    /// Generation ends at any of these (not included in the output).
    pub stops: Vec<u32>,
    /// Keep earlier tokens' keys and values (`KvCache`) rather than recomputing the whole
    /// context for each token: the same tokens, far faster.
    pub cache: bool,
}

impl Decoding {
    /// The tokens that follow `prompt` (not empty); with `no_empty`, a stop token cannot come
    /// first. Beyond the model's context the cache is dropped and the context's tail recomputed.
    pub fn run<B: Backend>(
        &self,
        model: &Llama<B>,
        prompt: &[u32],
        no_empty: bool,
        device: &B::Device,
    ) -> Vec<u32> {
        let mut tokens = prompt.to_vec();
        let max_context = model.max_positions();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut cache: Option<KvCache<B>> = None;
        let mut out = Vec::new();
        while out.len() < self.max_new {
            let logits = match (self.cache, cache.as_mut()) {
                (true, Some(c)) if c.len() < max_context => {
                    let last = &tokens[tokens.len() - 1..];
                    let input = crate::trainer::tokens_to_tensor::<B>(last, 1, device);
                    model.forward_cached(input, c)
                }
                _ => {
                    let context = &tokens[tokens.len().saturating_sub(max_context)..];
                    let input = crate::trainer::tokens_to_tensor::<B>(context, 1, device);
                    if self.cache && context.len() < max_context {
                        let mut fresh = KvCache::new(model.layers.len());
                        let logits = model.forward_cached(input, &mut fresh);
                        cache = Some(fresh);
                        logits
                    } else {
                        let logits = model.forward(input);
                        let [_, seq, vocab] = logits.dims();
                        logits
                            .slice([0..1, seq - 1..seq, 0..vocab])
                            .reshape([1, vocab])
                    }
                }
            };
            let mut logits: Vec<f32> = logits
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            if no_empty && out.is_empty() {
                for &stop in &self.stops {
                    if let Some(l) = logits.get_mut(stop as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            penalise_repeats(&mut logits, &tokens, self.repetition_penalty as f32);
            let next = pick(&logits, self.temperature, self.top_k, &mut rng);
            if self.stops.contains(&next) {
                break;
            }
            tokens.push(next);
            out.push(next);
        }
        out
    }
}

fn penalise_repeats(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = std::collections::HashSet::new();
    for &t in seen {
        if let (Some(l), true) = (logits.get_mut(t as usize), done.insert(t)) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

fn pick(logits: &[f32], temperature: f64, top_k: usize, rng: &mut StdRng) -> u32 {
    let argmax = || {
        (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0) as u32
    };
    if temperature == 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let top = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / temperature).exp())
        .collect();
    let mut draw = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        draw -= w;
        if draw <= 0.0 {
            return i as u32;
        }
    }
    argmax()
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub seed: u64,
    /// `--chat`: the prompt is the last user message of a conversation rendered with the
    /// run's chat template.
    pub chat: Option<crate::chat_prompt::ChatRequest>,
    /// Use the key/value cache (`--no-cache` turns it off, for comparison).
    pub cache: bool,
}

/// Loads a checkpoint written by `fucina train` (its config names the model and tokenizer) and
/// samples from it on the backend the run used.
pub fn from_checkpoint(dir: &std::path::Path, options: GenerateOptions) -> Result<String> {
    use crate::checkpoint::CONFIG_FILE;
    let dir = crate::export::checkpoint_dir(dir)?;
    let config = crate::RunConfig::load(&dir.join(CONFIG_FILE), &[])?;
    let tokenizer = crate::data::load_tokenizer(&config.data.tokenizer)?;
    let task = SampleTask {
        dir,
        config,
        tokenizer,
        options,
    };
    crate::dispatch(task.config.backend, 0, task)?
}

struct SampleTask {
    dir: std::path::PathBuf,
    config: crate::RunConfig,
    tokenizer: TextTokenizer,
    options: GenerateOptions,
}

impl crate::BackendTask for SampleTask {
    type Output = Result<String>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Result<String> {
        let model = crate::export::trained_model::<B>(&self.dir, &self.config, &device)?;
        let o = &self.options;
        let Some(request) = &o.chat else {
            return sample(
                &model,
                &self.tokenizer,
                &o.prompt,
                o.max_tokens,
                o.temperature,
                o.top_k,
                o.repetition_penalty,
                o.seed,
                &device,
            );
        };
        if !o.temperature.is_finite() || o.temperature < 0.0 {
            bail!("temperature must be ≥ 0 (got {})", o.temperature);
        }
        let prompt = ChatPrompt::build(&self.config, &self.tokenizer, request, &o.prompt)?;
        let decoding = Decoding {
            max_new: o.max_tokens,
            temperature: o.temperature,
            top_k: o.top_k,
            repetition_penalty: o.repetition_penalty,
            seed: o.seed,
            stops: prompt.stops.clone(),
            cache: o.cache,
        };
        let started = std::time::Instant::now();
        let reply = decoding.run(&model, &prompt.ids, false, &device);
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{} tokens in {seconds:.2} s ({:.1} tokens/s, {} prompt tokens, key/value cache {})",
            reply.len(),
            reply.len() as f64 / seconds,
            prompt.ids.len(),
            if o.cache { "on" } else { "off" }
        );
        self.tokenizer
            .inner()
            .decode(&reply, true)
            .map_err(|e| anyhow::anyhow!("decoding: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::penalise_repeats;

    /// As transformers' RepetitionPenaltyLogitsProcessor: each seen token once, positive logits
    /// divided, negative multiplied, the others untouched.
    #[test]
    fn repeats_are_penalised_once_each() {
        let mut logits = [2.0, -1.0, 3.0, 0.5];
        penalise_repeats(&mut logits, &[0, 1, 0, 9], 2.0);
        assert_eq!(logits, [1.0, -2.0, 3.0, 0.5]);
        penalise_repeats(&mut logits, &[0, 1, 2], 1.0);
        assert_eq!(logits, [1.0, -2.0, 3.0, 0.5]);
    }
}
