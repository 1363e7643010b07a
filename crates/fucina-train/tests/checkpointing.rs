//! `train.activation_checkpointing = "block"` and the loss over chunks of rows
//! (`train.logits_chunk_mb`) compute the gradients the plain backward does, on the Flex backend
//! with its fused kernels: for a full model (untied and tied head), under LoRA (frozen weights
//! get none), for the masked chat loss, with the rows split into parts, and they train the
//! same 20 steps. So does the staged backward that overlaps the gradient all-reduce
//! (`fucina_train::stages`), each gradient complete at the stage its bucket waits for.

mod common;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use common::B;
use fucina_data::Batch;
use fucina_dist::SingleProcess;
use fucina_model::{Llama, LlamaConfig, LoraSpec};
use fucina_train::config::Checkpointing;
use fucina_train::stages::Stages;
use fucina_train::threads::{forward_backward, Memory};
use fucina_train::{train, TrainOptions};

type AD = burn::backend::Autodiff<B>;

/// One test at a time: a test thread outside rayon's pool that holds a burn autodiff graph
/// lock in `backward` waits for the pool's gemm workers, which may be waiting for that lock to
/// clean up another test's graph (seen: a deadlock). A run has only one such thread.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const ROWS: usize = 4;
const SEQ: usize = 32;

fn tiny(extra: &[&str]) -> LlamaConfig {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_run(tmp.path(), extra).model_config().unwrap()
}

fn model(config: &LlamaConfig, lora: bool) -> Llama<AD> {
    let device = Default::default();
    AD::seed(&device, 7);
    let model = Llama::<AD>::new(config, &device);
    if !lora {
        return model;
    }
    let spec = LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: ["q_proj", "v_proj", "o_proj", "down_proj"]
            .map(String::from)
            .into(),
    };
    let mut model = model.with_lora(&spec, 3, &device);
    // A fresh adapter's B is zero, which would make every A gradient zero on both sides.
    for layer in &mut model.layers {
        let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
        for adapter in [
            &mut a.q_lora,
            &mut a.v_lora,
            &mut a.o_lora,
            &mut m.down_lora,
        ] {
            let adapter = adapter.as_mut().unwrap();
            adapter.lora_b = adapter.lora_b.clone().map(|b| {
                b.random_like(Distribution::Normal(0.0, 0.05))
                    .require_grad()
            });
        }
    }
    model
}

/// Deterministic pseudo-random tokens, and a mask that keeps about half of the targets.
fn batch(vocab: usize, masked: bool) -> Batch {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = ROWS * SEQ;
    let tokens: Vec<u32> = (0..=n).map(|_| (next() % vocab as u64) as u32).collect();
    Batch {
        inputs: tokens[..n].to_vec(),
        targets: tokens[1..].to_vec(),
        mask: masked.then(|| (0..n).map(|_| (next() % 2) as u8).collect()),
        starts: None,
    }
}

/// `batch`, its rows holding documents packed end to end (`prepare --pack`,
/// `data.document_mask`): row r's documents start at 0, 5 + r, 6 + r and 20.
fn packed_batch(vocab: usize, masked: bool) -> Batch {
    let starts = (0..ROWS)
        .flat_map(|r| {
            let cuts = [0, 5 + r, 6 + r, 20];
            (0..SEQ).map(move |i| *cuts.iter().rev().find(|&&c| c <= i).unwrap() as u32)
        })
        .collect();
    Batch {
        starts: Some(starts),
        ..batch(vocab, masked)
    }
}

/// Whole logits, with or without block checkpointing.
fn whole(checkpointing: Checkpointing) -> Memory {
    Memory {
        checkpointing,
        logits_chunk_bytes: 0,
    }
}

/// Chunks of 20 rows of the `vocab`-wide logits: the parts' 64 or 128 rows end in a short one.
fn chunks(checkpointing: Checkpointing, vocab: usize) -> Memory {
    Memory {
        checkpointing,
        logits_chunk_bytes: 20 * 4 * vocab,
    }
}

fn gradients(
    model: &Llama<AD>,
    batch: &Batch,
    parts: usize,
    memory: Memory,
) -> (f64, GradientsParams) {
    poisoned_gradients(model, batch, parts, memory, false)
}

