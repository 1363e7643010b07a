//! RMSNorm as cubecl kernels, one pass over a row each way (burn-fusion makes it 3 kernels
//! forward and about 10 backward: `examples/fusion_check.rs`). As Hugging Face's LlamaRMSNorm:
//! the statistics in f32, the normalised row rounded to the input's dtype and then scaled by
//! gamma in that dtype. One cube per row; its units stride over the row and add their partial
//! sums in shared memory, so a row of any width takes one launch.

use super::flash::empty;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// The most units per cube (a power of two, as the tree sum needs).
const MAX_UNITS: usize = 256;
/// Cubes per grid dimension that every backend accepts.
const GRID: usize = 65_535;

#[cube]
fn row_index() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// The sum over the cube's units of `value`, in every unit.
#[cube]
fn cube_sum(value: f32, #[comptime] units: usize) -> f32 {
    let unit = UNIT_POS_X as usize;
    let mut partial = SharedMemory::<f32>::new(units);
    partial[unit] = value;
    sync_cube();
    // The cube's width as a runtime value: a comptime one cannot change.
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            partial[unit] += partial[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
    partial[0]
}

/// y = round(x · r) · gamma with r = 1/√(mean(x²) + eps) per row, also kept (f32).
#[cube(launch)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    y: &mut Tensor<F>,
    rstd: &mut Tensor<f32>,
    eps: f32,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let (row, h) = (row_index(), gamma.len());
    let valid = row < rstd.len();
    let unit = UNIT_POS_X as usize;
    let mut squares = f32::new(0.0);
    if valid {
        let mut j = unit;
        while j < h {
            let v = f32::cast_from(x[row * h + j]);
            squares += v * v;
            j += units;
        }
    }
    let total = cube_sum(squares, units);
    if valid {
        let r = f32::new(1.0) / f32::sqrt(total / f32::cast_from(h as u32) + eps);
        let mut j = unit;
        while j < h {
            let n = F::cast_from(f32::cast_from(x[row * h + j]) * r);
            y[row * h + j] = n * gamma[j];
            j += units;
        }
        if unit == 0 {
            rstd[row] = r;
        }
    }
}

/// dx = r · (dn − n · mean(dn · n)) with n = x · r and dn = dy · gamma, and each row's share
/// dy · round(n) of dgamma (f32), summed over the rows afterwards.
#[cube(launch)]
fn backward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    rstd: &Tensor<f32>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    share: &mut Tensor<f32>,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let (row, h) = (row_index(), gamma.len());
    let valid = row < rstd.len();
    let unit = UNIT_POS_X as usize;
    let mut r = f32::new(0.0);
    let mut dot = f32::new(0.0);
    if valid {
        r = rstd[row];
        let mut j = unit;
        while j < h {
            let n = f32::cast_from(x[row * h + j]) * r;
            dot += f32::cast_from(dy[row * h + j]) * f32::cast_from(gamma[j]) * n;
            j += units;
        }
    }
    let mean = cube_sum(dot, units) / f32::cast_from(h as u32);
    if valid {
        let mut j = unit;
        while j < h {
            let at = row * h + j;
            let n = f32::cast_from(x[at]) * r;
            let g = f32::cast_from(dy[at]);
            dx[at] = F::cast_from(r * (g * f32::cast_from(gamma[j]) - n * mean));
            share[at] = g * f32::cast_from(F::cast_from(n));
            j += units;
        }
    }
}

fn grid(rows: usize) -> CubeCount {
    CubeCount::Static(
        rows.clamp(1, GRID) as u32,
        rows.div_ceil(GRID).max(1) as u32,
        1,
    )
}

fn units(h: usize) -> usize {
    h.next_power_of_two().clamp(1, MAX_UNITS)
}

/// (y, r [rows] in f32) for x [..., h] and gamma [h] of x's dtype.
pub fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    eps: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let h = gamma.shape().num_elements();
    let rows = x.shape().num_elements() / h.max(1);
    let y = empty(&x, x.shape(), x.dtype);
    let rstd = empty(&x, Shape::new([rows]), DType::F32);
    let (client, dtype, units) = (x.client.clone(), x.dtype, units(h));
    forward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        eps,
        units,
        dtype.into(),
    );
    (y, rstd)
}

/// (dx, each row's share of dgamma [rows, h] in f32) from x, gamma, r and dy.
pub fn backward<R: CubeRuntime>(
    [x, gamma, rstd, dy]: [CubeTensor<R>; 4],
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [x, gamma, rstd, dy] = [x, gamma, rstd, dy].map(into_contiguous);
    let h = gamma.shape().num_elements();
    let rows = rstd.shape().num_elements();
    let dx = empty(&x, x.shape(), x.dtype);
    let share = empty(&x, Shape::new([rows, h]), DType::F32);
    let (client, dtype, units) = (x.client.clone(), x.dtype, units(h));
    backward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        rstd.into_tensor_arg(),
        dy.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        share.clone().into_tensor_arg(),
        units,
        dtype.into(),
    );
    (dx, share)
}

/// Whether the kernels take x and gamma: gamma [h] with h the last dimension of x.
pub fn fits(x: &Shape, gamma: &Shape) -> bool {
    let (x, gamma) = (x.as_slice(), gamma.as_slice());
    matches!((x.last(), gamma), (Some(&h), &[g]) if h == g && h > 0)
}
