//! The flash-attention kernels on WGPU (Mesa's lavapipe in CI) against burn's composed
//! attention (`fused::reference`) on the CPU (Flex) from the same rounded inputs: outputs, and
//! the gradients of q, k and v under a weighted sum of the output; with documents packed in
//! the rows too. The reference ran on WGPU until it cost most of this file's six minutes on a
//! fresh machine, autotuning and compiling its matmuls for every shape on lavapipe.
#![cfg(all(feature = "wgpu", feature = "flex"))]

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use common::error;
use fucina_model::documents::Documents;
use fucina_model::fused::{self, reference};

mod common;

type Ad = Autodiff<Wgpu>;
type Cpu = Autodiff<Flex>;

/// The tests take turns: run side by side on two cores, lavapipe's threads fight over them and
/// the three that launch kernels took 471 s where one after the other they take 128 s.
static LAVAPIPE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    LAVAPIPE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn input(shape: [usize; 4], salt: usize) -> Tensor<Ad, 4> {
    let values = common::inputs(shape.iter().product(), salt);
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn values<B: Backend>(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// (output, dq, dk, dv) of `attend` on q, k, v in `dtype`, as f32.
fn run<B: AutodiffBackend>(
    qkv: &[Tensor<B, 4>; 3],
    dtype: DType,
    attend: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> [Vec<f32>; 4] {
    let leaves = qkv.clone().map(|t| t.cast(dtype).detach().require_grad());
    let [q, k, v] = leaves.clone();
    let out = attend(q, k, v);
    let n = out.shape().num_elements();
    let w: Vec<f32> = (0..n).map(|i| (i * 31 % 17) as f32 / 17.0 - 0.5).collect();
    let w = Tensor::<B, 4>::from_data(TensorData::new(w, out.dims()), &out.device());
    let grads = (out.clone().cast(DType::F32) * w).sum().backward();
    let [dq, dk, dv] = leaves.map(|l| values(l.grad(&grads).expect("a gradient")));
    [values(out.inner()), dq, dk, dv]
}

fn check(seq: usize, heads: usize, kv_heads: usize, dim: usize, dtype: DType, tol: f32) {
    let what = format!("{heads}/{kv_heads} heads, dim {dim}");
    check_with(seq, (heads, kv_heads, dim), None, dtype, tol, &what);
}

/// The kernels against the reference (with `docs`' mask when given) in f32 from the same
/// rounded inputs: outputs and the three gradients.
fn check_with(
    seq: usize,
    (heads, kv_heads, dim): (usize, usize, usize),
    docs: Option<&Documents<Ad>>,
    dtype: DType,
    tol: f32,
    what: &str,
) {
    let scale = 1.0 / (dim as f32).sqrt();
    let q = input([2, seq, heads, dim], 1) * scale;
    let (k, v) = (
        input([2, seq, kv_heads, dim], 2),
        input([2, seq, kv_heads, dim], 3),
    );
    let qkv = [q, k, v];
    let flash = run(&qkv, dtype, |q, k, v| {
        fused::flash_attention(q, k, v, docs)
            .unwrap_or_else(|_| panic!("the flash kernels take these shapes"))
    });
    let cpu = Default::default();
    let rounded = qkv
        .clone()
        .map(|t| Tensor::<Cpu, 4>::from_data(t.cast(dtype).cast(DType::F32).into_data(), &cpu));
    let cpu_docs = docs.map(|d| {
        let (rows, seq) = d.shape();
        Documents::<Cpu>::new(d.starts().to_vec(), rows, seq, &cpu).expect("the same starts")
    });
    let want = run(&rounded, DType::F32, |q, k, v| {
        reference::attention(q, k, v, cpu_docs.as_ref())
    });
    for (name, (got, want)) in ["out", "dq", "dk", "dv"]
        .iter()
        .zip(flash.iter().zip(&want))
    {
        let e = error(got, want);
        assert!(
            e <= tol,
            "{dtype:?} seq {seq}, {what}: {name} off by {e:e} of its largest value"
        );
    }
}

#[test]
fn flash_attention_matches_the_reference_in_f32() {
    let _turn = one_at_a_time();
    for dim in [64, 128] {
        for (heads, kv_heads) in [(4, 1), (2, 2)] {
            // Eight key blocks once per head layout; at dim 128 too, that was 18 s more.
            let long = if dim == 64 { &[512][..] } else { &[] };
            for &seq in [1, 63, 64, 130].iter().chain(long) {
                check(seq, heads, kv_heads, dim, DType::F32, 1e-4);
            }
        }
    }
}

/// f16 inputs and outputs, f32 inside: the output and gradients are rounded to f16 once
/// (2⁻¹¹ ≈ 4.9e-4 of a value), and dq sums a row's terms that were each rounded that much.
#[test]
fn flash_attention_matches_the_reference_in_f16() {
    let _turn = one_at_a_time();
    for (heads, kv_heads) in [(4, 1), (2, 2)] {
        for seq in [63, 130] {
            check(seq, heads, kv_heads, 64, DType::F16, 4e-3);
        }
    }
}

#[test]
fn without_autodiff_the_forward_matches() {
    let _turn = one_at_a_time();
    let [q, k, v] = [1, 2, 3].map(|s| input([1, 70, 2, 64], s).inner());
    let q = q / 8.0;
    let got = fused::flash_attention::<Wgpu>(q.clone(), k.clone(), v.clone(), None)
        .unwrap_or_else(|_| panic!("the flash kernels take these shapes"));
    let want = reference::attention(q, k, v, None);
    let e = error(&values(got), &values(want));
    assert!(e <= 1e-4, "off by {e:e}");
}

/// Past lavapipe's loop limit WGPU takes the composed attention (the kernel would be cut off
/// mid-row there); the shapes alone decide, so nothing runs.
#[test]
fn long_sequences_on_wgpu_take_the_composed_attention() {
    let device = Default::default();
    let at = |seq: usize, dim: usize| {
        let q = Tensor::<Ad, 4>::zeros([1, seq, 1, dim], &device);
        fused::flash_attention(q.clone(), q.clone(), q, None).is_ok()
    };
    assert!(!at(4096, 64) && !at(2048, 128));
    assert!(fused::flash_within_loop_limit(2048, 64, true));
    assert!(fused::flash_within_loop_limit(1 << 20, 128, false));
}

/// Document starts for rows of `seq` tokens, each row's documents beginning at `firsts`.
fn starts(rows: &[&[usize]], seq: usize) -> Vec<u32> {
    let mut starts = Vec::with_capacity(rows.len() * seq);
    for firsts in rows {
        let mut start = 0;
        for i in 0..seq {
            if firsts.contains(&i) {
                start = i;
            }
            starts.push(start as u32);
        }
    }
    starts
}

/// The kernels with two rows of documents, row r's beginning at `firsts[r]`, against the
/// reference's document mask; GQA 4/2 heads at dim 64.
fn check_documents(seq: usize, firsts: [&[usize]; 2], dtype: DType, tol: f32) {
    let docs = Documents::<Ad>::new(starts(&firsts, seq), 2, seq, &Default::default()).unwrap();
    let what = format!("4/2 heads, documents from {firsts:?}");
    check_with(seq, (4, 2, 64), Some(&docs), dtype, tol, &what);
}

/// Uneven documents across the kernels' tiles (32 rows a cube, 32–64 keys a tile), beside a
/// row that is one document: a one-token document, one at the last token. Then documents
/// starting past whole tiles, so that cubes skip key tiles (forward, dq: rows 96– start at
/// 70) and query tiles (dk, dv: keys 0–31 and rows 64– of the document from 33), beside a
/// row of one document per token. One length for all: each new one costs the reference
/// seconds of autotuning and compiling on lavapipe.
fn check_all_documents(dtype: DType, tol: f32) {
    let every: Vec<usize> = (0..100).collect();
    check_documents(100, [&[0, 7, 40, 41, 99], &[0]], dtype, tol);
    check_documents(100, [&[0, 33, 70], &every], dtype, tol);
}

#[test]
fn flash_attention_with_documents_matches_the_reference_in_f32() {
    let _turn = one_at_a_time();
    check_all_documents(DType::F32, 1e-4);
}

/// f16 for the half-precision path: cubecl's WGSL compiler has no bf16 (it panics on the
/// cast), and the kernels read and write both through the same generic `F`.
#[test]
fn flash_attention_with_documents_matches_the_reference_in_f16() {
    let _turn = one_at_a_time();
    check_all_documents(DType::F16, 4e-3);
}