fn poisoned_gradients(
    model: &Llama<AD>,
    batch: &Batch,
    parts: usize,
    memory: Memory,
    poison: bool,
) -> (f64, GradientsParams) {
    let scale = scale_of(batch);
    let mut acc = GradientsAccumulator::new();
    let device = Default::default();
    let split = (ROWS, parts, false);
    let loss = forward_backward(
        model, batch, split, scale, 2, poison, memory, &mut acc, &device,
    );
    (loss, acc.grads())
}

/// As `gradients`, through the stages of `Stages`, checking that each parameter's gradient
/// arrives last at the stage `Stages::stage_of` gives it.
fn staged_gradients(
    model: &Llama<AD>,
    batch: &Batch,
    parts: usize,
    memory: Memory,
) -> (f64, GradientsParams) {
    let scale = scale_of(batch);
    let device = Default::default();
    let split = (ROWS, parts, false);
    let (loss, mut stages) = Stages::forward(model, batch, split, scale, 2, false, memory, &device);
    struct Seen<'a>(&'a GradientsParams, usize, Vec<Option<usize>>);
    impl ModuleVisitor<AD> for Seen<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            if param.val().is_require_grad() {
                let at = self.2.len();
                self.2.push(None);
                if self.0.get::<B, D>(param.id).is_some() {
                    self.2[at] = Some(self.1);
                }
            }
        }
    }
    let mut last_seen: Vec<Option<usize>> = Vec::new();
    let mut acc = GradientsAccumulator::new();
    for stage in 0..stages.count() {
        let grads = stages.advance();
        let mut seen = Seen(&grads, stage, Vec::new());
        model.visit(&mut seen);
        last_seen.resize(seen.2.len(), None);
        for (last, now) in last_seen.iter_mut().zip(seen.2) {
            *last = now.or(*last);
        }
        acc.accumulate(model, grads);
    }
    for (i, (last, expected)) in last_seen.iter().zip(Stages::stage_of(model)).enumerate() {
        assert_eq!(
            *last,
            Some(expected),
            "parameter {i}: last gradient at stage"
        );
    }
    (loss, acc.grads())
}

/// The masked loss's normalisation: one over the masked-in targets.
fn scale_of(batch: &Batch) -> f64 {
    match &batch.mask {
        Some(mask) => 1.0 / mask.iter().map(|&m| m as f64).sum::<f64>(),
        None => 1.0,
    }
}

/// For each parameter: (has a gradient on each side, max |a − b| / max |b|).
fn compare(model: &Llama<AD>, a: &GradientsParams, b: &GradientsParams) -> Vec<(bool, bool, f64)> {
    struct Compare<'a>(
        &'a GradientsParams,
        &'a GradientsParams,
        Vec<(bool, bool, f64)>,
    );
    impl ModuleVisitor<AD> for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            let (a, b) = (self.0.get::<B, D>(param.id), self.1.get::<B, D>(param.id));
            let error = match (a, b) {
                (Some(a), Some(b)) => {
                    let scale = b.clone().abs().max().into_scalar();
                    let diff = (a - b).abs().max().into_scalar();
                    assert!(scale > 0.0, "a zero gradient proves nothing");
                    (diff / scale) as f64
                }
                _ => 0.0,
            };
            let has = |g: &GradientsParams| g.get::<B, D>(param.id).is_some();
            self.2.push((has(self.0), has(self.1), error));
        }
    }
    let mut visitor = Compare(a, b, Vec::new());
    model.visit(&mut visitor);
    visitor.2
}

fn check(config: &LlamaConfig, lora: bool, masked: bool) {
    check_batch(config, lora, &batch(config.vocab_size, masked));
}

