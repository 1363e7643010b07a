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

/// Units per cube: one query (or key) row each. 32 fills a warp and a wavefront half.
const ROWS: usize = 32;
const MAX_TILE: usize = 64;

/// A score below any real one: WGSL has no −∞ literal.
#[cube]
fn lowest() -> f32 {
    f32::new(-1.0e30)
}

#[cube]
fn row_base<F: Float>(t: &Tensor<F>, b: usize, row: usize, head: usize) -> usize {
    b * t.stride(0) + row * t.stride(1) + head * t.stride(2)
}

/// Rows `start..start + tile` of head `head` of `t`, as f32, into `shared` (zeros past `seq`).
#[cube]
fn load_tile<F: Float>(
    t: &Tensor<F>,
    shared: &mut SharedMemory<f32>,
    b: usize,
    head: usize,
    start: usize,
    #[comptime] tile: usize,
    #[comptime] dim: usize,
) {
    let seq = t.shape(1);
    let mut e = UNIT_POS_X as usize;
    while e < tile * dim {
        let row = start + e / dim;
        let mut x = f32::new(0.0);
        if row < seq {
            x = f32::cast_from(t[row_base::<F>(t, b, row, head) + (e % dim) * t.stride(3)]);
        }
        shared[e] = x;
        e += CUBE_DIM_X as usize;
    }
}

/// Whether query `i` sees key `j`: causally, and with `docs` only from its document's first
/// token `first` on.
#[cube]
fn sees(j: usize, i: usize, first: usize, #[comptime] docs: bool) -> bool {
    if docs {
        j <= i && j >= first
    } else {
        j <= i
    }
}

/// The first token of row `row`'s document, from `starts` [batch, seq] (whole numbers in f32).
#[cube]
fn doc_start(starts: &Tensor<f32>, b: usize, row: usize) -> usize {
    usize::cast_from(starts[b * starts.stride(0) + row * starts.stride(1)])
}

/// (the first tile of keys any of the cube's query rows `first..` sees, the first key row `i`
/// sees). Starts only grow along a row, so the cube's first row has the smallest: tiles
/// ending before it are masked for every row and never loaded.
#[cube]
fn key_range(
    starts: &Tensor<f32>,
    b: usize,
    first: usize,
    i: usize,
    valid: bool,
    #[comptime] tile: usize,
    #[comptime] docs: bool,
) -> (usize, usize) {
    let mut from = 0;
    let mut si = 0;
    if docs {
        from = doc_start(starts, b, first) / tile;
        if valid {
            si = doc_start(starts, b, i);
        }
    }
    (from, si)
}

