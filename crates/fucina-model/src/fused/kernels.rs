//! Row kernels on host f32 slices: one pass where burn's autodiff takes one per operation and
//! calls scalar libm `expf` per element. Each public kernel is compiled three times (AVX-512,
//! AVX2+FMA, baseline) and picks the best the CPU has at run time, so the exponential's
//! polynomial and the 16-lane reductions below vectorise.

/// Lanes of the partial sums: enough for one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the features v4 is compiled for were detected on this CPU.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for v3's features.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// eˣ to ~2 ulp, branch-free so that loops over it vectorise: 2ⁿ·p(r) with r = x − n·ln 2.
/// Below −87.3 it returns 0 (also for −∞), above 88.3 it stays at e^88.3; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let c = x.clamp(-87.3, 88.3);
    let t = c * LOG2E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n.wrapping_add(127) << 23) as u32);
    let y = p * scale;
    // NaN in, NaN out (the bit arithmetic above would not keep it); −∞ and other very
    // negative x give 0.
    if x.is_nan() {
        x
    } else if x < -87.3 {
        0.0
    } else {
        y
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            // A NaN anywhere must reach the result (the step is then skipped as non-finite).
            *a = if v > *a || v.is_nan() { v } else { *a };
        }
    }
    let mut m = tail.iter().fold(
        f32::NEG_INFINITY,
        |m, &v| if v > m || v.is_nan() { v } else { m },
    );
    for a in acc {
        m = if a > m || a.is_nan() { a } else { m };
    }
    m
}

/// Σ eˣ⁻ᵐ over `row`, replacing each element by its eˣ⁻ᵐ.
#[inline(always)]
fn sum_exp(row: &mut [f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - m);
            *a += *v;
        }
    }
    let mut s = 0.0;
    for v in chunks.into_remainder() {
        *v = exp(*v - m);
        s += *v;
    }
    s + acc.iter().sum::<f32>()
}

/// Σ eˣ⁻ᵐ over `row`, leaving it as it is.
#[inline(always)]
fn sum_exp_ro(row: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += exp(v - m);
        }
    }
    tail.iter().map(|&v| exp(v - m)).sum::<f32>() + acc.iter().sum::<f32>()
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    tail + acc.iter().sum::<f32>()
}

multiversion! {
    /// In place, over matrices [.., q, k] stored row after row: query row `i` of each matrix
    /// attends to keys `0..=i + (k − q)`; the rest of its row becomes 0.
    pub fn causal_softmax(scores: &mut [f32], q: usize, k: usize) {
        for (index, row) in scores.chunks_exact_mut(k).enumerate() {
            let visible = (index % q + 1 + k - q).min(k);
            let (live, masked) = row.split_at_mut(visible);
            let s = sum_exp(live, max(live));
            let inv = 1.0 / s;
            live.iter_mut().for_each(|v| *v *= inv);
            masked.fill(0.0);
        }
    }
}

multiversion! {
    /// `causal_softmax` of one square [n, n] matrix whose query row `i` attends to keys
    /// `starts[i]..=i` (its document's, see `Documents`); the rest of its row becomes 0, so
    /// `causal_softmax_backward` serves it unchanged.
    pub fn document_softmax(scores: &mut [f32], n: usize, starts: &[u32]) {
        for (i, row) in scores.chunks_exact_mut(n).enumerate() {
            let (before, rest) = row.split_at_mut(starts[i] as usize);
            let (live, after) = rest.split_at_mut(i + 1 - before.len());
            let s = sum_exp(live, max(live));
            let inv = 1.0 / s;
            live.iter_mut().for_each(|v| *v *= inv);
            before.fill(0.0);
            after.fill(0.0);
        }
    }
}