fn check_batch(config: &LlamaConfig, lora: bool, batch: &Batch) {
    let masked = batch.mask.is_some();
    let model = model(config, lora);
    let vocab = config.vocab_size;
    let variants = [
        (whole(Checkpointing::Block), "block", false),
        (chunks(Checkpointing::None, vocab), "chunked loss", false),
        (
            chunks(Checkpointing::Block, vocab),
            "block, chunked loss",
            false,
        ),
        (whole(Checkpointing::None), "staged", true),
        (
            chunks(Checkpointing::Block, vocab),
            "staged, block, chunked loss",
            true,
        ),
    ];
    for (parts, (memory, name, staged)) in [1, 2].into_iter().flat_map(|p| variants.map(|v| (p, v)))
    {
        let (loss, plain) = gradients(&model, batch, parts, whole(Checkpointing::None));
        let (loss_ckpt, ckpt) = match staged {
            true => staged_gradients(&model, batch, parts, memory),
            false => gradients(&model, batch, parts, memory),
        };
        let packed = batch.starts.is_some();
        let case =
            format!("{name}: lora {lora}, masked {masked}, packed {packed}, {parts} part(s)");
        assert!(loss.is_finite() && loss > 0.0, "{case}: loss {loss}");
        // The chunked loss sums weighted chunks where the plain one takes a mean.
        match memory.logits_chunk_bytes {
            0 => assert_eq!(loss, loss_ckpt, "{case}"),
            _ => assert!(
                (loss - loss_ckpt).abs() <= 1e-6 * loss,
                "{case}: {loss} vs {loss_ckpt}"
            ),
        }
        assert_eq!(
            plain.len(),
            ckpt.len(),
            "{case}: gradients for other parameters"
        );
        let results = compare(&model, &plain, &ckpt);
        let trainable = results.iter().filter(|(a, _, _)| *a).count();
        assert_eq!(trainable, plain.len(), "{case}");
        let worst = results.iter().map(|r| r.2).fold(0.0, f64::max);
        eprintln!(
            "{case}: {} gradients, worst relative error {worst:e}",
            plain.len()
        );
        for (i, (a, b, error)) in results.into_iter().enumerate() {
            assert_eq!(
                a, b,
                "{case}: parameter {i} has a gradient on one side only"
            );
            assert!(
                error <= 1e-6,
                "{case}: parameter {i}: relative error {error:e}"
            );
        }
    }
}

#[test]
fn block_checkpointing_gives_the_plain_gradients() {
    let _serial = serial();
    check(&tiny(&[]), false, false);
    check(&tiny(&[]), false, true);
}

#[test]
fn packed_documents_checkpoint_and_split_like_the_plain_backward() {
    let _serial = serial();
    let config = tiny(&[]);
    check_batch(&config, false, &packed_batch(config.vocab_size, false));
    check_batch(&config, true, &packed_batch(config.vocab_size, true));
}

/// The loss of a packed batch, against each document run alone as its own sequence: the
/// same targets, predicted from only their own document's tokens.
#[test]
fn a_packed_loss_is_the_loss_of_each_document_alone() {
    let _serial = serial();
    let config = tiny(&[]);
    let model = model(&config, false);
    let packed = packed_batch(config.vocab_size, false);
    let (loss, _) = gradients(&model, &packed, 1, whole(Checkpointing::None));
    let starts = packed.starts.as_ref().unwrap();
    let inner = model.valid();
    let device = Default::default();
    let (mut sum, mut count) = (0.0f64, 0usize);
    for r in 0..ROWS {
        let row = r * SEQ;
        let mut begin = 0;
        while begin < SEQ {
            let end = (begin..SEQ)
                .find(|&i| starts[row + i] as usize != begin)
                .unwrap_or(SEQ);
            let ids: Vec<i32> = (begin..end)
                .map(|i| packed.inputs[row + i] as i32)
                .collect();
            let n = ids.len();
            let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
            let logits = inner.forward(tokens).into_data().to_vec::<f32>().unwrap();
            let vocab = config.vocab_size;
            for i in 0..n {
                let l = &logits[i * vocab..(i + 1) * vocab];
                let max = l.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                let lse = max + l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
                sum += lse - l[packed.targets[row + begin + i] as usize] as f64;
                count += 1;
            }
            begin = end;
        }
    }
    let alone = sum / count as f64;
    assert!(
        (loss - alone).abs() <= 1e-5 * alone,
        "packed loss {loss}, documents alone {alone}"
    );
    let (unpacked, _) = gradients(
        &model,
        &batch(config.vocab_size, false),
        1,
        whole(Checkpointing::None),
    );
    assert!(
        (unpacked - loss).abs() > 1e-3,
        "packing must change the loss of this batch"
    );
}

