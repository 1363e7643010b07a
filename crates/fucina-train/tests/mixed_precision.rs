//! Mixed precision (`precision = "bf16"`) on the CPU, where Flex has bf16 tensors: the f32
//! masters move as f32 AdamW moves them while pure bf16 loses the same updates to rounding,
//! a run follows the f32 run's losses, and resume is exact.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::DType;
use common::tiny_run;
use fucina_dist::SingleProcess;
use fucina_model::Llama;
use fucina_train::update::Updater;
use fucina_train::{train, TrainOptions};

type Ad = Autodiff<Flex>;

/// Flex's weight initialisation draws from one process-wide RNG: runs of tests on other
/// threads would interleave their draws with a run's own and change its initial weights.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic values in ±[lo, hi).
fn spread(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
            sign * (lo + (hi - lo) * u)
        })
        .collect()
}

/// Every trainable weight set to ±[0.016, 0.03): magnitudes ~0.02 whose bf16 ULP is 2⁻¹³.
struct SetWeights(u64);
impl ModuleMapper<Ad> for SetWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<Ad, D>>) -> Param<Tensor<Ad, D>> {
        let (id, tensor, mapper) = param.consume();
        self.0 += 1;
        let dims = tensor.dims();
        let values = spread(dims.iter().product(), self.0, 0.016, 0.03);
        let t = Tensor::from_data(TensorData::new(values, dims), &tensor.device()).require_grad();
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Each parameter's values as f32, in visit order, with whether AdamW decays it.
type Weights = Vec<(Vec<f32>, bool)>;

fn values<M: Module<Ad>>(model: &M) -> Weights {
    struct Collect(Vec<(Vec<f32>, bool)>);
    impl ModuleVisitor<Ad> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            let v = param.val().into_data().convert::<f32>().into_vec::<f32>();
            self.0.push((v.unwrap(), D >= 2));
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Gradients ~±[1e-4, 2e-3) for every parameter, in the dtype of the model's weights.
fn gradients<M: Module<Ad>>(model: &M) -> GradientsParams {
    struct Grads(GradientsParams, u64);
    impl ModuleVisitor<Ad> for Grads {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            self.1 += 1;
            let value = param.val();
            let dims = value.dims();
            let g = spread(dims.iter().product(), 1000 + self.1, 1e-4, 2e-3);
            let data = TensorData::new(g, dims);
            let g = Tensor::<Flex, D>::from_data(data, (&value.device(), value.dtype()));
            self.0.register(param.id, g);
        }
    }
    let mut g = Grads(GradientsParams::new(), 0);
    model.visit(&mut g);
    g.0
}

/// One AdamW step at lr 3e-5 through the trainer's optimizer; returns the weights before and
/// after (the f32 masters with masters, else the model's), and the gradients it was given.
fn one_step(precision: &str) -> (Weights, Weights, Vec<Vec<f32>>) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_run(
        tmp.path(),
        &[&format!("precision={precision}"), "train.grad_clip=0"],
    );
    let device = Default::default();
    let model = Llama::<Ad>::new(&config.model_config().unwrap(), &device).map(&mut SetWeights(0));
    let before = values(&model);
    let mut updater = Updater::<Ad, Llama<Ad>>::new(&config, &model, &SingleProcess).unwrap();
    let model = updater.adopt(model).unwrap();
    let grads = gradients(&model);
    let given: Vec<Vec<f32>> = {
        let mut probe = gradients(&model);
        struct Take<'a>(&'a mut GradientsParams, Vec<Vec<f32>>);
        impl ModuleVisitor<Ad> for Take<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
                let g = self.0.remove::<Flex, D>(param.id).unwrap();
                self.1
                    .push(g.into_data().convert::<f32>().into_vec().unwrap());
            }
        }
        let mut take = Take(&mut probe, Vec::new());
        model.visit(&mut take);
        take.1
    };
    let mut stats = updater.sync(&model, grads, &SingleProcess).unwrap();
    let model = updater
        .apply(3e-5, model, &SingleProcess, &mut stats)
        .unwrap();
    let saved = updater.weights_to_save(&model, &SingleProcess).unwrap();
    (before, values(&saved.unwrap()), given)
}

