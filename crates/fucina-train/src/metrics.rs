//! Step metrics: one JSON line per event in `metrics.jsonl`, the same scalars as TensorBoard
//! event files, and what the user sees — a progress bar on a terminal, plain lines in a batch log.

use crate::tensorboard::{self, EventWriter};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;

pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Event {
    Train(StepMetrics),
    Val {
        step: u64,
        /// Mean loss over every evaluated target, of all sources together.
        val_loss: f64,
        elapsed: f64,
        /// With `[[data.sources]]`: each source's own validation loss, by source name.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        sources: BTreeMap<String, f64>,
        /// The targets `val_loss` is the mean over (tokens whose prediction counts).
        #[serde(default)]
        tokens: u64,
        /// With `[[data.sources]]`: each source's targets.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        source_tokens: BTreeMap<String, u64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The optimizer step just taken, counting from 1.
    pub step: u64,
    /// Mean training loss over the step's global batch.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm, before clipping.
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    /// Model FLOP utilisation against `peak_tflops`; null when the peak is unknown.
    pub mfu: Option<f64>,
    /// Seconds since the run (or the resumed run) started.
    pub elapsed: f64,
    pub step_seconds: f64,
    /// Seconds of the step spent synchronising gradients: packing, copies, all-reduce, clipping.
    pub sync_seconds: f64,
    /// Seconds blocked in communication that no copy was hiding (exposed communication).
    pub comm_seconds: f64,
    /// `comm_seconds / step_seconds`.
    pub exposed_comm: f64,
}

pub struct Reporter {
    file: Option<File>,
    bar: Option<ProgressBar>,
    /// Dropped at the first error: `metrics.jsonl` is the record that counts.
    tensorboard: Option<EventWriter<BufWriter<File>>>,
}

impl Reporter {
    /// Only rank 0 reports; other ranks get a silent reporter. Appends when resuming; with
    /// `tensorboard`, also starts a new TensorBoard event file.
    pub fn new(
        out_dir: &Path,
        active: bool,
        tensorboard: bool,
        start: u64,
        total: u64,
    ) -> Result<Self> {
        if !active {
            return Ok(Self {
                file: None,
                bar: None,
                tensorboard: None,
            });
        }
        let path = out_dir.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total).with_position(start);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("static template"),
            );
            bar
        });
        let mut reporter = Self {
            file: Some(file),
            bar,
            tensorboard: None,
        };
        if tensorboard {
            match tensorboard::create(out_dir, start + 1) {
                Ok(writer) => reporter.tensorboard = Some(writer),
                Err(e) => reporter.say(&format!("warning: no TensorBoard files: {e:#}")),
            }
        }
        Ok(reporter)
    }

    pub fn record(&mut self, event: &Event) -> Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        writeln!(file, "{}", serde_json::to_string(event)?).context("cannot write metrics")?;
        self.write_tensorboard(event);
        let line = match event {
            Event::Train(m) => format!(
                "step {} loss {:.4} lr {:.2e} grad_norm {:.3} {:.0} tok/s{}",
                m.step,
                m.loss,
                m.lr,
                m.grad_norm,
                m.tokens_per_sec,
                m.mfu
                    .map(|v| format!(" mfu {:.1}%", v * 100.0))
                    .unwrap_or_default()
            ),
            Event::Val {
                step,
                val_loss,
                sources,
                tokens,
                ..
            } => {
                let each: Vec<String> = sources
                    .iter()
                    .map(|(name, loss)| format!("{name} {loss:.4}"))
                    .collect();
                let line = format!("step {step} val_loss {val_loss:.4} over {tokens} tokens");
                match each.is_empty() {
                    true => line,
                    false => format!("{line} ({})", each.join(", ")),
                }
            }
        };
        match (&self.bar, event) {
            (Some(bar), Event::Train(m)) => {
                bar.set_position(m.step);
                bar.set_message(line);
            }
            (Some(bar), Event::Val { .. }) => bar.println(line),
            (None, _) => eprintln!("{line}"),
        }
        Ok(())
    }

    fn write_tensorboard(&mut self, event: &Event) {
        let Some(writer) = &mut self.tensorboard else {
            return;
        };
        let (step, values) = scalars(event);
        let values: Vec<(&str, f64)> = values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        if let Err(e) = writer.scalars(tensorboard::wall_time(), step, &values) {
            self.tensorboard = None;
            self.say(&format!(
                "warning: stopped writing TensorBoard files ({e}); metrics.jsonl goes on"
            ));
        }
    }

    /// A message that must not be torn by the progress bar.
    pub fn say(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None if self.file.is_some() => eprintln!("{message}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// An event's step and its TensorBoard scalars by tag.
fn scalars(event: &Event) -> (u64, Vec<(String, f64)>) {
    match event {
        Event::Train(m) => {
            let mut values = vec![
                ("train/loss".into(), m.loss),
                ("train/lr".into(), m.lr),
                ("train/grad_norm".into(), m.grad_norm),
                ("train/tokens_per_sec".into(), m.tokens_per_sec),
                ("train/step_seconds".into(), m.step_seconds),
                ("train/exposed_comm".into(), m.exposed_comm),
            ];
            values.extend(m.mfu.map(|v| ("train/mfu".into(), v)));
            (m.step, values)
        }
        Event::Val {
            step,
            val_loss,
            sources,
            ..
        } => {
            let each = sources.iter().map(|(name, v)| (format!("val/{name}"), *v));
            (
                *step,
                std::iter::once(("val/loss".into(), *val_loss))
                    .chain(each)
                    .collect(),
            )
        }
    }
}

/// Reads every event of a run's metrics file; a torn last line (a killed run) is skipped.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