#[test]
fn with_a_tied_head_the_embedding_gets_both_of_its_gradients() {
    let _serial = serial();
    check(&tiny(&["model.tie_word_embeddings=true"]), false, false);
}

#[test]
fn under_lora_only_the_adapters_get_gradients() {
    let _serial = serial();
    let config = tiny(&[]);
    check(&config, true, true);
    let model = model(&config, true);
    let (_, grads) = gradients(
        &model,
        &batch(config.vocab_size, false),
        2,
        chunks(Checkpointing::Block, config.vocab_size),
    );
    // Two layers × four adapters × (A, B).
    assert_eq!(grads.len(), 2 * 4 * 2);
    let frozen = model.embed_tokens.weight.id;
    assert!(grads.get::<B, 2>(frozen).is_none());
}

#[test]
fn a_poisoned_loss_reaches_every_gradient_through_the_recompute() {
    let _serial = serial();
    let config = tiny(&[]);
    let model = model(&config, false);
    let batch = batch(config.vocab_size, false);
    let (loss, grads) = poisoned_gradients(&model, &batch, 2, whole(Checkpointing::Block), true);
    assert!(loss.is_nan());
    let id = model.layers[0].self_attn.q_proj.weight.id;
    let grad = grads.get::<B, 2>(id).expect("a gradient");
    assert!(grad.is_nan().any().into_scalar());
    let memory = chunks(Checkpointing::Block, config.vocab_size);
    let (loss, grads) = poisoned_gradients(&model, &batch, 2, memory, true);
    assert!(loss.is_nan());
    // The first block's query projection: reached only through every recomputed block.
    let id = model.layers[0].self_attn.q_proj.weight.id;
    let grad = grads.get::<B, 2>(id).expect("a gradient");
    assert!(grad.is_nan().any().into_scalar());
}

#[test]
fn twenty_steps_train_the_same_with_checkpointing_and_chunked_logits() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, mode: &str, chunk_mb: &str| {
        let setting = format!("train.activation_checkpointing={mode}");
        let chunk = format!("train.logits_chunk_mb={chunk_mb}");
        let config = common::tiny_run(
            &tmp.path().join(name),
            &[&setting, &chunk, "checkpoint.every=0"],
        );
        assert_eq!(config.train.steps, 20);
        train(config, &SingleProcess, TrainOptions::default())
            .unwrap()
            .losses
    };
    let plain = run("none", "none", "0");
    assert_eq!(plain.len(), 20);
    // 0.25 MiB: 16 rows of the tiny model's 4,096 logits per chunk.
    for (name, mode, chunk_mb) in [("block", "block", "0"), ("chunked", "none", "0.25")] {
        let other = run(name, mode, chunk_mb);
        for (step, (a, b)) in plain.iter().zip(&other).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs(),
                "{name}: step {step}: {a} vs {b}"
            );
        }
    }
    assert!(plain.last() < plain.first());
}

#[test]
fn lora_dropout_is_refused_with_checkpointing() {
    let tmp = tempfile::tempdir().unwrap();
    let text = common::tiny_run(tmp.path(), &[]).to_toml();
    let text = format!(
        "{text}\n[lora]\nr = 2\nalpha = 4.0\ndropout = 0.1\ntarget_modules = [\"q_proj\"]\n"
    );
    let set = ["train.activation_checkpointing=block".to_string()];
    let error = fucina_train::RunConfig::from_toml_str(&text, &set).unwrap_err();
    assert!(format!("{error:#}").contains("lora.dropout"), "{error:#}");
    assert!(fucina_train::RunConfig::from_toml_str(&text, &[]).is_ok());
}

#[test]
fn a_llama_3_vocabulary_gives_the_plain_gradients_in_chunks() {
    let _serial = serial();
    // 128,256 logits per row, 20 rows per chunk: what `logits_chunk_mb` is for.
    check(&tiny(&["model.vocab_size=128256"]), false, true);
}
