//! `fucina bench …`: the benchmark subcommands. Each prints its figures, and with `--json FILE`
//! also writes them for scripts (scripts/gpu-check.sh collects them into one table).

use anyhow::{Context, Result};
use clap::Subcommand;
use fucina_train::bench::TrainBench;
use fucina_train::bench_kernels::{self, AttentionShape};
use fucina_train::config::Precision;
use fucina_train::BackendKind;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training tokens/s and MFU of a model preset on the built-in corpus (under mpirun: of the
    /// job) and the peak RSS of the process. RAYON_NUM_THREADS sets the CPU threads.
    Train {
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value = "cpu")]
        backend: String,
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// `block` recomputes each decoder block in the backward pass (see
        /// train.activation_checkpointing), to measure its memory saving and slowdown.
        #[arg(long, default_value = "none")]
        activation_checkpointing: String,
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Rows per rank and step [default: 8 rows over the ranks].
        #[arg(long)]
        micro_batch: Option<usize>,
        /// f32, bf16 (f32 masters, bf16 compute) or bf16-pure.
        #[arg(long, default_value = "f32")]
        precision: String,
        /// The device's dense peak in TFLOP/s, for the MFU [default: estimated on the CPU].
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// train.logits_chunk_mb: MiB of f32 logits per chunk of the head and loss; 0 takes
        /// all rows at once [default: the config's, 256].
        #[arg(long)]
        logits_chunk_mb: Option<f64>,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Greedy generation tokens/s of a preset (fresh weights) on the CPU, with the key/value
    /// cache and recomputing the whole context for every token, and their ratio.
    Generate {
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value_t = 64)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 64)]
        tokens: usize,
    },
    /// The gradient-sync path against a raw MPI_Allreduce of the same bytes; run under mpirun/srun.
    Allreduce {
        /// Model sizes in millions of parameters.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        sizes: Vec<f64>,
        #[arg(long, default_value_t = 25.0)]
        bucket_mb: f64,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Transports to measure, each against the same raw all-reduce.
        #[arg(long, value_delimiter = ',', default_value = "mpi-host,mpi-device")]
        transport: Vec<String>,
        /// Where the gradients are: cpu, cuda, rocm (mpi-device and nccl take their memory).
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Exposed communication projected onto a cluster, from a measured compute time per step,
    /// the model's bucket plan and a stated network (nothing is run).
    Project {
        /// Preset, model TOML or HF config.json.
        #[arg(long, default_value = "small")]
        model: String,
        /// Compute seconds per step, measured on one GPU (or give --metrics).
        #[arg(long, conflicts_with = "metrics")]
        compute_seconds: Option<f64>,
        /// A run's metrics.jsonl: the median step time less synchronisation.
        #[arg(long)]
        metrics: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 25.0)]
        bucket_mb: f64,
        /// Injection bandwidth per node, Gb/s (4 × 200 Gb/s = 800).
        #[arg(long, default_value_t = 800.0)]
        node_gbps: f64,
        #[arg(long, default_value_t = 4)]
        gpus_per_node: usize,
        /// Per GPU within a node (NVLink 4: 3600 Gb/s).
        #[arg(long, default_value_t = 3600.0)]
        intra_gbps: f64,
        #[arg(long, default_value_t = 5.0)]
        latency_us: f64,
        /// Share of the compute that is the backward pass.
        #[arg(long, default_value_t = 0.67)]
        backward_share: f64,
        #[arg(long, value_delimiter = ',', default_value = "8,32,256")]
        gpus: Vec<usize>,
    },
    /// Training tokens/s of N ranks against one, one thread each (starts mpirun itself).
    Scaling {
        #[arg(long, default_value_t = 2)]
        ranks: usize,
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value_t = 6)]
        steps: u64,
    },
    /// An HF model directory's loss on a backend against the one transformers computed
    /// (its reference.safetensors, as in tests/fixtures/hf); fails outside the tolerance.
    Hf {
        model: PathBuf,
        #[arg(long, default_value = "cpu")]
        backend: String,
        #[arg(long, default_value = "f32")]
        precision: String,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Causal attention forward and forward+backward as the model runs it: time and TFLOP/s.
    Attention {
        #[arg(long, default_value = "cpu")]
        backend: String,
        #[arg(long, default_value = "f32")]
        precision: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 512)]
        seq: usize,
        #[arg(long, default_value_t = 32)]
        heads: usize,
        #[arg(long, default_value_t = 8)]
        kv_heads: usize,
        #[arg(long, default_value_t = 64)]
        head_dim: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Also time burn's composed attention (`fused::reference`, O(seq²) memory) on the
        /// same inputs and print the kernel's speed-up over it.
        #[arg(long)]
        compare: bool,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// A square matmul: time and TFLOP/s.
    Matmul {
        #[arg(long, default_value = "cpu")]
        backend: String,
        #[arg(long, default_value = "f32")]
        precision: String,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

pub fn write_json(path: Option<&Path>, value: &serde_json::Value) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Train {
            preset,
            backend,
            steps,
            activation_checkpointing,
            seq_len,
            micro_batch,
            precision,
            peak_tflops,
            logits_chunk_mb,
            json,
        } => {
            let bench = TrainBench {
                preset,
                backend,
                steps,
                checkpointing: activation_checkpointing,
                seq_len,
                micro_batch,
                precision,
                peak_tflops,
                logits_chunk_mb,
            };
            if let Some(figures) = fucina_train::bench::train(&bench)? {
                write_json(json.as_deref(), &figures)?;
            }
        }
        BenchCommand::Generate {
            preset,
            prompt_tokens,
            tokens,
        } => {
            let (cached, recomputed) =
                fucina_train::bench_generate::run(fucina_train::bench_generate::GenerateBench {
                    preset: preset.clone(),
                    prompt_tokens,
                    new_tokens: tokens,
                })?;
            println!(
                "generate {preset}: {prompt_tokens} prompt + {tokens} new tokens: {cached:.1} tokens/s \
                 with the key/value cache, {recomputed:.1} recomputing the context: {:.1}x",
                cached / recomputed
            );
        }
        BenchCommand::Allreduce {
            sizes,
            bucket_mb,
            iters,
            transport,
            backend,
        } => {
            let transports = transport
                .iter()
                .map(|t| fucina_train::transport::Transport::parse(t))
                .collect::<Result<Vec<_>>>()?;
            let kind = BackendKind::parse(&backend)?;
            fucina_train::bench::allreduce(sizes, bucket_mb, iters, &transports, kind)?
        }
        BenchCommand::Project {
            model,
            compute_seconds,
            metrics,
            bucket_mb,
            node_gbps,
            gpus_per_node,
            intra_gbps,
            latency_us,
            backward_share,
            gpus,
        } => {
            use fucina_train::projection;
            let compute = match (compute_seconds, metrics) {
                (Some(s), _) => s,
                (None, Some(path)) => projection::measured_compute_seconds(&path)?,
                (None, None) => anyhow::bail!("give --compute-seconds or --metrics"),
            };
            let network = projection::Network {
                node_gbps,
                gpus_per_node,
                intra_gbps,
                latency_us,
            };
            projection::print(&model, compute, backward_share, bucket_mb, &network, &gpus)?;
        }
        BenchCommand::Scaling {
            ranks,
            preset,
            steps,
        } => fucina_train::bench::scaling(ranks, &preset, steps)?,
        BenchCommand::Hf {
            model,
            backend,
            precision,
            json,
        } => {
            let kind = BackendKind::parse(&backend)?;
            let report =
                fucina_train::hf_check::check(&model, kind, Precision::parse(&precision)?)?;
            write_json(json.as_deref(), &report)?;
            if report["ok"] != serde_json::Value::Bool(true) {
                anyhow::bail!("the loss is outside the tolerance");
            }
        }
        BenchCommand::Attention {
            backend,
            precision,
            batch,
            seq,
            heads,
            kv_heads,
            head_dim,
            iters,
            compare,
            json,
        } => {
            let shape = AttentionShape {
                batch,
                seq,
                heads,
                kv_heads,
                head_dim,
            };
            let kind = BackendKind::parse(&backend)?;
            let precision = Precision::parse(&precision)?;
            let report = bench_kernels::attention(kind, shape, precision, iters, compare)?;
            write_json(json.as_deref(), &report)?;
        }
        BenchCommand::Matmul {
            backend,
            precision,
            size,
            iters,
            json,
        } => {
            let kind = BackendKind::parse(&backend)?;
            let report = bench_kernels::matmul(kind, size, Precision::parse(&precision)?, iters)?;
            write_json(json.as_deref(), &report)?;
        }
    }
    Ok(())
}
