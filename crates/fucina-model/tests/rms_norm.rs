//! The RMSNorm kernels on WGPU (Mesa's lavapipe in CI) against burn's composition
//! (`fused::reference::rms_norm`) on the same backend: output, and the gradients of x and gamma
//! under a weighted sum of the output.
#![cfg(feature = "wgpu")]

use burn::backend::{Autodiff, Wgpu};
use burn::prelude::*;
use burn::tensor::DType;
use common::{error, inputs};
use fucina_model::fused::{self, reference};

mod common;

type Ad = Autodiff<Wgpu>;

fn f32s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// (y, dx, dgamma) as f32.
fn run(
    rows: usize,
    h: usize,
    dtype: DType,
    norm: impl Fn(Tensor<Ad, 3>, Tensor<Ad, 1>) -> Tensor<Ad, 3>,
) -> [Vec<f32>; 3] {
    let device = Default::default();
    let shape = [1, rows, h];
    let x = Tensor::<Ad, 3>::from_data(TensorData::new(inputs(rows * h, 1), shape), &device);
    let x = x.cast(dtype).require_grad();
    let gamma = Tensor::<Ad, 1>::from_data(TensorData::new(inputs(h, 2), [h]), &device);
    let gamma = gamma.cast(dtype).require_grad();
    let y = norm(x.clone(), gamma.clone());
    let w: Vec<f32> = (0..rows * h)
        .map(|i| (i * 31 % 17) as f32 / 17.0 - 0.5)
        .collect();
    let w = Tensor::<Ad, 3>::from_data(TensorData::new(w, shape), &device);
    let grads = (y.clone().cast(DType::F32) * w).sum().backward();
    let dx = f32s(x.grad(&grads).expect("a gradient of x"));
    let dgamma = f32s(gamma.grad(&grads).expect("a gradient of gamma"));
    [f32s(y.inner()), dx, dgamma]
}

fn check(rows: usize, h: usize, dtype: DType, tol: f32) {
    let eps = 1e-5;
    let got = run(rows, h, dtype, |x, g| {
        fused::rms_norm_kernel(x, g, eps).unwrap_or_else(|_| panic!("the kernels take these"))
    });
    let want = run(rows, h, dtype, |x, g| reference::rms_norm(x, g, eps));
    for (what, (g, w)) in ["y", "dx", "dgamma"].iter().zip(got.iter().zip(&want)) {
        let e = error(g, w);
        assert!(
            e < tol,
            "{what} off by {e:e} (rows {rows}, h {h}, {dtype:?})"
        );
    }
}

#[test]
fn rms_norm_kernels_match_the_reference_in_f32() {
    // One row, rows of a width below the cube's units and not a power of two, and a cube's
    // units striding several times over a wide row.
    for (rows, h) in [(1, 256), (67, 100), (130, 688), (3, 2048)] {
        check(rows, h, DType::F32, 1e-5);
    }
}

/// f16 rounds y and dx to 2⁻¹¹ of their size; the reference also rounds its intermediate
/// products and sums dgamma in f16, which the kernels do in f32: a few f16 ulps apart.
#[test]
fn rms_norm_kernels_match_the_reference_in_f16() {
    for (rows, h) in [(67, 100), (130, 256)] {
        check(rows, h, DType::F16, 1e-2);
    }
}
