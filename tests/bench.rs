//! `fucina bench train` on the `mini` preset (the model scripts/bench-pytorch.sh compares with
//! PyTorch): its throughput and peak-RSS report, checked against what the kernel and the clock
//! say about the process from outside. The only test of this file: the kernel's record of
//! children's peak memory is per test process.

#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::Instant;

/// 4096×256 embedding and head, 4 layers of 4·256² attention, 3·256·688 MLP and two norms of
/// 256, and the final norm: 5,261,568 weights.
const MINI_PARAMS: u64 = 2 * 4096 * 256 + 4 * (4 * 256 * 256 + 3 * 256 * 688 + 2 * 256) + 256;

fn number_after<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
}

/// The largest peak RSS among the terminated children of this process, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: initialised by the successful call above. Linux reports KiB.
    let kib = unsafe { usage.assume_init() }.ru_maxrss;
    kib as u64 * 1024
}

#[test]
fn bench_train_mini_reports_throughput_and_peak_rss() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_fucina"))
        .args(["bench", "train", "--preset", "mini", "--steps", "2"])
        .env("RAYON_NUM_THREADS", "1")
        // Its scratch run directory goes under the temporary directory: keep it ours.
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("bench train:"))
        .unwrap_or_else(|| panic!("no bench train line in {stdout}"));

    let millions = format!("({:.1}M parameters)", MINI_PARAMS as f64 / 1e6);
    assert!(line.contains(&millions), "expected {millions}: {line}");
    assert!(
        line.contains("× 1 thread(s)"),
        "RAYON_NUM_THREADS=1: {line}"
    );

    // One measured step of 8×256 tokens took less than the whole process did.
    let rate: f64 = number_after(line, "median ").parse().unwrap();
    assert!(
        rate >= 2048.0 / wall,
        "{rate} tokens/s in a {wall:.1} s run: {line}"
    );

    let peak_mib: f64 = number_after(line, "peak RSS ")
        .parse()
        .unwrap_or_else(|_| panic!("peak RSS not a number of MiB on Linux: {line}"));
    // Weights, gradients and AdamW's two moments in f32 are resident at the same time.
    let state_mib = (MINI_PARAMS * 4 * 4) as f64 / (1024.0 * 1024.0);
    assert!(
        peak_mib >= state_mib,
        "{peak_mib} MiB < {state_mib:.1} MiB of training state"
    );
    // The kernel's account of the exited child: the printed peak was read before the exit.
    let kernel_mib = children_peak_rss() as f64 / (1024.0 * 1024.0);
    assert!(
        peak_mib <= kernel_mib + 0.5,
        "printed {peak_mib} MiB, kernel says {kernel_mib:.1} MiB"
    );
    assert!(
        peak_mib >= 0.9 * kernel_mib,
        "printed {peak_mib} MiB, far below the kernel's {kernel_mib:.1} MiB"
    );
}
