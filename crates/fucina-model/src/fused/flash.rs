//! Causal flash attention (FlashAttention-2's algorithm) as cubecl kernels: one source for
//! CUDA, ROCm and WGPU. Layouts are fucina's: q, out [batch, seq, heads, dim], k, v
//! [batch, seq, kv_heads, dim], q already scaled by 1/√dim; each key/value head serves
//! `heads / kv_heads` query heads, read in place (never repeated).
//!
//! The forward keeps, per query row, a running max and sum of the softmax (online softmax, in
//! f32 whatever the inputs' dtype) and the f32 logsumexp for the backward, so memory is O(seq):
//! no [seq, seq] scores exist anywhere. Tiles of keys above a cube's last query row are never
//! visited (causal block skipping). The backward recomputes each probability from q, k and the
//! logsumexp: one kernel gives dq (a cube per query tile, also writing the rows' dO·O), a second
//! each query head's share of dk and dv (a cube per key tile and query head, in f32), and a
//! third sums the shares of the query heads each key/value head serves: no atomics, the same
//! result every run.
//!
//! With documents packed in a row (`starts`, see `Documents`), query i sees keys
//! `starts[b, i]..=i`: the kernels take the starts as a comptime-flagged argument, compiled
//! out when there are none, and skip the tiles no row of a cube sees on that side too.
//!
//! The loops over `dim` are unrolled, fully on CUDA and ROCm, by 8 on WGPU (`lanes`): Mesa's
//! llvmpipe (lavapipe, what CI tests on) stops a shader invocation after 65,535 loop passes in
//! all, which a rolled dim-64 loop reaches at about seq 450 and the forward unrolled by 8 at
//! about seq 3,000 (dim 64) or 1,500 (dim 128), while compiling a fully unrolled dim-128
//! kernel there takes minutes. Real GPUs' drivers have no such limit.
//!
//! Tiles: a cube is `ROWS` units, one query (or key) row each; the tile of rows it streams
//! through shared memory is as long as the device's shared memory allows (`tile`), at most
//! `MAX_TILE`. On CUDA (48 KiB+) and lavapipe (32 KiB+) that is 32–64 rows at dim 64–128.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;
use kernels::{dkv_kernel, dq_kernel, forward_kernel, group_sum_kernel};

mod kernels;

/// Units per cube: one query (or key) row each. 32 fills a warp and a wavefront half.
const ROWS: usize = 32;
const MAX_TILE: usize = 64;

/// The longest tile of rows whose `arrays` f32 arrays of `dim` (plus one f32 per row for
/// each of `scalars`) fit the device's shared memory, a power of two in 1..=`MAX_TILE`.
fn tile<R: CubeRuntime>(t: &CubeTensor<R>, dim: usize, arrays: usize, scalars: usize) -> usize {
    let bytes = t.client.properties().hardware.max_shared_memory_size;
    let per_row = 4 * (arrays * dim + scalars);
    let mut tile = MAX_TILE;
    while tile > 1 && tile * per_row > bytes {
        tile /= 2;
    }
    match scalars {
        0 => tile,
        // The dk/dv kernel's units load one row's scalars each.
        _ => tile.min(ROWS),
    }
}

/// How many steps of each loop over `dim` are unrolled (`dim` divided by it must be whole):
/// all on CUDA and ROCm, whose compilers then keep a row's arrays in registers; 8 (or the
/// largest power of two dividing `dim`) on WGPU, where lavapipe takes minutes to compile a
/// fully unrolled dim-128 kernel and counts every pass of a rolled loop against its limit.
fn lanes<R: CubeRuntime>(t: &CubeTensor<R>, dim: usize) -> usize {
    match R::name(&t.client).starts_with("wgpu") {
        false => dim,
        true => super::wgpu_lanes(dim),
    }
}

/// Whether the kernels take these shapes: q [b, s, h, d], k and v [b, s, hk, d] with hk
/// dividing h, d at most 256 (a unit's registers hold a few rows of it).
pub fn fits(q: &Shape, k: &Shape, v: &Shape) -> bool {
    let (q, k) = (q.dims::<4>(), k.dims::<4>());
    k == v.dims::<4>()
        && (q[0], q[1], q[3]) == (k[0], k[1], k[3])
        && k[2] > 0
        && q[2] % k[2] == 0
        && q[1] > 0
        && (1..=256).contains(&q[3])
}

