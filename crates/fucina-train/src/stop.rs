//! Signals that ask a run to stop at a checkpoint: SIGTERM (the scheduler ending the job),
//! SIGUSR1 (Slurm's warning before the wall time) and SIGINT (Ctrl-C). The handler only records
//! the signal; the training loop reads it once per step and the ranks agree through the step's
//! all-reduce, so every rank stops after the same step, whichever ranks were signalled.

use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit code of `fucina train` when it stopped early at a checkpoint and should be resumed
/// (EX_TEMPFAIL from sysexits.h); job scripts resubmit themselves on it.
pub const EXIT_RESUME: i32 = 75;

static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// Installs the handlers (once per process). A second Ctrl-C exits at once, for a user who will
/// not wait for the checkpoint.
pub fn install() -> Result<()> {
    if RECEIVED.get().is_some() {
        return Ok(());
    }
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let received = Arc::new(AtomicUsize::new(0));
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, interrupted.clone())?;
    signal_hook::flag::register(SIGINT, interrupted)?;
    for signal in [SIGTERM, SIGUSR1, SIGINT] {
        signal_hook::flag::register_usize(signal, received.clone(), signal as usize)?;
    }
    let _ = RECEIVED.set(received);
    Ok(())
}

/// The signal received by this process, if any.
pub fn received() -> Option<i32> {
    RECEIVED
        .get()
        .map(|r| r.load(Ordering::Relaxed) as i32)
        .filter(|&s| s != 0)
}

pub fn name(signal: i32) -> String {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    match signal {
        SIGTERM => "SIGTERM".into(),
        SIGUSR1 => "SIGUSR1".into(),
        SIGINT => "SIGINT".into(),
        other => format!("signal {other}"),
    }
}
