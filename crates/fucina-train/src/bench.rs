//! `fucina bench train`: training throughput of a model preset on the built-in corpus, measured
//! in this run so later changes can be compared against it.

use crate::metrics::{read_events, Event, METRICS_FILE};
use crate::{RunConfig, TrainOptions};
use anyhow::{bail, Result};

pub fn train(preset: &str, backend: &str, steps: u64) -> Result<()> {
    if steps < 2 {
        bail!("--steps must be at least 2: the first step (warm-up) is not counted");
    }
    let out_dir = std::env::temp_dir().join(format!("fucina-bench-{}", std::process::id()));
    let text = format!(
        r#"backend = "{backend}"
out_dir = "{}"
[model]
preset = "{preset}"
[data]
dir = "builtin"
seq_len = 256
[train]
steps = {steps}
global_batch_tokens = 2048
micro_batch_size = 8
lr = 1e-3
[eval]
every = 0
batches = 1
[checkpoint]
every = 0
keep = 1
"#,
        out_dir.display()
    );
    let config = RunConfig::from_toml_str(&text, &[])?;
    let params = config.model_config()?.num_parameters();
    let comm = fucina_dist::init()?;
    let result = crate::train(config, comm.as_ref(), TrainOptions::default());
    let events = read_events(&out_dir.join(METRICS_FILE));
    std::fs::remove_dir_all(&out_dir).ok();
    result?;
    let mut rates: Vec<f64> = events?
        .into_iter()
        .filter_map(|e| match e {
            Event::Train(m) if m.step > 1 => Some(m.tokens_per_sec),
            _ => None,
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "bench train: preset {preset} ({:.1}M parameters), backend {backend}, batch 8×256 tokens: median {median:.0} tokens/s over {} steps (min {:.0}, max {:.0})",
        params as f64 / 1e6,
        rates.len(),
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}
