//! A thread that ends the whole job when a phase of training (a collective above all) takes
//! longer than `[dist] timeout_seconds`: a rank stuck in an all-reduce because another died or
//! hangs would otherwise burn the allocation silently. The message names rank, phase and step.
//! Start-up (the config check, opening the data, loading and broadcasting the model, the
//! first step with its kernel compilation) is watched too, under the longer
//! `[dist] startup_timeout_seconds`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Phase {
    name: &'static str,
    step: u64,
    since: Instant,
    /// Zero: not watched.
    limit: Duration,
    knob: &'static str,
}

pub struct Watchdog {
    current: Arc<Mutex<Option<Phase>>>,
    timeout: Duration,
    startup: Duration,
}

impl Watchdog {
    /// A zero limit leaves its phases unwatched.
    pub fn start(timeout: Duration, startup: Duration, rank: usize) -> Self {
        let current: Arc<Mutex<Option<Phase>>> = Arc::new(Mutex::new(None));
        let shortest = [timeout, startup]
            .into_iter()
            .filter(|t| !t.is_zero())
            .min();
        if let Some(shortest) = shortest {
            let watched = current.clone();
            let poll = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
            std::thread::spawn(move || loop {
                std::thread::sleep(poll);
                // The trainer dropped its watchdog: nothing left to watch.
                if Arc::strong_count(&watched) == 1 {
                    return;
                }
                let guard = watched.lock().unwrap_or_else(|e| e.into_inner());
                let late = |p: &&Phase| !p.limit.is_zero() && p.since.elapsed() > p.limit;
                if let Some(p) = guard.as_ref().filter(late) {
                    let at = match p.step {
                        0 => "during start-up".to_string(),
                        step => format!("at step {step}"),
                    };
                    // One write, so ranks aborting together do not interleave their lines.
                    let line = format!(
                        "error: rank {rank}: watchdog: {} {at} has not finished after {} s \
                         ([dist] {}); aborting the job\n",
                        p.name,
                        p.limit.as_secs_f64(),
                        p.knob
                    );
                    eprint!("{line}");
                    fucina_dist::abort_job(3);
                }
            });
        }
        Self {
            current,
            timeout,
            startup,
        }
    }

    /// Marks the start of a phase of training; the previous one ends.
    pub fn enter(&self, name: &'static str, step: u64) {
        self.set(name, step, self.timeout, "timeout_seconds");
    }

    /// Marks the start of a phase of start-up (`step` 0) or of the first step, which compiles
    /// the kernels: both under the start-up limit.
    pub fn enter_startup(&self, name: &'static str, step: u64) {
        self.set(name, step, self.startup, "startup_timeout_seconds");
    }

    fn set(&self, name: &'static str, step: u64, limit: Duration, knob: &'static str) {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(Phase {
            name,
            step,
            since: Instant::now(),
            limit,
            knob,
        });
    }

    pub fn idle(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Test-only knob: `FUCINA_TEST_HANG_STEP=N` makes the last rank stop responding in step N
/// (0: while opening the data). Read once, before the loop.
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
