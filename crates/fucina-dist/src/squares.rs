/// Σx² in f64, summed in f32 lanes the compiler can vectorise (a plain f32 fold cannot be).
/// The communicator computes it over each reduced bucket on its own thread, so the global
/// gradient norm costs no pass of the trainer's.
pub fn sum_of_squares(values: &[f32]) -> f64 {
    values
        .chunks(1 << 14)
        .map(|chunk| {
            let mut lanes = [0f32; 16];
            let mut exact = chunk.chunks_exact(16);
            for group in &mut exact {
                for (lane, v) in lanes.iter_mut().zip(group) {
                    *lane += v * v;
                }
            }
            let tail: f64 = exact
                .remainder()
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
        })
        .sum()
}
