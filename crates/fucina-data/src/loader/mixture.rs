//! Which source of a weighted mixture each global sample reads.
//!
//! The global sample sequence is cut into blocks of `BLOCK` samples. Source
//! `s` owns `q_s` slots of every block, `q_s` being `BLOCK × w_s / Σw`
//! rounded by largest remainder (ties to the earlier source), so shares are
//! exact to within 1 / `BLOCK` over whole blocks. Inside a block the slots
//! are interleaved in the order of their ideal positions `(k + ½) / q_s`
//! (Sainte-Laguë), so every run of consecutive samples — a step, a few steps
//! — holds each source within about one sample of its share; randomness
//! comes from each source's own window permutations. The layout is the same
//! for every block, so the `k`-th sample of source `s` is sample
//! `block × q_s + rank of the slot in the block`: a pure function of `g`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Samples per block: weights below 1 / `BLOCK` of the total get no slot and are refused.
pub const BLOCK: u64 = 1 << 16;

/// What a checkpoint records of one source, enough to refuse a resume whose mixture would
/// read other samples: its slots per block and its windows per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub slots: u64,
    pub windows: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    slots: Vec<u64>,
    /// Slot `j` of every block: (source, rank of the slot among that source's slots).
    layout: Vec<(u32, u32)>,
}

impl Plan {
    pub(crate) fn new(weights: &[f64]) -> Result<Self> {
        let slots = slots(weights)?;
        let mut taken = vec![0u64; slots.len()];
        let layout = (0..BLOCK)
            .map(|_| {
                // The source whose next ideal position (2k + 1) / 2q_s comes first.
                let s = (0..slots.len())
                    .filter(|&s| taken[s] < slots[s])
                    .min_by(|&a, &b| {
                        let ka = (2 * taken[a] + 1) as u128 * slots[b] as u128;
                        let kb = (2 * taken[b] + 1) as u128 * slots[a] as u128;
                        ka.cmp(&kb).then(a.cmp(&b))
                    })
                    .expect("the slots fill the block");
                taken[s] += 1;
                (s as u32, (taken[s] - 1) as u32)
            })
            .collect();
        Ok(Self { slots, layout })
    }

    pub(crate) fn slots(&self) -> &[u64] {
        &self.slots
    }

    /// Global sample `g` is sample `k` of source `s`: returns `(s, k)`.
    pub(crate) fn sample(&self, g: u64) -> (usize, u64) {
        let (block, j) = (g / BLOCK, g % BLOCK);
        let (s, rank) = self.layout[j as usize];
        (s as usize, block * self.slots[s as usize] + rank as u64)
    }
}

/// Slots per block of each source, by largest remainder of `BLOCK × w_s / Σw`.
pub fn slots(weights: &[f64]) -> Result<Vec<u64>> {
    if weights.is_empty() {
        bail!("a data mixture needs at least one source");
    }
    if weights.len() as u64 > BLOCK {
        bail!("{} data sources are more than {BLOCK}", weights.len());
    }
    for (i, &w) in weights.iter().enumerate() {
        if !w.is_finite() || w <= 0.0 {
            bail!("data source {i} has weight {w}: weights must be finite and positive");
        }
    }
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| BLOCK as f64 * (w / total)).collect();
    let mut slots: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let left = BLOCK.saturating_sub(slots.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &s in order.iter().take(left as usize) {
        slots[s] += 1;
    }
    // Rounding of `w / total` could push the floors one over the block; take it back.
    for &s in order.iter().rev() {
        if slots.iter().sum::<u64>() <= BLOCK {
            break;
        }
        slots[s] = slots[s].saturating_sub(1);
    }
    if let Some(s) = slots.iter().position(|&q| q == 0) {
        bail!(
            "data source {s} has weight {} of a total {total}: below 1/{BLOCK} of the total it would \
             never be sampled; raise its weight or drop the source",
            weights[s]
        );
    }
    Ok(slots)
}