#[cube(launch)]
fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    starts: &Tensor<f32>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    #[comptime] dim: usize,
    #[comptime] tile: usize,
    #[comptime] lanes: usize,
    #[comptime] docs: bool,
    #[define(F)] _dtype: StorageType,
) {
    let seq = q.shape(1);
    let (b, h) = (CUBE_POS_Z as usize, CUBE_POS_Y as usize);
    let hk = h / (q.shape(2) / k.shape(2));
    let first = CUBE_POS_X as usize * CUBE_DIM_X as usize;
    let i = first + UNIT_POS_X as usize;
    let valid = i < seq;
    let last = min(first + CUBE_DIM_X as usize, seq) - 1;
    let (from, si) = key_range(starts, b, first, i, valid, tile, docs);

    let mut qi = Array::<f32>::new(dim);
    let mut acc = Array::<f32>::new(dim);
    let mut scores = Array::<f32>::new(tile);
    for c in 0..dim / lanes {
        #[unroll]
        for e in 0..lanes {
            let d = c * lanes + e;
            let mut x = f32::new(0.0);
            if valid {
                x = f32::cast_from(q[row_base::<F>(q, b, i, h) + d * q.stride(3)]);
            }
            qi[d] = x;
            acc[d] = f32::new(0.0);
        }
    }
    let mut ks = SharedMemory::<f32>::new(tile * dim);
    let mut vs = SharedMemory::<f32>::new(tile * dim);
    let mut m = lowest();
    let mut l = f32::new(0.0);
    for t in from..last / tile + 1 {
        let start = t * tile;
        load_tile::<F>(k, &mut ks, b, hk, start, tile, dim);
        load_tile::<F>(v, &mut vs, b, hk, start, tile, dim);
        sync_cube();
        if valid {
            let mut tile_max = lowest();
            for jj in 0..tile {
                let mut s = lowest();
                if sees(start + jj, i, si, docs) {
                    let mut dot = f32::new(0.0);
                    for c in 0..dim / lanes {
                        #[unroll]
                        for e in 0..lanes {
                            let d = c * lanes + e;
                            dot += qi[d] * ks[jj * dim + d];
                        }
                    }
                    s = dot;
                }
                scores[jj] = s;
                tile_max = max(tile_max, s);
            }
            let m_new = max(m, tile_max);
            let rescale = (m - m_new).exp();
            l *= rescale;
            for c in 0..dim / lanes {
                #[unroll]
                for e in 0..lanes {
                    let d = c * lanes + e;
                    acc[d] *= rescale;
                }
            }
            for jj in 0..tile {
                if sees(start + jj, i, si, docs) {
                    let p = (scores[jj] - m_new).exp();
                    l += p;
                    for c in 0..dim / lanes {
                        #[unroll]
                        for e in 0..lanes {
                            let d = c * lanes + e;
                            acc[d] += p * vs[jj * dim + d];
                        }
                    }
                }
            }
            m = m_new;
        }
        sync_cube();
    }
    if valid {
        let base = row_base::<F>(out, b, i, h);
        for c in 0..dim / lanes {
            #[unroll]
            for e in 0..lanes {
                let d = c * lanes + e;
                out[base + d * out.stride(3)] = F::cast_from(acc[d] / l);
            }
        }
        lse[b * lse.stride(0) + h * lse.stride(1) + i * lse.stride(2)] = m + l.ln();
    }
}

/// dq for one query row per unit, and delta = dO·O of the row for the dk/dv kernel.
#[cube(launch)]
fn dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    o: &Tensor<F>,
    grad: &Tensor<F>,
    lse: &Tensor<f32>,
    starts: &Tensor<f32>,
    delta: &mut Tensor<f32>,
    dq: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] tile: usize,
    #[comptime] lanes: usize,
    #[comptime] docs: bool,
    #[define(F)] _dtype: StorageType,
) {
    let seq = q.shape(1);
    let (b, h) = (CUBE_POS_Z as usize, CUBE_POS_Y as usize);
    let hk = h / (q.shape(2) / k.shape(2));
    let first = CUBE_POS_X as usize * CUBE_DIM_X as usize;
    let i = first + UNIT_POS_X as usize;
    let valid = i < seq;
    let last = min(first + CUBE_DIM_X as usize, seq) - 1;
    let (from, si) = key_range(starts, b, first, i, valid, tile, docs);

    let mut qi = Array::<f32>::new(dim);
    let mut gi = Array::<f32>::new(dim);
    let mut acc = Array::<f32>::new(dim);
    let mut di = f32::new(0.0);
    let mut li = f32::new(0.0);
    if valid {
        let (qb, ob, gb) = (
            row_base::<F>(q, b, i, h),
            row_base::<F>(o, b, i, h),
            row_base::<F>(grad, b, i, h),
        );
        for c in 0..dim / lanes {
            #[unroll]
            for e in 0..lanes {
                let d = c * lanes + e;
                qi[d] = f32::cast_from(q[qb + d * q.stride(3)]);
                let g = f32::cast_from(grad[gb + d * grad.stride(3)]);
                gi[d] = g;
                di += g * f32::cast_from(o[ob + d * o.stride(3)]);
            }
        }
        li = lse[b * lse.stride(0) + h * lse.stride(1) + i * lse.stride(2)];
        delta[b * delta.stride(0) + h * delta.stride(1) + i * delta.stride(2)] = di;
    }
    for c in 0..dim / lanes {
        #[unroll]
        for e in 0..lanes {
            let d = c * lanes + e;
            acc[d] = f32::new(0.0);
        }
    }
    let mut ks = SharedMemory::<f32>::new(tile * dim);
    let mut vs = SharedMemory::<f32>::new(tile * dim);
    for t in from..last / tile + 1 {
        let start = t * tile;
        load_tile::<F>(k, &mut ks, b, hk, start, tile, dim);
        load_tile::<F>(v, &mut vs, b, hk, start, tile, dim);
        sync_cube();
        if valid {
            for jj in 0..tile {
                if sees(start + jj, i, si, docs) {
                    let mut s = f32::new(0.0);
                    let mut dp = f32::new(0.0);
                    for c in 0..dim / lanes {
                        #[unroll]
                        for e in 0..lanes {
                            let d = c * lanes + e;
                            s += qi[d] * ks[jj * dim + d];
                            dp += gi[d] * vs[jj * dim + d];
                        }
                    }
                    let ds = (s - li).exp() * (dp - di);
                    for c in 0..dim / lanes {
                        #[unroll]
                        for e in 0..lanes {
                            let d = c * lanes + e;
                            acc[d] += ds * ks[jj * dim + d];
                        }
                    }
                }
            }
        }
        sync_cube();
    }
    if valid {
        let base = row_base::<F>(dq, b, i, h);
        for c in 0..dim / lanes {
            #[unroll]
            for e in 0..lanes {
                let d = c * lanes + e;
                dq[base + d * dq.stride(3)] = F::cast_from(acc[d]);
            }
        }
    }
}

