//! A from-scratch f64 Llama forward pass in plain loops, written from the equations rather than
//! from the burn code: the independent reference the model is checked against.

pub struct Weights {
    pub embed: Vec<f64>,           // [vocab, hidden]
    pub layers: Vec<LayerWeights>, // per block
    pub norm: Vec<f64>,            // [hidden]
    pub head: Option<Vec<f64>>,    // [hidden, vocab]; None = tied to embed
}

pub struct LayerWeights {
    pub ln1: Vec<f64>,
    pub wq: Vec<f64>, // [hidden, heads*hd]  (y = x W)
    pub wk: Vec<f64>, // [hidden, kv*hd]
    pub wv: Vec<f64>,
    pub wo: Vec<f64>, // [heads*hd, hidden]
    pub ln2: Vec<f64>,
    pub gate: Vec<f64>, // [hidden, ffn]
    pub up: Vec<f64>,
    pub down: Vec<f64>, // [ffn, hidden]
}

pub struct Shape {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub theta: f64,
}

fn matmul(x: &[f64], rows: usize, w: &[f64], d_in: usize, d_out: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * d_out];
    for r in 0..rows {
        for i in 0..d_in {
            let xi = x[r * d_in + i];
            for o in 0..d_out {
                y[r * d_out + o] += xi * w[i * d_out + o];
            }
        }
    }
    y
}

fn rms_norm(x: &[f64], rows: usize, d: usize, gamma: &[f64], eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..d {
            y[r * d + i] = row[i] * inv * gamma[i];
        }
    }
    y
}

/// Rotates the pair (i, i + hd/2) of every head by pos · θ^(-2i/hd) — HF's rotate-half layout.
pub fn rope(x: &mut [f64], seq: usize, n_heads: usize, hd: usize, theta: f64) {
    let half = hd / 2;
    for pos in 0..seq {
        for h in 0..n_heads {
            let base = (pos * n_heads + h) * hd;
            for i in 0..half {
                let angle = pos as f64 / theta.powf(2.0 * i as f64 / hd as f64);
                let (a, b) = (x[base + i], x[base + i + half]);
                x[base + i] = a * angle.cos() - b * angle.sin();
                x[base + i + half] = b * angle.cos() + a * angle.sin();
            }
        }
    }
}

/// Causal attention of one sequence; q is [seq, heads*hd], k and v are [seq, kv*hd].
pub fn attention(q: &[f64], k: &[f64], v: &[f64], seq: usize, s: &Shape) -> Vec<f64> {
    let (hd, nh, nkv) = (s.head_dim, s.heads, s.kv_heads);
    let mut out = vec![0.0; seq * nh * hd];
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        for t in 0..seq {
            let scores: Vec<f64> = (0..=t)
                .map(|u| {
                    (0..hd)
                        .map(|d| q[(t * nh + h) * hd + d] * k[(u * nkv + kvh) * hd + d])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for (u, e) in exps.iter().enumerate() {
                for d in 0..hd {
                    out[(t * nh + h) * hd + d] += e / total * v[(u * nkv + kvh) * hd + d];
                }
            }
        }
    }
    out
}

/// Logits [seq, vocab] for one sequence.
pub fn forward(w: &Weights, s: &Shape, tokens: &[usize]) -> Vec<f64> {
    let (seq, h) = (tokens.len(), s.hidden);
    let (q_dim, kv_dim) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let mut x: Vec<f64> = tokens
        .iter()
        .flat_map(|&t| w.embed[t * h..(t + 1) * h].to_vec())
        .collect();
    for l in &w.layers {
        let n = rms_norm(&x, seq, h, &l.ln1, s.eps);
        let mut q = matmul(&n, seq, &l.wq, h, q_dim);
        let mut k = matmul(&n, seq, &l.wk, h, kv_dim);
        let v = matmul(&n, seq, &l.wv, h, kv_dim);
        rope(&mut q, seq, s.heads, s.head_dim, s.theta);
        rope(&mut k, seq, s.kv_heads, s.head_dim, s.theta);
        let a = matmul(&attention(&q, &k, &v, seq, s), seq, &l.wo, q_dim, h);
        x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
        let n = rms_norm(&x, seq, h, &l.ln2, s.eps);
        let ffn = l.gate.len() / h;
        let g = matmul(&n, seq, &l.gate, h, ffn);
        let u = matmul(&n, seq, &l.up, h, ffn);
        let act: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let m = matmul(&act, seq, &l.down, ffn, h);
        x.iter_mut().zip(&m).for_each(|(x, m)| *x += m);
    }
    let x = rms_norm(&x, seq, h, &w.norm, s.eps);
    match &w.head {
        Some(head) => matmul(&x, seq, head, h, s.vocab),
        None => {
            let mut logits = vec![0.0; seq * s.vocab];
            for t in 0..seq {
                for v in 0..s.vocab {
                    logits[t * s.vocab + v] =
                        (0..h).map(|i| x[t * h + i] * w.embed[v * h + i]).sum();
                }
            }
            logits
        }
    }
}
