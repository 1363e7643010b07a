//! Losses of a batch. Unmasked data (pre-training) uses the mean over every target; masked
//! data (chat SFT) counts only assistant tokens and is normalised by the masked-in targets of
//! the whole global batch, so every token weighs the same however the examples fall into
//! micro-batches and ranks (per-micro-batch means would over-weight short replies).

use burn::prelude::*;
use fucina_data::Batch;
use fucina_model::{cross_entropy, fused, Documents, Llama, Span};

pub fn tokens_to_tensor<B: Backend>(
    tokens: &[u32],
    rows: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let values: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let cols = values.len() / rows.max(1);
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// The documents packed in `batch`'s `rows` (`prepare --pack`, `data.document_mask`); `None`
/// when every row is one sequence, which then takes the plain causal attention.
pub fn documents<B: Backend>(
    batch: &Batch,
    rows: usize,
    device: &B::Device,
) -> Option<Documents<B>> {
    let starts = batch
        .starts
        .as_ref()
        .filter(|s| s.iter().any(|&s| s != 0))?;
    let seq = starts.len() / rows.max(1);
    let docs = Documents::new(starts.clone(), rows, seq, device);
    Some(docs.expect("the loader gives well-formed document starts"))
}

/// Where a batch with `docs` puts its tokens.
pub fn span<B: Backend>(docs: &Option<Documents<B>>) -> Span<'_, B> {
    docs.as_ref().map_or(Span::From(0), Span::Packed)
}

/// Σ over masked-in targets of −log p(target).
fn masked_nll_sum<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: &[u8],
    device: &B::Device,
) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    let nll = fused::nll(logits.reshape([b * s, v]), targets.reshape([b * s]));
    let weights: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [b * s]), device);
    (nll * weights).sum()
}

/// The micro-batch's share of the step loss. `scale` is `world × accum / global targets`
/// (see `step_scale`): for unmasked data the plain mean is used, which it equals.
pub fn micro_loss<B: Backend>(
    model: &Llama<B>,
    batch: &Batch,
    rows: usize,
    scale: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    let inputs = tokens_to_tensor::<B>(&batch.inputs, rows, device);
    let docs = documents(batch, rows, device);
    logits_loss(
        model.forward_in(inputs, span(&docs)),
        batch,
        rows,
        scale,
        device,
    )
}

/// `micro_loss` from the batch's logits [rows, seq, vocab], however they were computed.
pub fn logits_loss<B: Backend>(
    logits: Tensor<B, 3>,
    batch: &Batch,
    rows: usize,
    scale: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    let targets = tokens_to_tensor::<B>(&batch.targets, rows, device);
    match &batch.mask {
        Some(mask) => masked_nll_sum(logits, targets, mask, device).mul_scalar(scale),
        None => cross_entropy(logits, targets),
    }
}

/// The factor that turns a micro-batch's summed loss into its share of the global mean: the
/// trainer divides by `accum` and the gradient sync by `world`, which this undoes.
pub fn step_scale(world: usize, accum: usize, global_targets: u64) -> f64 {
    (world * accum) as f64 / global_targets.max(1) as f64
}

/// (Σ loss, targets counted) of an evaluation batch, so means over batches weigh tokens.
pub fn eval_sums<B: Backend>(
    model: &Llama<B>,
    batch: &Batch,
    rows: usize,
    device: &B::Device,
) -> (f64, f64) {
    let count = batch.loss_targets() as f64;
    let loss = micro_loss(model, batch, rows, 1.0, device)
        .into_scalar()
        .elem::<f64>();
    match batch.mask {
        Some(_) => (loss, count),
        None => (loss * count, count),
    }
}