multiversion! {
    /// dx = y ⊙ (g − ⟨g, y⟩) per row, in place in `grad`; rows of `probs` are the softmax's
    /// output, zero past the visible keys (whose gradient is then 0 too).
    pub fn causal_softmax_backward(probs: &[f32], grad: &mut [f32], q: usize, k: usize) {
        for (index, (y, g)) in probs.chunks_exact(k).zip(grad.chunks_exact_mut(k)).enumerate() {
            let visible = (index % q + 1 + k - q).min(k);
            let (y, (g, masked)) = (&y[..visible], g.split_at_mut(visible));
            let d = dot(y, g);
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - d);
            }
            masked.fill(0.0);
        }
    }
}

multiversion! {
    /// Per row of `logits` [rows, vocab]: `lse` = log Σ eˣ and `loss` = lse − x[target].
    pub fn nll(logits: &[f32], vocab: usize, targets: &[usize], loss: &mut [f32], lse: &mut [f32]) {
        for (r, row) in logits.chunks_exact(vocab).enumerate() {
            let m = max(row);
            lse[r] = m + sum_exp_ro(row, m).ln();
            loss[r] = lse[r] - row[targets[r]];
        }
    }
}

multiversion! {
    /// d loss / d logits = g · (softmax − one-hot(target)) per row, in place in `logits`.
    pub fn nll_backward(logits: &mut [f32], vocab: usize, targets: &[usize], lse: &[f32], grad: &[f32]) {
        for (r, row) in logits.chunks_exact_mut(vocab).enumerate() {
            let (g, l) = (grad[r], lse[r]);
            row.iter_mut().for_each(|v| *v = g * exp(*v - l));
            row[targets[r]] -= g;
        }
    }
}

multiversion! {
    /// out = silu(gate) ⊙ up.
    pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &a), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = a * sigmoid(a) * u;
        }
    }
}

multiversion! {
    /// Overwrites `gate` with d/d gate and `up` with d/d up, for the output's gradient `grad`.
    pub fn swiglu_backward(gate: &mut [f32], up: &mut [f32], grad: &[f32]) {
        for ((a, u), &g) in gate.iter_mut().zip(up.iter_mut()).zip(grad) {
            let s = sigmoid(*a);
            let silu = *a * s;
            let da = g * *u * s * (1.0 + *a * (1.0 - s));
            *u = g * silu;
            *a = da;
        }
    }
}

multiversion! {
    /// Per row of `x` [rows, d]: inv = 1/√(mean x² + eps), out = x · inv ⊙ gamma.
    pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32], inv: &mut [f32]) {
        let d = gamma.len();
        for (r, (x, o)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            inv[r] = 1.0 / (dot(x, x) / d as f32 + eps).sqrt();
            let s = inv[r];
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(gamma) {
                *o = x * s * w;
            }
        }
    }
}

multiversion! {
    /// Gradients of `rms_norm`: `grad` is overwritten with d/dx; d/d gamma is added to `dgamma`.
    pub fn rms_norm_backward(x: &[f32], gamma: &[f32], inv: &[f32], grad: &mut [f32], dgamma: &mut [f32]) {
        let d = gamma.len();
        for (r, (x, g)) in x.chunks_exact(d).zip(grad.chunks_exact_mut(d)).enumerate() {
            let s = inv[r];
            let mut acc = [0.0f32; LANES];
            let (cx, cg, cw) = (x.chunks_exact(LANES), g.chunks_exact(LANES), gamma.chunks_exact(LANES));
            let mut tail = 0.0;
            for ((&x, &g), &w) in cx.remainder().iter().zip(cg.remainder()).zip(cw.remainder()) {
                tail += g * w * x;
            }
            for ((x, g), w) in cx.zip(cg).zip(cw) {
                for i in 0..LANES {
                    acc[i] += g[i] * w[i] * x[i];
                }
            }
            // Σⱼ gⱼ γⱼ xⱼ, scaled by d inv/dx = −inv³ x / d.
            let c = (tail + acc.iter().sum::<f32>()) * s * s * s / d as f32;
            for (((g, &x), &w), dw) in g.iter_mut().zip(x).zip(gamma).zip(dgamma.iter_mut()) {
                *dw += *g * x * s;
                *g = s * w * *g - c * x;
            }
        }
    }
}
