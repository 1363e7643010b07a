//! Wall times in Slurm's forms (`MM`, `HH:MM:SS`, `D-HH[:MM[:SS]]`) and PBS's `HH:MM:SS`.

use anyhow::{bail, Result};

/// Seconds in a wall time written as Slurm accepts it.
pub fn parse_walltime(text: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("wall time {text:?}: expected HH:MM:SS, MM, or D-HH:MM:SS");
    let (days, rest) = match text.trim().split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().map_err(|_| bad())?, rest),
        None => (0, text.trim()),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let seconds = match (days > 0 || text.contains('-'), parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    let total = days * 86_400 + seconds;
    if total == 0 {
        bail!("wall time {text:?} is zero");
    }
    Ok(total)
}

pub fn format_slurm(seconds: u64) -> String {
    let (d, rest) = (seconds / 86_400, seconds % 86_400);
    let hms = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if d > 0 {
        format!("{d}-{hms}")
    } else {
        hms
    }
}

pub fn format_pbs(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_walltime("30").unwrap(), 1800);
        assert_eq!(parse_walltime("00:30:00").unwrap(), 1800);
        assert_eq!(parse_walltime("2-00:00:00").unwrap(), 172_800);
        assert_eq!(parse_walltime("1-12").unwrap(), 129_600);
        assert!(parse_walltime("1:2:3:4").is_err());
        assert!(parse_walltime("soon").is_err());
        assert!(parse_walltime("0").is_err());
        assert_eq!(format_slurm(172_800 + 61), "2-00:01:01");
        assert_eq!(format_pbs(172_800 + 61), "48:01:01");
    }
}
