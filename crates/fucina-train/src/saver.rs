//! Checkpoints written while training goes on. Each rank hands the bytes of its part (rank 0 also
//! the model, state and config) to a thread of its own that writes and fsyncs them into the
//! temporary directory. The ranks learn that every writer is done through the step's loss
//! all-reduce (one more value in it), and only then rank 0, told by every rank that its files
//! are complete, writes the manifest and DONE and renames: a checkpoint is never marked complete
//! before all its parts are on disk. A save still running when the next one is due, or when the
//! run ends or is stopped by a signal, is waited for.

use crate::checkpoint::{self, Retention};
use crate::manifest::{Entry, Manifest};
use anyhow::{anyhow, bail, Result};
use fucina_dist::Communicator;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Written = std::result::Result<Vec<(String, Entry)>, String>;

struct Pending {
    step: u64,
    bytes: u64,
    started: Instant,
    writer: JoinHandle<Written>,
}

pub struct Saver {
    out_dir: PathBuf,
    retention: Retention,
    /// `[checkpoint] async`: false waits for the writers before training goes on.
    background: bool,
    pending: Option<Pending>,
    /// Test-only: `FUCINA_TEST_STALL_WRITE=STEP` stops the writer of that step's checkpoint
    /// after its first file, as a slow filesystem would, for a `kill -9` to find it writing.
    stall: Option<u64>,
}

/// A checkpoint every rank has finished writing.
pub struct Committed {
    /// Its directory (on rank 0; elsewhere where rank 0 put it).
    pub dir: PathBuf,
    pub step: u64,
    pub bytes: u64,
    /// Seconds from the hand-over to the writers until the checkpoint was complete.
    pub seconds: f64,
}

impl Saver {
    /// Rank 0 removes what a killed run left half-written, before any rank can write again
    /// (a collective of the first step separates this from every rank's first save).
    pub fn new(out_dir: &Path, retention: Retention, background: bool, root: bool) -> Result<Self> {
        if root {
            checkpoint::clear_temporaries(out_dir)?;
        }
        let stall = std::env::var("FUCINA_TEST_STALL_WRITE")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Ok(Self {
            out_dir: out_dir.to_path_buf(),
            retention,
            background,
            pending: None,
            stall,
        })
    }

    /// Whether a save is being written.
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// This rank's writer is done (1) or still writing or idle (0): summed over the ranks in
    /// the loss all-reduce, the world size means every part is on disk.
    pub fn done_flag(&self) -> f32 {
        self.pending
            .as_ref()
            .is_some_and(|p| p.writer.is_finished()) as u8 as f32
    }

    /// Hands this rank's `files` of the checkpoint for `step` to a writer thread. A collective
    /// when an earlier save is still pending (it is completed first) or saves are synchronous.
    pub fn start(
        &mut self,
        step: u64,
        files: Vec<(String, Vec<u8>)>,
        comm: &dyn Communicator,
    ) -> Result<Vec<Committed>> {
        let mut committed: Vec<Committed> = self.finish(comm)?.into_iter().collect();
        let tmp = checkpoint::temp_dir(&self.out_dir, step);
        let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
        let stall = self.stall == Some(step);
        let writer = std::thread::Builder::new()
            .name(format!("checkpoint-{step}"))
            .spawn(move || write(&tmp, &files, stall))
            .map_err(|e| anyhow!("cannot start the checkpoint writer: {e}"))?;
        self.pending = Some(Pending {
            step,
            bytes,
            started: Instant::now(),
            writer,
        });
        if !self.background {
            committed.extend(self.finish(comm)?);
        }
        Ok(committed)
    }

    /// Waits for this rank's writer, then completes the checkpoint once every rank reports its
    /// files written; `None` when nothing was pending. A collective.
    pub fn finish(&mut self, comm: &dyn Communicator) -> Result<Option<Committed>> {
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        let written = pending
            .writer
            .join()
            .unwrap_or_else(|_| Err("the writer thread panicked".into()));
        let mut reports = Vec::with_capacity(comm.size());
        let mine = serde_json::to_vec(&written)?;
        for rank in 0..comm.size() {
            let mut report = match rank == comm.rank() {
                true => mine.clone(),
                false => Vec::new(),
            };
            comm.broadcast_bytes(rank, &mut report)?;
            if comm.is_root() {
                reports.push(report);
            }
        }
        let mut outcome = Vec::new();
        let mut dir = PathBuf::new();
        if comm.is_root() {
            match self.commit(pending.step, &reports) {
                Ok(d) => dir = d,
                Err(e) => outcome = format!("{e:#}").into_bytes(),
            }
        }
        comm.broadcast_bytes(0, &mut outcome)?;
        if !outcome.is_empty() {
            bail!("{}", String::from_utf8_lossy(&outcome));
        }
        if !comm.is_root() {
            dir = checkpoint::checkpoints_dir(&self.out_dir)
                .join(format!("step_{:08}", pending.step));
        }
        Ok(Some(Committed {
            dir,
            step: pending.step,
            bytes: pending.bytes,
            seconds: pending.started.elapsed().as_secs_f64(),
        }))
    }

    /// Rank 0: the manifest of every rank's files, then DONE and the rename; on any rank's
    /// failure the temporary directory goes and the error names the rank.
    fn commit(&self, step: u64, reports: &[Vec<u8>]) -> Result<PathBuf> {
        let mut manifest = Manifest::default();
        let mut failed = Vec::new();
        for (rank, report) in reports.iter().enumerate() {
            match serde_json::from_slice::<Written>(report) {
                Ok(Ok(entries)) => manifest.files.extend(entries),
                Ok(Err(e)) => failed.push(format!("rank {rank}: {e}")),
                Err(e) => failed.push(format!("rank {rank}: unreadable report ({e})")),
            }
        }
        if !failed.is_empty() {
            let _ = std::fs::remove_dir_all(checkpoint::temp_dir(&self.out_dir, step));
            bail!(
                "checkpoint at step {step} not written; earlier checkpoints are intact: {}",
                failed.join("; ")
            );
        }
        checkpoint::commit(&self.out_dir, step, &manifest, self.retention)
    }
}

fn write(tmp: &Path, files: &[(String, Vec<u8>)], stall: bool) -> Written {
    let mut entries = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let entry = checkpoint::write_files(tmp, std::slice::from_ref(file));
        entries.extend(entry.map_err(|e| format!("{e:#}"))?);
        if i == 0 && stall {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(entries)
}
