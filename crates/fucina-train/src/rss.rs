//! The process's peak resident memory, for benchmarks that compare it with other trainers.

/// Peak resident set size of this process in bytes (Linux `VmHWM`); `None` where the kernel
/// does not report it, so callers can say "unknown" rather than guess.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_bytes(&status)
}

/// `VmHWM:   123456 kB` in a `/proc/<pid>/status` text; the kernel's "kB" means KiB.
pub fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => value.checked_mul(1024),
        _ => None,
    }
}

/// `123 MiB` or `unknown`, as benchmark lines print it.
pub fn format_mib(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)),
        None => "unknown".into(),
    }
}

/// This host's memory (Linux `MemTotal`); `None` elsewhere.
pub fn host_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_high_water_mark_in_kib() {
        let status =
            "Name:\tfucina\nVmPeak:\t  900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(vm_hwm_bytes(status), Some(200 * 1024 * 1024));
        assert_eq!(format_mib(vm_hwm_bytes(status)), "200 MiB");
    }

    #[test]
    fn missing_or_odd_fields_are_unknown() {
        assert_eq!(vm_hwm_bytes("Name:\tx\nVmRSS:\t 10 kB\n"), None);
        assert_eq!(vm_hwm_bytes("VmHWM:\t 10 pages\n"), None);
        assert_eq!(vm_hwm_bytes("VmHWM:\t ten kB\n"), None);
        assert_eq!(format_mib(None), "unknown");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_peak_at_least_its_current_allocation() {
        // 64 MiB touched page by page must show in the high-water mark.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let peak = peak_rss_bytes().expect("Linux reports VmHWM");
        assert!(peak >= 64 << 20, "peak {peak} bytes");
        drop(block);
    }
}
