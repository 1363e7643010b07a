//! Benchmarks that print ratios measured in one run: training throughput, the gradient-sync
//! path against a raw all-reduce, and data-parallel scaling.

use crate::backend::{dispatch, BackendKind, BackendTask};
use crate::grads::GradSync;
use crate::metrics::{read_events, Event, METRICS_FILE};
use crate::transport::{check, resolve, Probe, Transport};
use crate::{RunConfig, TrainOptions};
use anyhow::{bail, Context, Result};
use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use fucina_dist::{mpirun_command, Communicator};
use std::time::Instant;

/// What `fucina bench train` runs: a preset on the built-in corpus, one micro-batch of
/// `micro_batch` rows of `seq_len` tokens per rank and step (no accumulation).
#[derive(Debug, Clone)]
pub struct TrainBench {
    pub preset: String,
    pub backend: String,
    pub steps: u64,
    /// `train.activation_checkpointing`: `none` or `block`.
    pub checkpointing: String,
    pub seq_len: usize,
    /// Rows per rank; `None`: 8 rows over the ranks (a global batch of 8 × seq_len).
    pub micro_batch: Option<usize>,
    pub precision: String,
    /// The device's peak, for the MFU; the CPU's own is estimated when unset.
    pub peak_tflops: Option<f64>,
    /// `train.logits_chunk_mb`; `None`: the config's default.
    pub logits_chunk_mb: Option<f64>,
}

/// What cubecl's pools reserved on the run's device: they keep pages once allocated, so after
/// a run this is about its peak (GPU backends; `None` elsewhere).
struct Reserved;

impl BackendTask for Reserved {
    type Output = Option<u64>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Option<u64> {
        crate::bench_kernels::device_memory::<B>(&device).map(|(_, reserved)| reserved)
    }
}

