//! AdamW, the schedule and gradient accumulation against hand computations.

mod common;

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use common::B;
use fucina_dist::SingleProcess;
use fucina_train::grads::GradSync;
use fucina_train::optim::{learning_rate, AdamW, HostSlices};
use fucina_train::RunConfig;

type AD = burn::backend::Autodiff<B>;

#[derive(Module, Debug)]
struct Pair<B: Backend> {
    matrix: Param<Tensor<B, 2>>,
    vector: Param<Tensor<B, 1>>,
}

fn run_config(extra: &[&str]) -> RunConfig {
    let dir = std::env::temp_dir();
    common::tiny_run(&dir, extra)
}

/// torch.optim.AdamW, one scalar at a time, in f64.
fn reference_adamw(w0: f64, grads: &[f64], lr: f64, decay: f64) -> f64 {
    let (b1, b2, eps) = (0.9f64, 0.95f64, 1e-8f64);
    let (mut w, mut m, mut v) = (w0, 0.0, 0.0);
    for (t, g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        w *= 1.0 - lr * decay;
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let (m_hat, v_hat) = (m / (1.0 - b1.powi(t)), v / (1.0 - b2.powi(t)));
        w -= lr * m_hat / (v_hat.sqrt() + eps);
    }
    w
}

#[test]
fn adamw_matches_pytorch_formula_and_skips_decay_on_vectors() {
    adamw_case([1.0; 3]);
}

/// The gradient scale (1/N and the clip) folded into the moments' constants: the same update
/// as the reference taking the scaled gradients.
#[test]
fn a_gradient_scale_is_the_update_of_the_scaled_gradients() {
    adamw_case([0.5, 0.03, 2.0]);
}