/// One query head's share of dk and dv (f32, [batch, seq, heads, dim]) for one key row per
/// unit; `group_sum` adds the shares of the query heads a key/value head serves. A cube per
/// query head rather than per key/value head: GQA's heads / kv_heads times the cubes to fill
/// the device with, and each invocation's loop stays as long as one head's keys.
#[cube(launch)]
fn dkv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    grad: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    starts: &Tensor<f32>,
    dk: &mut Tensor<f32>,
    dv: &mut Tensor<f32>,
    #[comptime] dim: usize,
    #[comptime] tile: usize,
    #[comptime] lanes: usize,
    #[comptime] docs: bool,
    #[define(F)] _dtype: StorageType,
) {
    let seq = q.shape(1);
    let (b, h) = (CUBE_POS_Z as usize, CUBE_POS_Y as usize);
    let hk = h / (q.shape(2) / k.shape(2));
    let first = CUBE_POS_X as usize * CUBE_DIM_X as usize;
    let j = first + UNIT_POS_X as usize;
    let valid = j < seq;

    let mut kj = Array::<f32>::new(dim);
    let mut vj = Array::<f32>::new(dim);
    let mut dk_acc = Array::<f32>::new(dim);
    let mut dv_acc = Array::<f32>::new(dim);
    for c in 0..dim / lanes {
        #[unroll]
        for e in 0..lanes {
            let d = c * lanes + e;
            let mut x = f32::new(0.0);
            let mut y = f32::new(0.0);
            if valid {
                x = f32::cast_from(k[row_base::<F>(k, b, j, hk) + d * k.stride(3)]);
                y = f32::cast_from(v[row_base::<F>(v, b, j, hk) + d * v.stride(3)]);
            }
            kj[d] = x;
            vj[d] = y;
            dk_acc[d] = f32::new(0.0);
            dv_acc[d] = f32::new(0.0);
        }
    }
    let mut qs = SharedMemory::<f32>::new(tile * dim);
    let mut gs = SharedMemory::<f32>::new(tile * dim);
    let mut ls = SharedMemory::<f32>::new(tile);
    let mut ds_row = SharedMemory::<f32>::new(tile);
    // The query rows' document starts, read once per tile rather than once per (row, key).
    let mut ss = SharedMemory::<f32>::new(comptime!(if docs { tile } else { 1 }));
    let last = min(first + CUBE_DIM_X as usize, seq) - 1;
    let jf = f32::cast_from(j);
    // Queries before this cube's first key see none of its keys.
    let covered = seq + tile - 1;
    let tiles = covered / tile;
    for t in first / tile..tiles {
        let start = t * tile;
        if docs {
            // Starts only grow along a row: a tile whose first query's document starts after
            // this cube's last key sees none of its keys, and neither does any tile after it.
            // The same for every unit, so the whole cube leaves together.
            if doc_start(starts, b, start) > last {
                break;
            }
        }
        load_tile::<F>(q, &mut qs, b, h, start, tile, dim);
        load_tile::<F>(grad, &mut gs, b, h, start, tile, dim);
        let u = UNIT_POS_X as usize;
        if u < tile {
            let mut lv = f32::new(0.0);
            let mut dv_ = f32::new(0.0);
            if start + u < seq {
                lv = lse[b * lse.stride(0) + h * lse.stride(1) + (start + u) * lse.stride(2)];
                dv_ = delta
                    [b * delta.stride(0) + h * delta.stride(1) + (start + u) * delta.stride(2)];
            }
            ls[u] = lv;
            ds_row[u] = dv_;
            if docs {
                let mut sv = f32::new(0.0);
                if start + u < seq {
                    sv = starts[b * starts.stride(0) + (start + u) * starts.stride(1)];
                }
                ss[u] = sv;
            }
        }
        sync_cube();
        if valid {
            for ii in 0..tile {
                let i = start + ii;
                let mut seen = i < seq && j <= i;
                if docs {
                    seen = seen && jf >= ss[ii];
                }
                if seen {
                    let mut s = f32::new(0.0);
                    let mut dp = f32::new(0.0);
                    for c in 0..dim / lanes {
                        #[unroll]
                        for e in 0..lanes {
                            let d = c * lanes + e;
                            s += kj[d] * qs[ii * dim + d];
                            dp += vj[d] * gs[ii * dim + d];
                        }
                    }
                    let p = (s - ls[ii]).exp();
                    let ds = p * (dp - ds_row[ii]);
                    for c in 0..dim / lanes {
                        #[unroll]
                        for e in 0..lanes {
                            let d = c * lanes + e;
                            dv_acc[d] += p * gs[ii * dim + d];
                            dk_acc[d] += ds * qs[ii * dim + d];
                        }
                    }
                }
            }
        }
        sync_cube();
    }
    if valid {
        let (kb, vb) = (row_base::<f32>(dk, b, j, h), row_base::<f32>(dv, b, j, h));
        for c in 0..dim / lanes {
            #[unroll]
            for e in 0..lanes {
                let d = c * lanes + e;
                dk[kb + d * dk.stride(3)] = dk_acc[d];
                dv[vb + d * dv.stride(3)] = dv_acc[d];
            }
        }
    }
}

/// out[b, s, hk, d] = Σ over the group's heads g of share[b, s, hk · group + g, d], both
/// contiguous, in the dtype of `out`.
#[cube(launch)]
fn group_sum_kernel<F: Float>(
    share: &Tensor<f32>,
    out: &mut Tensor<F>,
    #[comptime] group: usize,
    #[define(F)] _dtype: StorageType,
) {
    let n = ABSOLUTE_POS;
    if n < out.len() {
        let dim = out.shape(3);
        let kv_heads = out.shape(2);
        let (row, hk, d) = (n / (kv_heads * dim), (n / dim) % kv_heads, n % dim);
        let base = row * kv_heads * group * dim + hk * group * dim + d;
        let mut sum = f32::new(0.0);
        #[unroll]
        for g in 0..group {
            sum += share[base + g * dim];
        }
        out[n] = F::cast_from(sum);
    }
}

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