#[test]
fn masters_move_as_f32_adamw_while_pure_bf16_loses_the_update() {
    let (lr, wd, eps) = (3e-5f32, 0.1f32, 1e-8f32);
    let (b1, b2) = (0.9f32, 0.95f32);
    let (before, after, grads) = one_step("bf16");
    let (mut worst, mut moved, mut total) = (0f32, 0usize, 0usize);
    for (((w0, decay), (w1, _)), g) in before.iter().zip(&after).zip(&grads) {
        for ((&w, &w_new), &g) in w0.iter().zip(w1).zip(g) {
            // torch.optim.AdamW's first step, in f32: an independent computation.
            let (m, v) = ((1.0 - b1) * g, (1.0 - b2) * g * g);
            let update = (m / (1.0 - b1)) / ((v / (1.0 - b2)).sqrt() + eps);
            let keep = if *decay { 1.0 - lr * wd } else { 1.0 };
            let expected = w * keep - lr * update;
            worst = worst.max((w_new - expected).abs());
            moved += (w_new != w) as usize;
            total += 1;
        }
    }
    assert!(worst <= 1e-7, "f32 masters off f32 AdamW by {worst}");
    assert_eq!(moved, total, "every master weight takes its update");

    let (before, after, _) = one_step("bf16-pure");
    let (mut kept, mut total) = (0usize, 0usize);
    for ((w0, _), (w1, _)) in before.iter().zip(&after) {
        for (&w, &w_new) in w0.iter().zip(w1) {
            let w_bf16 = half::bf16::from_f32(w).to_f32();
            kept += (w_new == w_bf16) as usize;
            total += 1;
        }
    }
    eprintln!(
        "lr 3e-5 on |w| in [0.016, 0.03): f32 masters within {worst:.1e} of f32 AdamW, all \
         moved; pure bf16 left {kept} of {total} weights unchanged"
    );
    // |Δw| = 3e-5 is below half the bf16 ULP (6.1e-5) of every such weight; the norm gains
    // (1.0, ULP 2⁻⁷) do not move either.
    assert!(
        kept * 100 >= total * 99,
        "pure bf16 kept only {kept} of {total}"
    );
}

/// A `tiny` run of `steps` in `precision`, with checkpoints every `every` steps.
fn run(dir: &std::path::Path, precision: &str, extra: &[&str]) -> Vec<f64> {
    let _serial = serial();
    let mut overrides = vec![format!("precision={precision}")];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let config = tiny_run(dir, &refs);
    train(config, &SingleProcess, TrainOptions::default())
        .unwrap()
        .losses
}

#[test]
fn mixed_precision_follows_the_f32_run() {
    let tmp = tempfile::tempdir().unwrap();
    // `mini` at a short sequence: 50 steps of the model in a test's time.
    let shape = [
        "model.preset=mini",
        "train.steps=50",
        "data.seq_len=64",
        "train.global_batch_tokens=512",
        "train.micro_batch_size=4",
        "train.lr=1e-3",
        "train.warmup_steps=5",
        "checkpoint.every=0",
    ];
    let f32 = run(&tmp.path().join("f32"), "f32", &shape);
    let bf16 = run(&tmp.path().join("bf16"), "bf16", &shape);
    let worst = f32
        .iter()
        .zip(&bf16)
        .map(|(a, b)| (a - b).abs() / a)
        .fold(0.0, f64::max);
    eprintln!("f32  {f32:.4?}\nbf16 {bf16:.4?}");
    eprintln!(
        "mini, 50 steps: f32 {:.4} → {:.4}, bf16 {:.4} → {:.4}, worst relative gap {worst:.2e}",
        f32[0], f32[49], bf16[0], bf16[49]
    );
    // bf16 keeps 8 significant bits: each matmul output, activation and weight copy is off
    // by up to 2⁻⁹ ≈ 0.2 % of itself. A token's loss passes ~9 such roundings in series (4
    // blocks of two branches, and the head): ~1.8 % if they all added up, ~3·2⁻⁹ ≈ 0.6 % as
    // independent errors, and the step's loss, a mean over 512 tokens, ~0.6 %/√512 ≈ 0.03 %.
    // Fifty steps let the two trajectories drift apart; 10× the one-step figure bounds that.
    assert!(
        worst < 3e-3,
        "bf16 strays from f32 by {worst:.2e} of the loss"
    );
    assert!(
        bf16[49] < bf16[0] - 0.8,
        "the bf16 run must learn: {bf16:?}"
    );
}

