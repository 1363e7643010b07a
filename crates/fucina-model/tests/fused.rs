//! The fused CPU kernels against burn's composed operations (`fused::reference`) on the same
//! autodiff backend: outputs and the gradients of a weighted sum of them.
#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use fucina_model::fused::{self, kernels, reference};

type Ad = Autodiff<Flex>;

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Ad, D> {
    <Ad as Backend>::seed(&Default::default(), seed);
    Tensor::random(shape, Distribution::Normal(0.0, 2.0), &Default::default()).require_grad()
}

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn assert_close(what: &str, got: Vec<f32>, want: Vec<f32>, tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0f32, f32::max);
    assert!(
        worst <= tol,
        "{what}: max error {worst:e} of the largest value (tolerance {tol:e})"
    );
}

/// Compares `fused` and `reference` of one input list on output and input gradients.
fn check<const D: usize, const E: usize>(
    what: &str,
    inputs: Vec<Tensor<Ad, D>>,
    fused: impl Fn(Vec<Tensor<Ad, D>>) -> Tensor<Ad, E>,
    reference: impl Fn(Vec<Tensor<Ad, D>>) -> Tensor<Ad, E>,
) {
    let run = |f: &dyn Fn(Vec<Tensor<Ad, D>>) -> Tensor<Ad, E>| {
        let leaves: Vec<_> = inputs
            .iter()
            .map(|t| t.clone().detach().require_grad())
            .collect();
        let out = f(leaves.clone());
        // A weighted sum, so each output element's gradient differs. Not from the RNG: tests
        // run in parallel and share its seed.
        let n = out.shape().num_elements();
        let w: Vec<f32> = (0..n)
            .map(|i| (i * 7919 % 101) as f32 / 101.0 - 0.5)
            .collect();
        let weights =
            Tensor::<Ad, E>::from_data(TensorData::new(w, out.dims()), &Default::default());
        let grads = (out.clone() * weights).sum().backward();
        let grads: Vec<_> = leaves
            .iter()
            .map(|l| values(l.grad(&grads).unwrap()))
            .collect();
        (values(out.inner()), grads)
    };
    let (out, grads) = run(&fused);
    let (want_out, want_grads) = run(&reference);
    assert_close(&format!("{what} output"), out, want_out, 1e-5);
    for (i, (g, w)) in grads.into_iter().zip(want_grads).enumerate() {
        assert_close(&format!("{what} gradient {i}"), g, w, 1e-5);
    }
}

#[test]
fn causal_softmax_square_and_offset() {
    for (q, k) in [(17, 17), (5, 21), (1, 3), (33, 33)] {
        check(
            &format!("causal softmax {q}x{k}"),
            vec![random([2, 3, q, k], 1)],
            |x| fused::causal_softmax(x[0].clone()),
            |x| reference::causal_softmax(x[0].clone()),
        );
    }
}

#[test]
fn swiglu_matches() {
    check(
        "swiglu",
        vec![random([3, 5, 37], 2), random([3, 5, 37], 3)],
        |x| fused::swiglu(x[0].clone(), x[1].clone()),
        |x| reference::swiglu(x[0].clone(), x[1].clone()),
    );
}

#[test]
fn rms_norm_matches() {
    let gamma = random([40], 5);
    let fused_gamma = gamma.clone();
    // gamma enters as a second leaf of another rank: compare its gradient separately.
    check(
        "rms norm (x)",
        vec![random([2, 7, 40], 4)],
        |x| fused::rms_norm(x[0].clone(), fused_gamma.clone(), 1e-5),
        |x| reference::rms_norm(x[0].clone(), gamma.clone(), 1e-5),
    );
    let x = random([2, 7, 40], 4);
    check(
        "rms norm (gamma)",
        vec![random([40], 5)],
        |g| fused::rms_norm(x.clone(), g[0].clone(), 1e-5),
        |g| reference::rms_norm(x.clone(), g[0].clone(), 1e-5),
    );
}

#[test]
fn nll_matches() {
    let targets: Vec<i64> = (0..23).map(|i| (i * 37 % 101) as i64).collect();
    let targets = || {
        Tensor::<Ad, 1, Int>::from_data(TensorData::new(targets.clone(), [23]), &Default::default())
    };
    check(
        "nll",
        vec![random([23, 101], 6)],
        |x| fused::nll(x[0].clone(), targets()),
        |x| reference::nll(x[0].clone(), targets()),
    );
}

#[test]
fn forward_only_backend_matches_too() {
    let x = random([2, 2, 9, 9], 8).inner();
    let got = values(fused::causal_softmax(x.clone()));
    let want = values(reference::causal_softmax(x));
    assert_close("causal softmax without autodiff", got, want, 1e-6);
}

