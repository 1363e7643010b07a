//! Benchmarks that print ratios measured in one run: training throughput, the gradient-sync
//! path against a raw all-reduce, and data-parallel scaling.

use crate::backend::{dispatch, BackendKind, BackendTask};
use crate::grads::GradSync;
use crate::metrics::{read_events, Event, METRICS_FILE};
use crate::{RunConfig, TrainOptions};
use anyhow::{bail, Context, Result};
use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use fucina_dist::{mpirun_command, Communicator};
use std::time::Instant;

/// `fucina bench train`: median training tokens/s of a preset on the built-in corpus, with a
/// global batch of 8 × 256 tokens, and the peak RSS of the process. Under a launcher, the job's
/// throughput. The CPU backend computes on rayon's global pool: `RAYON_NUM_THREADS` sizes it.
/// `checkpointing` is `train.activation_checkpointing` (`none` or `block`).
pub fn train(preset: &str, backend: &str, steps: u64, checkpointing: &str) -> Result<Option<f64>> {
    if steps < 2 {
        bail!("--steps must be at least 2: the first step (warm-up) is not counted");
    }
    let comm = fucina_dist::init()?;
    // The same path on every rank: the ranks' configs must agree.
    let out_dir = std::env::temp_dir().join(format!("fucina-bench-train-{preset}"));
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
micro_batch_size = {micro}
lr = 1e-3
activation_checkpointing = "{checkpointing}"
[eval]
every = 0
batches = 1
[checkpoint]
every = 0
keep = 1
"#,
        out_dir.display(),
        micro = 8 / comm.size().clamp(1, 8)
    );
    let config = RunConfig::from_toml_str(&text, &[])?;
    let params = config.model_config()?.num_parameters();
    if comm.is_root() {
        std::fs::remove_dir_all(out_dir.join(METRICS_FILE)).ok();
        std::fs::remove_file(out_dir.join(METRICS_FILE)).ok();
    }
    comm.barrier()?;
    crate::train(config, comm.as_ref(), TrainOptions::default())?;
    if !comm.is_root() {
        return Ok(None);
    }
    let mut rates: Vec<f64> = read_events(&out_dir.join(METRICS_FILE))?
        .into_iter()
        .filter_map(|e| match e {
            Event::Train(m) if m.step > 1 => Some(m.tokens_per_sec),
            _ => None,
        })
        .collect();
    std::fs::remove_dir_all(&out_dir).ok();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    // Peak RSS is rank 0's own: under a launcher each rank holds a full replica.
    println!(
        "bench train: preset {preset} ({:.1}M parameters), backend {backend}, activation checkpointing {checkpointing}, \
         {} rank(s) × {} thread(s), batch 8×256 tokens: median {median:.0} tokens/s over {} steps (min {:.0}, max {:.0}), peak RSS {}",
        params as f64 / 1e6,
        comm.size(),
        rayon::current_num_threads(),
        rates.len(),
        rates[0],
        rates[rates.len() - 1],
        crate::rss::format_mib(crate::rss::peak_rss_bytes())
    );
    Ok(Some(median))
}

/// `fucina bench scaling`: `bench train` on one process and under `mpirun -np N`, one thread
/// per rank, and the ratio of their throughputs.
pub fn scaling(ranks: usize, preset: &str, steps: u64) -> Result<()> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("the fucina path is not UTF-8")?;
    let args = [
        "bench",
        "train",
        "--preset",
        preset,
        "--steps",
        &steps.to_string(),
    ];
    let run = |mut command: std::process::Command| -> Result<f64> {
        let out = command.args(args).env("RAYON_NUM_THREADS", "1").output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{command:?} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        print!("{stdout}");
        let rate = stdout
            .split("median ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        rate.context("no median in the output of bench train")
    };
    let single = run(std::process::Command::new(exe))?;
    let multi = run(mpirun_command(ranks, exe))?;
    println!(
        "bench scaling: {ranks} ranks × 1 thread: {multi:.0} tokens/s; 1 rank × 1 thread: {single:.0} tokens/s; \
         speed-up {:.2}× (ideal {ranks}×)",
        multi / single
    );
    Ok(())
}

