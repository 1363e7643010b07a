//! Causal attention on host f32 buffers, straight from and to the projections' [batch, seq,
//! heads, head_dim] layout: no transposes into [batch, heads, seq, head_dim] and back (burn
//! copies for each, forwards and backwards), and query blocks multiply only the keys they see,
//! which skips ~40% of the score and value products.

use super::kernels;
use gemm::{gemm, Parallelism};

/// Query rows per block: smaller blocks skip more masked products, larger ones run gemm better.
const BLOCK: usize = 64;

/// Sizes of one call: q is [batch, seq, heads, dim], k and v [batch, seq, kv_heads, dim].
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
}

impl Shape {
    pub fn q_len(&self) -> usize {
        self.batch * self.seq * self.heads * self.dim
    }
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq * self.kv_heads * self.dim
    }
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
    fn q_at(&self, b: usize, h: usize) -> usize {
        (b * self.seq * self.heads + h) * self.dim
    }
    fn kv_at(&self, b: usize, h: usize) -> usize {
        let group = self.heads / self.kv_heads;
        (b * self.seq * self.kv_heads + h / group) * self.dim
    }
    fn probs_at(&self, b: usize, h: usize) -> usize {
        (b * self.heads + h) * self.seq * self.seq
    }
}

/// A matrix inside a buffer: element (i, j) at `at + i·rows + j·cols`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    at: usize,
    rows: usize,
    cols: usize,
}

/// dst[m × n] (+)= lhs[m × k] · rhs[k × n], with dst at `at` with row stride `dst_rows`.
#[allow(clippy::too_many_arguments)]
fn product(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    at: usize,
    dst_rows: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
) {
    let last = |at: usize, rows: usize, cols: usize, r: usize, c: usize| {
        at + (r.max(1) - 1) * rows + (c.max(1) - 1) * cols
    };
    // Every element gemm touches must lie inside its buffer: gemm takes raw pointers.
    assert!(last(at, dst_rows, 1, m, n) < dst.len().max(1));
    assert!(last(lhs.at, lhs.rows, lhs.cols, m, k) < lhs.data.len().max(1));
    assert!(last(rhs.at, rhs.rows, rhs.cols, k, n) < rhs.data.len().max(1));
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above bound every index gemm reads or writes; `dst` is borrowed
    // mutably and does not alias `lhs` or `rhs`, which are shared borrows.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(at),
            1,
            dst_rows as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.at),
            lhs.cols as isize,
            lhs.rows as isize,
            rhs.data.as_ptr().add(rhs.at),
            rhs.cols as isize,
            rhs.rows as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

fn blocks(seq: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..seq)
        .step_by(BLOCK)
        .map(move |r0| (r0, (r0 + BLOCK).min(seq)))
}

/// out = softmax(q·kᵀ, causal)·v per (batch, head), q already scaled; `probs` [batch, heads,
/// seq, seq] receives the softmax, which the backward pass needs.
pub fn forward(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], probs: &mut [f32]) {
    let (n, d) = (s.seq, s.dim);
    let (q_rows, kv_rows) = (s.heads * d, s.kv_heads * d);
    for b in 0..s.batch {
        for h in 0..s.heads {
            let (qa, ka, pa) = (s.q_at(b, h), s.kv_at(b, h), s.probs_at(b, h));
            for (r0, r1) in blocks(n) {
                let lhs = View {
                    data: q,
                    at: qa + r0 * q_rows,
                    rows: q_rows,
                    cols: 1,
                };
                let rhs = View {
                    data: k,
                    at: ka,
                    rows: 1,
                    cols: kv_rows,
                };
                product((r1 - r0, r1, d), probs, pa + r0 * n, n, false, lhs, rhs);
            }
            kernels::causal_softmax(&mut probs[pa..pa + n * n], n, n);
            for (r0, r1) in blocks(n) {
                let lhs = View {
                    data: probs,
                    at: pa + r0 * n,
                    rows: n,
                    cols: 1,
                };
                let rhs = View {
                    data: v,
                    at: ka,
                    rows: kv_rows,
                    cols: 1,
                };
                product(
                    (r1 - r0, d, r1),
                    out,
                    qa + r0 * q_rows,
                    q_rows,
                    false,
                    lhs,
                    rhs,
                );
            }
        }
    }
}

/// Gradients of `forward` for the output's gradient `grad` (laid out as q): written to `dq`,
/// added to `dk` and `dv` (zeroed by the caller; heads sharing a key/value head add up).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    s: Shape,
    (q, k, v, probs): (&[f32], &[f32], &[f32], &[f32]),
    grad: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (n, d) = (s.seq, s.dim);
    let (q_rows, kv_rows) = (s.heads * d, s.kv_heads * d);
    let mut ds = vec![0.0f32; n * n];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let (qa, ka, pa) = (s.q_at(b, h), s.kv_at(b, h), s.probs_at(b, h));
            // d probs = grad · vᵀ, then through the softmax.
            for (r0, r1) in blocks(n) {
                let lhs = View {
                    data: grad,
                    at: qa + r0 * q_rows,
                    rows: q_rows,
                    cols: 1,
                };
                let rhs = View {
                    data: v,
                    at: ka,
                    rows: 1,
                    cols: kv_rows,
                };
                product((r1 - r0, r1, d), &mut ds, r0 * n, n, false, lhs, rhs);
            }
            kernels::causal_softmax_backward(&probs[pa..pa + n * n], &mut ds, n, n);
            for (r0, r1) in blocks(n) {
                // dq rows see the keys before them.
                let lhs = View {
                    data: &ds,
                    at: r0 * n,
                    rows: n,
                    cols: 1,
                };
                let rhs = View {
                    data: k,
                    at: ka,
                    rows: kv_rows,
                    cols: 1,
                };
                product(
                    (r1 - r0, d, r1),
                    dq,
                    qa + r0 * q_rows,
                    q_rows,
                    false,
                    lhs,
                    rhs,
                );
                // dk and dv rows are seen by the queries after them: transposed products.
                let (c0, c1) = (r0, r1);
                let at = ka + c0 * kv_rows;
                let lhs = View {
                    data: &ds,
                    at: c0 * n + c0,
                    rows: 1,
                    cols: n,
                };
                let rhs = View {
                    data: q,
                    at: qa + c0 * q_rows,
                    rows: q_rows,
                    cols: 1,
                };
                product((c1 - c0, d, n - c0), dk, at, kv_rows, true, lhs, rhs);
                let lhs = View {
                    data: probs,
                    at: pa + c0 * n + c0,
                    rows: 1,
                    cols: n,
                };
                let rhs = View {
                    data: grad,
                    at: qa + c0 * q_rows,
                    rows: q_rows,
                    cols: 1,
                };
                product((c1 - c0, d, n - c0), dv, at, kv_rows, true, lhs, rhs);
            }
        }
    }
}