#[test]
#[should_panic(expected = "outside the model's vocabulary")]
fn nll_rejects_targets_outside_the_vocabulary() {
    let logits = random([2, 5], 9);
    let targets =
        Tensor::<Ad, 1, Int>::from_data(TensorData::new(vec![1i64, 5], [2]), &Default::default());
    fused::nll(logits, targets);
}

#[test]
fn exp_is_accurate_and_keeps_nan_and_limits() {
    let mut worst = 0f64;
    for i in -873_000..=883_000 {
        let x = i as f32 * 1e-4;
        let (got, want) = (kernels::exp(x) as f64, (x as f64).exp());
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 1e-6, "relative error {worst:e}");
    assert_eq!(kernels::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(kernels::exp(-200.0), 0.0);
    assert!(kernels::exp(f32::NAN).is_nan());
}

#[test]
fn a_nan_score_reaches_the_softmax_output() {
    let mut scores = vec![0.5f32; 16];
    scores[5] = f32::NAN;
    kernels::causal_softmax(&mut scores, 4, 4);
    assert!(
        scores[4..8].iter().take(2).any(|v| v.is_nan()),
        "{scores:?}"
    );
}

#[test]
fn attention_matches_with_grouped_heads_and_partial_blocks() {
    // seq 70 leaves a partial 6-row block after the 64-row ones; 4 query heads share 2 kv heads.
    for (seq, heads, kv_heads) in [(70, 4, 2), (9, 3, 3), (130, 2, 1)] {
        let dim = 8;
        check(
            &format!("attention seq {seq}, {heads}/{kv_heads} heads"),
            vec![
                random([2, seq, heads, dim], 10).mul_scalar(0.35),
                random([2, seq, kv_heads, dim], 11),
                random([2, seq, kv_heads, dim], 12),
            ],
            |x| fused::attention(x[0].clone(), x[1].clone(), x[2].clone(), None),
            |x| reference::attention(x[0].clone(), x[1].clone(), x[2].clone(), None),
        );
    }
}

/// Documents of 1, 6, 63, 1 and 59 tokens in row 0 (crossing the kernel's 64-row blocks) and
/// one document in row 1.
fn packed(seq: usize) -> fucina_model::Documents<Ad> {
    let mut starts = Vec::new();
    for at in [vec![0, 1, 7, 70, 71], vec![0]] {
        for i in 0..seq {
            starts.push(*at.iter().rev().find(|&&s| s <= i).unwrap() as u32);
        }
    }
    fucina_model::Documents::new(starts, 2, seq, &Default::default()).unwrap()
}

#[test]
fn attention_in_documents_matches_the_reference_mask() {
    let (seq, heads, kv_heads, dim) = (130, 4, 2, 8);
    let docs = packed(seq);
    check(
        "attention in documents",
        vec![
            random([2, seq, heads, dim], 20).mul_scalar(0.35),
            random([2, seq, kv_heads, dim], 21),
            random([2, seq, kv_heads, dim], 22),
        ],
        |x| fused::attention(x[0].clone(), x[1].clone(), x[2].clone(), Some(&docs)),
        |x| reference::attention(x[0].clone(), x[1].clone(), x[2].clone(), Some(&docs)),
    );
}

/// Each document of a packed row attended on its own, as one causal sequence: what the packed
/// call must give for its rows, computed without any document mask.
#[test]
fn attention_in_documents_equals_each_document_alone() {
    let (seq, heads, kv_heads, dim) = (130, 4, 2, 8);
    let docs = packed(seq);
    let q = random([2, seq, heads, dim], 30).mul_scalar(0.35).inner();
    let (k, v) = (
        random([2, seq, kv_heads, dim], 31).inner(),
        random([2, seq, kv_heads, dim], 32).inner(),
    );
    let starts = docs.starts().to_vec();
    let inner = fucina_model::Documents::<Flex>::new(starts.clone(), 2, seq, &Default::default());
    let packed = fused::attention(q.clone(), k.clone(), v.clone(), Some(&inner.unwrap()));
    for b in 0..2 {
        let row = &starts[b * seq..(b + 1) * seq];
        let mut begin = 0;
        while begin < seq {
            let end = (begin..seq)
                .find(|&i| row[i] as usize != begin)
                .unwrap_or(seq);
            let part = |t: &Tensor<Flex, 4>| t.clone().slice([b..b + 1, begin..end]);
            let alone = fused::attention(part(&q), part(&k), part(&v), None);
            assert_close(
                &format!("row {b}, tokens {begin}..{end}"),
                values(part(&packed)),
                values(alone),
                1e-5,
            );
            begin = end;
        }
    }
}