#[derive(Module, Debug)]
struct Synthetic<B: Backend> {
    layers: Vec<Param<Tensor<B, 2>>>,
}

struct AllReduceBench<'a> {
    sizes_m: Vec<f64>,
    bucket_mb: f64,
    iters: usize,
    comm: &'a dyn Communicator,
}

/// `fucina bench allreduce`: for models of the given sizes (millions of parameters), the whole
/// gradient-sync path (device→host copies, bucketed all-reduce, global norm, clipping, upload)
/// against a raw `MPI_Allreduce` of the same bytes from host memory. Run it under mpirun/srun.
pub fn allreduce(
    sizes_m: Vec<f64>,
    bucket_mb: f64,
    iters: usize,
    backend: BackendKind,
) -> Result<()> {
    if iters == 0 || sizes_m.iter().any(|&s| s.is_nan() || s <= 0.0) {
        bail!("--iters and every size must be positive");
    }
    let comm = fucina_dist::init()?;
    let task = AllReduceBench {
        sizes_m,
        bucket_mb,
        iters,
        comm: comm.as_ref(),
    };
    dispatch(backend, 0, task)?
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

impl BackendTask for AllReduceBench<'_> {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let comm = self.comm;
        let n = comm.size() as f64;
        let bus_factor = 2.0 * (n - 1.0) / n;
        if comm.is_root() {
            println!(
                "bench allreduce: {} rank(s), buckets of {} MB, median of {} runs; bus bandwidth = bytes × 2(n-1)/n ÷ time",
                comm.size(),
                self.bucket_mb,
                self.iters
            );
            println!(
                "{:>9} {:>10} {:>12} {:>10} {:>12} {:>7}",
                "params", "sync ms", "sync GB/s", "raw ms", "raw GB/s", "ratio"
            );
        }
        for size_m in self.sizes_m {
            let total = (size_m * 1e6) as usize;
            let width = 1024;
            let rows: Vec<usize> = (0..total.div_ceil(width * 1024))
                .map(|i| (total - i * width * 1024).min(width * 1024) / width)
                .filter(|&r| r > 0)
                .collect();
            let model = Synthetic::<B> {
                layers: rows
                    .iter()
                    .map(|&r| Param::from_tensor(Tensor::zeros([r, width], &device)))
                    .collect(),
            };
            let values: usize = rows.iter().sum::<usize>() * width;
            let (mut sync_times, mut raw_times) = (Vec::new(), Vec::new());
            let mut grad_sync = GradSync::new(1.0, (self.bucket_mb * 1e6) as usize);
            let send = vec![1.0f32; values];
            let mut recv = vec![0.0f32; values];
            for iter in 0..=self.iters {
                let mut grads = GradientsParams::new();
                for (param, &r) in model.layers.iter().zip(&rows) {
                    let g = Tensor::<B::InnerBackend, 2>::random(
                        [r, width],
                        Distribution::Default,
                        &device,
                    );
                    grads.register::<B::InnerBackend, 2>(param.id, g);
                }
                comm.barrier()?;
                let t = Instant::now();
                let (grads, _) = grad_sync.run(&model, grads, comm)?;
                let sync = t.elapsed().as_secs_f64();
                drop(grads);
                comm.barrier()?;
                let t = Instant::now();
                comm.all_reduce_sum_into(&send, &mut recv)?;
                let raw = t.elapsed().as_secs_f64();
                if iter > 0 {
                    sync_times.push(sync);
                    raw_times.push(raw);
                }
            }
            let (sync, raw) = (median(sync_times), median(raw_times));
            let bytes = values as f64 * 4.0;
            if comm.is_root() {
                println!(
                    "{:>8.1}M {:>10.2} {:>12.3} {:>10.2} {:>12.3} {:>7.2}",
                    values as f64 / 1e6,
                    sync * 1e3,
                    bytes * bus_factor / sync / 1e9,
                    raw * 1e3,
                    bytes * bus_factor / raw / 1e9,
                    raw / sync
                );
            }
        }
        Ok(())
    }
}
