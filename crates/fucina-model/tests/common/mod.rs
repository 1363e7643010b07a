//! What the kernel tests on WGPU share.

/// Deterministic values in about ±2, different for each `salt`, made on the host (the
/// backend's RNG is shared by tests running in parallel).
pub fn inputs(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 1009) as f32 / 252.0 - 2.0)
        .collect()
}

/// The worst difference relative to the largest reference value.
pub fn error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    (got.iter().zip(want))
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0f32, f32::max)
}
