//! `fucina plot RUN_DIR`: the loss curves of a run as a PNG.

use crate::metrics::{read_events, Event, METRICS_FILE};
use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PLOT_FILE: &str = "loss.png";

/// Reads `RUN_DIR/metrics.jsonl` and writes `RUN_DIR/loss.png`. A step logged twice (a run
/// resumed from an earlier checkpoint) keeps its latest value.
pub fn plot_run(run_dir: &Path) -> Result<PathBuf> {
    let events = read_events(&run_dir.join(METRICS_FILE))?;
    let (mut train, mut val) = (BTreeMap::new(), BTreeMap::new());
    for event in events {
        match event {
            Event::Train(m) if m.loss.is_finite() => {
                train.insert(m.step, m.loss);
            }
            Event::Val { step, val_loss, .. } if val_loss.is_finite() => {
                val.insert(step, val_loss);
            }
            _ => {}
        }
    }
    if train.is_empty() {
        bail!(
            "{} holds no training steps to plot",
            run_dir.join(METRICS_FILE).display()
        );
    }
    let out = run_dir.join(PLOT_FILE);
    draw(&out, &train, &val).map_err(|e| anyhow!("cannot draw {}: {e}", out.display()))?;
    Ok(out)
}

fn draw(
    out: &Path,
    train: &BTreeMap<u64, f64>,
    val: &BTreeMap<u64, f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let last_step = *train.keys().chain(val.keys()).max().unwrap_or(&1) as f64;
    let values = || train.values().chain(val.values()).copied();
    let (lo, hi) = values().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let margin = ((hi - lo) * 0.05).max(1e-3);

    let root = BitMapBackend::new(out, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("fucina — loss", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last_step.max(1.0), (lo - margin)..(hi + margin))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("cross-entropy (nats)")
        .draw()?;
    let series =
        |m: &BTreeMap<u64, f64>| m.iter().map(|(&s, &l)| (s as f64, l)).collect::<Vec<_>>();
    chart
        .draw_series(LineSeries::new(series(train), &BLUE))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(series(val), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart.draw_series(
            series(val)
                .into_iter()
                .map(|p| Circle::new(p, 3, RED.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
