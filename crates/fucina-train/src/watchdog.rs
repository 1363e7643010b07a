//! A thread that ends the whole job when a phase of training (a collective above all) takes
//! longer than `[dist] timeout_seconds`: a rank stuck in an all-reduce because another died or
//! hangs would otherwise burn the allocation silently. The message names rank, phase and step.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Phase {
    name: &'static str,
    step: u64,
    since: Instant,
}

pub struct Watchdog {
    current: Arc<Mutex<Option<Phase>>>,
}

impl Watchdog {
    /// `timeout` zero disables it.
    pub fn start(timeout: Duration, rank: usize) -> Self {
        let current: Arc<Mutex<Option<Phase>>> = Arc::new(Mutex::new(None));
        if !timeout.is_zero() {
            let watched = current.clone();
            let poll = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
            std::thread::spawn(move || loop {
                std::thread::sleep(poll);
                // The trainer dropped its watchdog: nothing left to watch.
                if Arc::strong_count(&watched) == 1 {
                    return;
                }
                let guard = watched.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = guard.as_ref().filter(|p| p.since.elapsed() > timeout) {
                    // One write, so ranks aborting together do not interleave their lines.
                    let line = format!(
                        "error: rank {rank}: watchdog: {} at step {} has not finished after {} s \
                         ([dist] timeout_seconds); aborting the job\n",
                        p.name,
                        p.step,
                        timeout.as_secs_f64()
                    );
                    eprint!("{line}");
                    fucina_dist::abort_job(3);
                }
            });
        }
        Self { current }
    }

    /// Marks the start of a phase; the previous one ends.
    pub fn enter(&self, name: &'static str, step: u64) {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(Phase {
            name,
            step,
            since: Instant::now(),
        });
    }

    pub fn idle(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Test-only knob: `FUCINA_TEST_HANG_STEP=N` makes the last rank stop responding in step N.
/// Read once, before the loop.
pub fn hang_step(rank: usize, size: usize) -> Option<u64> {
    let step = std::env::var("FUCINA_TEST_HANG_STEP").ok()?;
    (rank + 1 == size)
        .then(|| step.trim().parse().ok())
        .flatten()
}

pub fn hang_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