/// `fucina bench train`: median training tokens/s of a preset on the built-in corpus, the MFU
/// and the peak RSS of the process; under a launcher, the job's throughput. The CPU backend
/// computes on rayon's global pool: `RAYON_NUM_THREADS` sizes it. On rank 0 returns the
/// figures as JSON (also printed as one line).
pub fn train(bench: &TrainBench) -> Result<Option<serde_json::Value>> {
    let TrainBench {
        preset,
        backend,
        steps,
        checkpointing,
        seq_len,
        ..
    } = bench;
    if *steps < 2 {
        bail!("--steps must be at least 2: the first step (warm-up) is not counted");
    }
    if *seq_len == 0 || bench.micro_batch == Some(0) {
        bail!("--seq-len and --micro-batch must be positive");
    }
    let comm = fucina_dist::init()?;
    let micro = bench.micro_batch.unwrap_or(8 / comm.size().clamp(1, 8));
    // The same path on every rank: the ranks' configs must agree.
    let out_dir = std::env::temp_dir().join(format!("fucina-bench-train-{preset}"));
    let peak = bench
        .peak_tflops
        .map(|t| format!("peak_tflops = {t}\n"))
        .unwrap_or_default();
    // RoPE has no position table: a preset bounded below seq_len (gpt2-124m: 1024) is the
    // same model at a longer context, as the GPU check measures it.
    let positions = crate::config::load_preset_table(preset)?
        .get("max_position_embeddings")
        .and_then(|v| v.as_integer())
        .unwrap_or(0) as usize;
    let positions = if positions < *seq_len {
        format!("max_position_embeddings = {seq_len}\n")
    } else {
        String::new()
    };
    let text = format!(
        r#"backend = "{backend}"
precision = "{precision}"
out_dir = "{}"
{peak}[model]
preset = "{preset}"
{positions}[data]
dir = "builtin"
seq_len = {seq_len}
[train]
steps = {steps}
global_batch_tokens = {global}
micro_batch_size = {micro}
lr = 1e-3
activation_checkpointing = "{checkpointing}"
{chunk}[eval]
every = 0
batches = 1
[checkpoint]
every = 0
keep = 1
"#,
        out_dir.display(),
        precision = bench.precision,
        global = micro * seq_len * comm.size(),
        chunk = bench
            .logits_chunk_mb
            .map(|mb| format!("logits_chunk_mb = {mb}\n"))
            .unwrap_or_default(),
    );
    let config = RunConfig::from_toml_str(&text, &[])?;
    let params = config.model_config()?.num_parameters();
    if comm.is_root() {
        std::fs::remove_dir_all(out_dir.join(METRICS_FILE)).ok();
        std::fs::remove_file(out_dir.join(METRICS_FILE)).ok();
    }
    comm.barrier()?;
    let kind = config.backend;
    let summary = crate::train(config, comm.as_ref(), TrainOptions::default())?;
    if !comm.is_root() {
        return Ok(None);
    }
    let device_index = fucina_dist::placement::device_index(
        comm.local_rank(),
        &fucina_dist::placement::process_env,
    );
    let device_peak = dispatch(kind, device_index, Reserved)?;
    let (mut rates, mut mfus, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    for event in read_events(&out_dir.join(METRICS_FILE))? {
        if let Event::Train(m) = event {
            losses.push(m.loss);
            if m.step > 1 {
                rates.push(m.tokens_per_sec);
                mfus.extend(m.mfu);
            }
        }
    }
    std::fs::remove_dir_all(&out_dir).ok();
    rates.sort_by(f64::total_cmp);
    let median_rate = rates[rates.len() / 2];
    let mfu = (!mfus.is_empty()).then(|| median(mfus));
    let peak_rss = crate::rss::peak_rss_bytes();
    // Peak RSS is rank 0's own: under a launcher each rank holds a full replica.
    println!(
        "bench train: preset {preset} ({:.1}M parameters), backend {backend}, precision {}, activation checkpointing {checkpointing}, \
         {} rank(s) × {} thread(s), batch {micro}×{seq_len} tokens per rank: median {median_rate:.0} tokens/s over {} steps (min {:.0}, max {:.0}){}, peak RSS {}",
        params as f64 / 1e6,
        bench.precision,
        comm.size(),
        rayon::current_num_threads(),
        rates.len(),
        rates[0],
        rates[rates.len() - 1],
        mfu.map(|m| format!(", MFU {:.1}%", m * 100.0)).unwrap_or_default(),
        crate::rss::format_mib(peak_rss)
    );
    if let Some(bytes) = device_peak {
        println!(
            "bench train: device memory reserved by cubecl (about the peak) {}, the memory model's estimate {}",
            crate::rss::format_mib(Some(bytes)),
            crate::rss::format_mib(Some(summary.predicted_bytes))
        );
    }
    Ok(Some(serde_json::json!({
        "preset": preset,
        "parameters": params,
        "backend": backend,
        "precision": bench.precision,
        "activation_checkpointing": checkpointing,
        "ranks": comm.size(),
        "micro_batch": micro,
        "seq_len": seq_len,
        "tokens_per_sec": median_rate,
        "mfu": mfu,
        "losses": losses,
        "peak_rss_bytes": peak_rss,
        "device_reserved_bytes": device_peak,
        "predicted_bytes": summary.predicted_bytes,
    })))
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
    transports: Vec<Transport>,
    backend: BackendKind,
    comm: &'a dyn Communicator,
}

/// `fucina bench allreduce`: for models of the given sizes (millions of parameters), the whole
/// gradient-sync path (device→host copies, bucketed all-reduce, global norm, clipping, upload)
/// against a raw `MPI_Allreduce` of the same bytes from host memory. Run it under mpirun/srun.
pub fn allreduce(
    sizes_m: Vec<f64>,
    bucket_mb: f64,
    iters: usize,
    transports: &[Transport],
    backend: BackendKind,
) -> Result<()> {
    if iters == 0 || sizes_m.iter().any(|&s| s.is_nan() || s <= 0.0) {
        bail!("--iters and every size must be positive");
    }
    if transports.is_empty() {
        bail!("--transport names none");
    }
    for &t in transports {
        check(t, backend)?;
    }
    let comm = fucina_dist::init()?;
    let probe = Probe::of(backend, comm.as_ref())?;
    let transports = transports
        .iter()
        .map(|&t| Ok(resolve(t, backend, &probe)?.0))
        .collect::<Result<Vec<_>>>()?;
    let task = AllReduceBench {
        sizes_m,
        bucket_mb,
        iters,
        transports,
        backend,
        comm: comm.as_ref(),
    };
    dispatch(backend, 0, task)?
}

pub(crate) fn median(mut times: Vec<f64>) -> f64 {
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
                "bench allreduce: {} rank(s), buckets of {} MB, median of {} runs; bus bandwidth = bytes × 2(n-1)/n ÷ time; ratio = raw time ÷ sync time, measured in turn",
                comm.size(),
                self.bucket_mb,
                self.iters
            );
            print!("{:>9} {:>10} {:>10}", "params", "raw ms", "raw GB/s");
            for t in &self.transports {
                print!(" {:>16} {:>7}", format!("{} ms", t.name()), "ratio");
            }
            println!();
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
            let mut raw_times = Vec::new();
            let mut sync_times = vec![Vec::new(); self.transports.len()];
            let mut syncs: Vec<GradSync> = self
                .transports
                .iter()
                .map(|t| {
                    let mut sync = GradSync::new(1.0, (self.bucket_mb * 1e6) as usize);
                    sync.packing = t.packing(self.backend);
                    sync.address.nccl = *t == Transport::Nccl;
                    sync
                })
                .collect();
            let send = vec![1.0f32; values];
            let mut recv = vec![0.0f32; values];
            // Each iteration times every transport and the raw all-reduce in turn, so that a
            // busy moment of the machine falls on all of them alike.
            for iter in 0..=self.iters {
                for (grad_sync, times) in syncs.iter_mut().zip(&mut sync_times) {
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
                    if iter > 0 {
                        times.push(sync);
                    }
                }
                comm.barrier()?;
                let t = Instant::now();
                comm.all_reduce_sum_into(&send, &mut recv)?;
                if iter > 0 {
                    raw_times.push(t.elapsed().as_secs_f64());
                }
            }
            let raw = median(raw_times);
            let bytes = values as f64 * 4.0;
            if comm.is_root() {
                print!(
                    "{:>8.1}M {:>10.2} {:>10.3}",
                    values as f64 / 1e6,
                    raw * 1e3,
                    bytes * bus_factor / raw / 1e9,
                );
                for times in sync_times {
                    let sync = median(times);
                    print!(" {:>16.2} {:>7.2}", sync * 1e3, raw / sync);
                }
                println!();
            }
        }
        Ok(())
    }
}
