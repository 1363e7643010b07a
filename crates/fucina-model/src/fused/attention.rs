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

impl<'a> View<'a> {
    /// Row-major with `stride` between rows.
    fn rows(data: &'a [f32], at: usize, stride: usize) -> Self {
        Self {
            data,
            at,
            rows: stride,
            cols: 1,
        }
    }
    /// The transpose of `rows(data, at, stride)`.
    fn transposed(data: &'a [f32], at: usize, stride: usize) -> Self {
        Self {
            data,
            at,
            rows: 1,
            cols: stride,
        }
    }
}

/// Query rows `r0..r1` of `a` (laid out as q, head at `a_at`) times the transposed first `r1`
/// key rows of `b` (laid out as k, head at `b_at`), into rows `r0..r1` of the seq × seq matrix
/// at `dst_at`.
#[allow(clippy::too_many_arguments)]
fn by_keys_t(
    s: &Shape,
    (r0, r1): (usize, usize),
    a: &[f32],
    a_at: usize,
    b: &[f32],
    b_at: usize,
    dst: &mut [f32],
    dst_at: usize,
) {
    let (q_rows, kv_rows) = (s.heads * s.dim, s.kv_heads * s.dim);
    let lhs = View::rows(a, a_at + r0 * q_rows, q_rows);
    let rhs = View::transposed(b, b_at, kv_rows);
    product(
        (r1 - r0, r1, s.dim),
        dst,
        dst_at + r0 * s.seq,
        s.seq,
        false,
        lhs,
        rhs,
    );
}

/// Rows `r0..r1` of the seq × seq matrix at `m_at` times the first `r1` key rows of `b` (laid
/// out as k), into query rows `r0..r1` of `dst` (laid out as q, head at `dst_at`).
#[allow(clippy::too_many_arguments)]
fn by_keys(
    s: &Shape,
    (r0, r1): (usize, usize),
    m: &[f32],
    m_at: usize,
    b: &[f32],
    b_at: usize,
    dst: &mut [f32],
    dst_at: usize,
) {
    let (q_rows, kv_rows) = (s.heads * s.dim, s.kv_heads * s.dim);
    let lhs = View::rows(m, m_at + r0 * s.seq, s.seq);
    let rhs = View::rows(b, b_at, kv_rows);
    product(
        (r1 - r0, s.dim, r1),
        dst,
        dst_at + r0 * q_rows,
        q_rows,
        false,
        lhs,
        rhs,
    );
}

/// Key rows `c0..c1` of `dst` (laid out as k) += the transposed columns `c0..c1` of the seq ×
/// seq matrix at `m_at` times query rows `c0..` of `a` (laid out as q): only later queries
/// see a key.
#[allow(clippy::too_many_arguments)]
fn keys_by(
    s: &Shape,
    (c0, c1): (usize, usize),
    m: &[f32],
    m_at: usize,
    a: &[f32],
    a_at: usize,
    dst: &mut [f32],
    dst_at: usize,
) {
    let (n, q_rows, kv_rows) = (s.seq, s.heads * s.dim, s.kv_heads * s.dim);
    let lhs = View::transposed(m, m_at + c0 * n + c0, n);
    let rhs = View::rows(a, a_at + c0 * q_rows, q_rows);
    product(
        (c1 - c0, s.dim, n - c0),
        dst,
        dst_at + c0 * kv_rows,
        kv_rows,
        true,
        lhs,
        rhs,
    );
}

/// out = softmax(q·kᵀ, causal)·v per (batch, head), q already scaled; `probs` [batch, heads,
/// seq, seq] receives the softmax, which the backward pass needs. With `starts` ([batch·seq],
/// see `Documents`) query i sees keys `starts[i]..=i` only; the backward needs nothing more,
/// since the probabilities it reads are 0 outside them.
pub fn forward(
    s: Shape,
    (q, k, v): (&[f32], &[f32], &[f32]),
    starts: Option<&[u32]>,
    out: &mut [f32],
    probs: &mut [f32],
) {
    let n = s.seq;
    for b in 0..s.batch {
        for h in 0..s.heads {
            let (qa, ka, pa) = (s.q_at(b, h), s.kv_at(b, h), s.probs_at(b, h));
            for rows in blocks(n) {
                by_keys_t(&s, rows, q, qa, k, ka, probs, pa);
            }
            let scores = &mut probs[pa..pa + n * n];
            match starts {
                None => kernels::causal_softmax(scores, n, n),
                Some(starts) => kernels::document_softmax(scores, n, &starts[b * n..(b + 1) * n]),
            }
            for rows in blocks(n) {
                by_keys(&s, rows, probs, pa, v, ka, out, qa);
            }
        }
    }
}

/// Gradients of `forward` for the output's gradient `grad` (laid out as q): written to `dq`,
/// added to `dk` and `dv` (zeroed by the caller; heads sharing a key/value head add up).
pub fn backward(
    s: Shape,
    (q, k, v, probs): (&[f32], &[f32], &[f32], &[f32]),
    grad: &[f32],
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let n = s.seq;
    let mut ds = vec![0.0f32; n * n];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let (qa, ka, pa) = (s.q_at(b, h), s.kv_at(b, h), s.probs_at(b, h));
            // d probs = grad · vᵀ, then through the softmax.
            for rows in blocks(n) {
                by_keys_t(&s, rows, grad, qa, v, ka, &mut ds, 0);
            }
            kernels::causal_softmax_backward(&probs[pa..pa + n * n], &mut ds, n, n);
            for rows in blocks(n) {
                by_keys(&s, rows, &ds, 0, k, ka, dq, qa);
                keys_by(&s, rows, &ds, 0, q, qa, dk, ka);
                keys_by(&s, rows, probs, pa, grad, qa, dv, ka);
            }
        }
    }
}
