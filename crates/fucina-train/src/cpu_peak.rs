//! A CPU core's f32 peak, for the MFU of CPU runs without `peak_tflops`: two FMA units of the
//! widest vectors the core has (2 FLOPs per lane), at its nominal clock. A flat guess would put
//! an AVX-512 core running the fused kernels near or above 100 %.

/// FLOP/s of one core.
pub fn core_peak_flops() -> f64 {
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| cpuinfo_mhz(&text))
        .unwrap_or(DEFAULT_MHZ);
    (2 * 2 * f32_lanes()) as f64 * mhz * 1e6
}

/// When the clock is unknown (not Linux, or a kernel that hides it).
const DEFAULT_MHZ: f64 = 2500.0;

fn f32_lanes() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return 16;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return 8;
        }
    }
    // SSE, and NEON on aarch64.
    4
}

/// The first core's `cpu MHz` line.
fn cpuinfo_mhz(text: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "cpu MHz")
        .and_then(|(_, value)| value.trim().parse::<f64>().ok())
        .filter(|mhz| *mhz > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_clock_from_cpuinfo() {
        let text =
            "processor\t: 0\nmodel name\t: Xeon\ncpu MHz\t\t: 2300.000\ncache size\t: 1 KB\n";
        assert_eq!(cpuinfo_mhz(text), Some(2300.0));
        assert_eq!(cpuinfo_mhz("processor\t: 0\n"), None);
        assert_eq!(cpuinfo_mhz("cpu MHz\t: unknown\n"), None);
    }

    #[test]
    fn peak_lies_between_sse_at_1_ghz_and_avx512_at_6_ghz() {
        let peak = core_peak_flops();
        assert!((16.0 * 1e9..=64.0 * 6e9).contains(&peak), "{peak:e}");
    }
}
