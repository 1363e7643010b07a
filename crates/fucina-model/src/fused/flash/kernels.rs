//! The flash-attention kernels themselves (see `flash` for the algorithm, the tiles and the
//! unrolling); `flash` sizes, binds and launches them.

use cubecl::prelude::*;

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
pub(super) fn forward_kernel<F: Float>(
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
pub(super) fn dq_kernel<F: Float>(
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
pub(super) fn dkv_kernel<F: Float>(
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
pub(super) fn group_sum_kernel<F: Float>(
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