fn adamw_case(scales: [f32; 3]) {
    let device = Default::default();
    let config = run_config(&["train.weight_decay=0.1"]);
    let w_matrix = [[0.5f32, -1.0], [2.0, 0.25]];
    let w_vector = [1.0f32, -0.5];
    let mut model = Pair::<AD> {
        matrix: Param::from_tensor(Tensor::from_data(w_matrix, &device)),
        vector: Param::from_tensor(Tensor::from_data(w_vector, &device)),
    };
    let adamw = AdamW::new(&config.train);
    let mut optim = adamw.clone().init::<AD, Pair<AD>>();
    // loss = Σ c·w with coefficients changing per step: the gradient of each weight is c.
    let coefficients = [
        [0.3f32, -0.2, 0.1, 0.7, 0.5, -0.4],
        [-0.1, 0.4, 0.2, -0.3, 0.6, 0.2],
        [0.2, 0.2, -0.5, 0.1, -0.2, 0.3],
    ];
    let lr = 0.01;
    for (c, scale) in coefficients.iter().zip(scales) {
        adamw.set_grad_scale(scale);
        let cm = Tensor::<AD, 2>::from_data([[c[0], c[1]], [c[2], c[3]]], &device);
        let cv = Tensor::<AD, 1>::from_data([c[4], c[5]], &device);
        let loss = (model.matrix.val() * cm).sum() + (model.vector.val() * cv).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    let got_m: Vec<f32> = model.matrix.val().into_data().into_vec().unwrap();
    let got_v: Vec<f32> = model.vector.val().into_data().into_vec().unwrap();
    let initial: Vec<f32> = w_matrix
        .iter()
        .flatten()
        .chain(w_vector.iter())
        .copied()
        .collect();
    for (i, got) in got_m.iter().chain(got_v.iter()).enumerate() {
        let grads: Vec<f64> = coefficients
            .iter()
            .zip(scales)
            .map(|(c, s)| c[i] as f64 * s as f64)
            .collect();
        let decay = if i < 4 { 0.1 } else { 0.0 };
        let expected = reference_adamw(initial[i] as f64, &grads, lr, decay);
        assert!(
            (*got as f64 - expected).abs() < 1e-6,
            "weight {i}: {got} vs {expected}"
        );
    }
}

/// The sharded optimizer's host update (ZeRO-1) against the same reference.
#[test]
fn host_adamw_matches_pytorch_formula() {
    let config = run_config(&["train.weight_decay=0.1"]);
    let adamw = AdamW::new(&config.train);
    let initial = [0.5f32, -1.0, 2.0, 0.25];
    let grads = [
        [0.3f32, -0.2, 0.1, 0.7],
        [-0.1, 0.4, 0.2, -0.3],
        [0.2, 0.2, -0.5, 0.1],
    ];
    let lr = 0.01;
    for decay in [true, false] {
        let mut weights = initial;
        let (mut m, mut v) = ([0f32; 4], [0f32; 4]);
        for (t, g) in grads.iter().enumerate() {
            let slices = HostSlices {
                weights: &mut weights,
                grads: g,
                moment_1: &mut m,
                moment_2: &mut v,
            };
            adamw.step_host(lr, t + 1, decay, slices);
        }
        for i in 0..4 {
            let g: Vec<f64> = grads.iter().map(|g| g[i] as f64).collect();
            let wd = if decay { 0.1 } else { 0.0 };
            let expected = reference_adamw(initial[i] as f64, &g, lr, wd);
            let got = weights[i] as f64;
            assert!(
                (got - expected).abs() < 1e-6,
                "weight {i}: {got} vs {expected}"
            );
        }
    }
}

#[test]
fn schedule_warms_up_linearly_then_decays_to_min_lr() {
    let c = run_config(&[
        "train.steps=110",
        "train.warmup_steps=10",
        "train.lr=1.0",
        "train.min_lr=0.1",
    ])
    .train;
    assert!((learning_rate(&c, 0) - 0.1).abs() < 1e-12);
    assert!((learning_rate(&c, 9) - 1.0).abs() < 1e-12);
    assert!((learning_rate(&c, 10) - 1.0).abs() < 1e-12);
    // Half-way through the decay: min + (max-min)/2.
    assert!((learning_rate(&c, 60) - 0.55).abs() < 1e-12);
    assert!((learning_rate(&c, 110) - 0.1).abs() < 1e-12);
    let lrs: Vec<f64> = (10..110).map(|s| learning_rate(&c, s)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "decay is monotone");
}

fn clip_case(max_norm: f64) -> (Vec<f32>, f64) {
    let device = Default::default();
    let model = Pair::<AD> {
        matrix: Param::from_tensor(Tensor::zeros([2, 2], &device)),
        vector: Param::from_tensor(Tensor::zeros([2], &device)),
    };
    let cm = Tensor::<AD, 2>::from_data([[3.0f32, 0.0], [0.0, 4.0]], &device);
    let cv = Tensor::<AD, 1>::from_data([0.0f32, 12.0], &device);
    let loss = (model.matrix.val() * cm).sum() + (model.vector.val() * cv).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let (mut grads, stats) = GradSync::new(max_norm, 1 << 20)
        .run(&model, grads, &SingleProcess)
        .unwrap();
    let gm = grads
        .remove::<<AD as AutodiffBackend>::InnerBackend, 2>(model.matrix.id)
        .unwrap();
    let gv = grads
        .remove::<<AD as AutodiffBackend>::InnerBackend, 1>(model.vector.id)
        .unwrap();
    let mut all: Vec<f32> = gm.into_data().into_vec().unwrap();
    all.extend(gv.into_data().into_vec::<f32>().unwrap());
    // What the optimizer takes: the gradients times the clip factor.
    let scale = stats.grad_scale as f32;
    (all.iter().map(|g| g * scale).collect(), stats.grad_norm)
}

#[test]
fn clipping_uses_the_global_norm_over_all_tensors() {
    // Gradients (3, 0, 0, 4) and (0, 12): per-tensor norms 5 and 12, global norm 13.
    let (grads, norm) = clip_case(6.5);
    assert!((norm - 13.0).abs() < 1e-5, "norm {norm}");
    let expected = [1.5, 0.0, 0.0, 2.0, 0.0, 6.0];
    for (g, e) in grads.iter().zip(expected) {
        assert!((g - e).abs() < 1e-4, "{grads:?}");
    }
    let (unclipped, _) = clip_case(100.0);
    assert_eq!(unclipped, vec![3.0, 0.0, 0.0, 4.0, 0.0, 12.0]);
}