fn count(seq: usize, heads: usize, batch: usize) -> CubeCount {
    CubeCount::Static(seq.div_ceil(ROWS) as u32, heads as u32, batch as u32)
}

/// An uninitialised tensor on `like`'s device.
pub(super) fn empty<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Shape,
    dtype: DType,
) -> CubeTensor<R> {
    empty_device_dtype::<R>(like.client.clone(), like.device.clone(), shape, dtype)
}

/// (out, logsumexp [batch, heads, seq] in f32). With `starts` ([batch, seq] in f32, see
/// `Documents`), query i sees keys `starts[b, i]..=i` only.
pub fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    starts: Option<CubeTensor<R>>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let [batch, seq, heads, dim] = q.shape().dims::<4>();
    let out = empty(&q, q.shape(), q.dtype);
    let lse = empty(&q, Shape::new([batch, heads, seq]), DType::F32);
    let (tile, lanes) = (tile(&q, dim, 2, 0), lanes(&q, dim));
    let (client, dtype) = (q.client.clone(), q.dtype);
    let docs = starts.is_some();
    // Without documents the kernel never reads `starts`: any f32 tensor binds it.
    let starts = starts.unwrap_or_else(|| lse.clone());
    forward_kernel::launch::<R>(
        &client,
        count(seq, heads, batch),
        CubeDim::new_1d(ROWS as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        starts.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dim,
        tile,
        lanes,
        docs,
        dtype.into(),
    );
    (out, lse)
}

/// (dq, dk, dv) from the forward's inputs, output and logsumexp, the output's gradient, and
/// the forward's `starts`.
pub fn backward<R: CubeRuntime>(
    [q, k, v, o, lse, grad]: [CubeTensor<R>; 6],
    starts: Option<CubeTensor<R>>,
) -> [CubeTensor<R>; 3] {
    let [q, k, v, o, lse, grad] = [q, k, v, o, lse, grad].map(into_contiguous);
    let docs = starts.is_some();
    let starts = starts.unwrap_or_else(|| lse.clone());
    let [batch, seq, heads, dim] = q.shape().dims::<4>();
    let kv_heads = k.shape().dims::<4>()[2];
    let (client, dtype) = (q.client.clone(), q.dtype);
    let delta = empty(&q, Shape::new([batch, heads, seq]), DType::F32);
    let dq = empty(&q, q.shape(), dtype);
    let (dk, dv) = (empty(&k, k.shape(), dtype), empty(&v, v.shape(), dtype));
    let [dk_share, dv_share] = [(); 2].map(|_| empty(&q, q.shape(), DType::F32));
    let cube = CubeDim::new_1d(ROWS as u32);
    let (dq_tile, dkv_tile) = (tile(&q, dim, 2, 0), tile(&q, dim, 2, 2 + docs as usize));
    let lanes = lanes(&q, dim);
    dq_kernel::launch::<R>(
        &client,
        count(seq, heads, batch),
        cube,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        o.into_tensor_arg(),
        grad.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        starts.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        dim,
        dq_tile,
        lanes,
        docs,
        dtype.into(),
    );
    dkv_kernel::launch::<R>(
        &client,
        count(seq, heads, batch),
        cube,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        grad.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        starts.into_tensor_arg(),
        dk_share.clone().into_tensor_arg(),
        dv_share.clone().into_tensor_arg(),
        dim,
        dkv_tile,
        lanes,
        docs,
        dtype.into(),
    );
    let sum = CubeDim::new_1d(256);
    let sums = cubecl::calculate_cube_count_elemwise(&client, dk.shape().num_elements(), sum);
    for (share, out) in [(dk_share, &dk), (dv_share, &dv)] {
        group_sum_kernel::launch::<R>(
            &client,
            sums.clone(),
            sum,
            share.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            heads / kv_heads,
            dtype.into(),
        );
    }
    [dq, dk, dv]
}