#[test]
fn mixed_precision_resumes_exactly() {
    for shard in ["false", "true"] {
        let tmp = tempfile::tempdir().unwrap();
        let set = format!("dist.shard_optimizer={shard}");
        let extra = ["train.steps=6", "checkpoint.every=3", &set];
        let whole = run(&tmp.path().join("whole"), "bf16", &extra);
        let dir = tmp.path().join("split");
        let config = tiny_run(&dir, &["precision=bf16", extra[0], extra[1], &set]);
        let stop = TrainOptions {
            stop_after: Some(3),
            ..Default::default()
        };
        let first = {
            let _serial = serial();
            train(config.clone(), &SingleProcess, stop).unwrap().losses
        };
        let resume = TrainOptions {
            resume: Some("auto".into()),
            ..Default::default()
        };
        let second = {
            let _serial = serial();
            train(config, &SingleProcess, resume).unwrap().losses
        };
        let joined: Vec<u64> = first.iter().chain(&second).map(|l| l.to_bits()).collect();
        let expected: Vec<u64> = whole.iter().map(|l| l.to_bits()).collect();
        assert_eq!(
            joined, expected,
            "shard_optimizer={shard}: {first:?} {second:?} vs {whole:?}"
        );
    }
}

#[test]
fn checkpoints_hold_the_f32_masters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run(&dir, "bf16", &["train.steps=2", "checkpoint.every=2"]);
    let config = tiny_run(&dir, &["precision=bf16"]);
    let ckpt = fucina_train::checkpoint::resolve(&dir, "auto").unwrap();
    let device = Default::default();
    let skeleton = Llama::<Flex>::new(&config.model_config().unwrap(), &device);
    let model = fucina_train::checkpoint::load_model::<Flex, _>(&ckpt, skeleton, &device).unwrap();
    let bits = common::param_bits(&model);
    let finer = (bits.iter().map(|&b| f32::from_bits(b)))
        .filter(|&x| half::bf16::from_f32(x).to_f32() != x)
        .count();
    let count = (finer, bits.len());
    assert_eq!(model.embed_tokens.weight.val().dtype(), DType::F32);
    // A bf16 model saved as f32 would hold only bf16-representable values.
    assert!(
        count.0 * 2 > count.1,
        "only {} of {} saved weights carry more than bf16's bits",
        count.0,
        count.1
    );
}

#[test]
fn block_checkpointing_trains_the_same_in_mixed_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = run(&tmp.path().join("plain"), "bf16", &["checkpoint.every=0"]);
    let block = ["checkpoint.every=0", "train.activation_checkpointing=block"];
    let recomputed = run(&tmp.path().join("block"), "bf16", &block);
    assert_eq!(plain.len(), 20);
    for (step, (a, b)) in plain.iter().zip(&recomputed).enumerate() {
        // The recomputation repeats the same bf16 operations on the same inputs, but the
        // CPU matmul's threads may split a reduction differently between the two forwards;
        // one bf16 rounding moved that way shows up as a few 1e-6 of the loss (CI saw
        // 3.6e-6 at step 4). A recomputation that is wrong moves it by bf16's 4e-3.
        assert!((a - b).abs() <= 5e-5 * a, "step {}: {a} vs {b}", step + 1);
    }
}
