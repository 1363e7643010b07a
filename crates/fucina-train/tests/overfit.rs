//! The model and optimizer can memorise one batch: the loss must go from ln(vocab) to near zero.

mod common;

use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use fucina_dist::SingleProcess;
use fucina_model::Llama;
use fucina_train::grads::GradSync;
use fucina_train::optim::AdamW;
use fucina_train::trainer::tokens_to_tensor;

type AD = burn::backend::Autodiff<common::B>;

#[test]
fn overfitting_one_batch_drives_the_loss_near_zero() {
    let device = Default::default();
    let config = common::tiny_run(&std::env::temp_dir(), &["train.weight_decay=0"]);
    AD::seed(&device, 0);
    let mut model = Llama::<AD>::new(&config.model_config().unwrap(), &device);
    let mut optim = AdamW::new(&config.train).init::<AD, Llama<AD>>();
    let stream: Vec<u32> = (0..65u32).map(|i| (i * 2654435761u32) % 4096).collect();
    let inputs = tokens_to_tensor::<AD>(&stream[..64], 2, &device);
    let targets = tokens_to_tensor::<AD>(&stream[1..], 2, &device);
    let mut losses = Vec::new();
    let mut sync = GradSync::new(1.0, 1 << 20);
    for _ in 0..150 {
        let loss = model.loss(inputs.clone(), targets.clone());
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (grads, _) = sync.run(&model, grads, &SingleProcess).unwrap();
        model = optim.step(1e-2, model, grads);
    }
    assert!(
        (losses[0] - 4096f64.ln()).abs() < 0.1,
        "initial loss {}",
        losses[0]
    );
    let last = *losses.last().unwrap();
    assert!(
        last < 0.05,
        "loss after 150 steps on one batch: {last} ({losses:?})"
    );
}
