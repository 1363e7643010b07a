//! Run configuration: a TOML file, `--set key=value` overrides, and errors that name the file,
//! the key and what was expected.

use crate::backend::BackendKind;
use crate::checkpoint::WeightsFormat;
use anyhow::{anyhow, bail, Context, Result};
use fucina_model::hf::HfCheckpoint;
use fucina_model::{presets, LlamaConfig, LoraSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod data;
pub use data::{builtin_subdir, DataConfig, SourceConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `cpu` (Flex, or NdArray when only that is compiled in), `flex`, `ndarray`, `wgpu`, `cuda`, `rocm`.
    #[serde(default)]
    pub backend: BackendKind,
    /// `f32`; `bf16`: mixed precision (f32 master weights and AdamW moments, bf16 weights and
    /// activations for the forward and backward, f32 norm statistics, softmax and loss);
    /// `bf16-pure`: everything in bf16, no master copy (see `Precision`).
    #[serde(default)]
    pub precision: Precision,
    /// Seeds weight initialisation and the data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Peak FLOP/s of one device in TFLOP/s, for the MFU estimate. On CPU backends the default
    /// is a rough 0.1 TFLOP/s per core (AVX2: 2 FMA units × 8 lanes × 2 × ~3 GHz).
    #[serde(default)]
    pub peak_tflops: Option<f64>,
    /// Where metrics, checkpoints and plots go.
    pub out_dir: PathBuf,
    /// `preset = "small"` (or a path to a model TOML / HF config.json) plus any field to
    /// override; or `hf = "DIR"`, a Hugging Face model directory whose shape and weights the
    /// run starts from.
    pub model: toml::Table,
    /// LoRA fine-tuning: the model is frozen and adapters on the named projections train.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
    pub data: DataConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub dist: DistConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Mixed precision as PyTorch's autocast and FSDP's `MixedPrecisionPolicy(param_dtype=bf16,
    /// reduce_dtype=f32)` do it: the optimizer updates f32 master weights with f32 moments, and
    /// the forward and backward run on a bf16 copy of them.
    Bf16,
    /// Weights, gradients and AdamW moments in bf16, no master copy: 6 bytes per parameter
    /// fewer, but an update below half a bf16 ULP of its weight (|Δw| < |w|·2⁻⁹, e.g. lr 3e-5
    /// on a weight of 0.02) rounds away, and so does weight decay: weights stagnate at small
    /// learning rates. Only for short runs at large learning rates.
    #[serde(rename = "bf16-pure")]
    Bf16Pure,
}

impl Precision {
    /// As the config spells it: `f32`, `bf16` or `bf16-pure`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        // The names are serde's, as the config reads them.
        serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map_err(|_| anyhow!("unknown precision {name:?}: expected f32, bf16 or bf16-pure"))
    }

    /// The dtype the forward and backward compute in (and the model's weights are held in).
    pub fn compute_dtype(self) -> burn::tensor::DType {
        match self {
            Precision::F32 => burn::tensor::DType::F32,
            Precision::Bf16 | Precision::Bf16Pure => burn::tensor::DType::BF16,
        }
    }

    /// Whether the optimizer keeps f32 master weights apart from the model's.
    pub fn keeps_masters(self) -> bool {
        self == Precision::Bf16
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Bf16Pure => "bf16-pure",
        }
    }
}

fn default_seed() -> u64 {
    1337
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Tokens per optimizer step over all ranks and micro-batches; independent of the world size.
    pub global_batch_tokens: usize,
    /// Sequences per forward/backward pass on one rank.
    pub micro_batch_size: usize,
    /// Peak learning rate, reached after `warmup_steps`.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    #[serde(default)]
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decoupled weight decay on matrices (embeddings included); never on norm weights.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Maximum global gradient norm; 0 disables clipping.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// A step whose loss or gradient norm is NaN or infinite (decided after the all-reduce, so
    /// every rank agrees): `skip` leaves the weights and optimizer state as they were; `abort`
    /// stops the run without checkpointing.
    #[serde(default)]
    pub on_nonfinite: NonFinite,
    /// Skipped steps tolerated over the whole run before it aborts anyway.
    #[serde(default = "default_max_skips")]
    pub max_nonfinite_skips: u64,
    /// `block`: each decoder block keeps only its input for the backward pass and recomputes
    /// the rest there (less memory, one more forward pass of the blocks); `none` keeps it all.
    #[serde(default)]
    pub activation_checkpointing: Checkpointing,
    /// The head and the loss take the micro-batch's rows in chunks whose f32 logits fit in this
    /// many MiB (a 128k vocabulary makes 0.5 MiB per token); 0 takes them all at once.
    #[serde(default = "default_logits_chunk_mb")]
    pub logits_chunk_mb: f64,
}

fn default_logits_chunk_mb() -> f64 {
    256.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkpointing {
    #[default]
    None,
    Block,
}

fn default_weight_decay() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    #[default]
    Skip,
    Abort,
}

fn default_max_skips() -> u64 {
    10
}

fn default_grad_clip() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Validation loss every N steps (and after the last); 0 disables it.
    pub every: u64,
    /// Validation batches of `micro_batch_size` sequences, taken in order from the start.
    pub batches: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 50,
            batches: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Checkpoint every N steps (and after the last); 0 keeps only the final one.
    pub every: u64,
    /// How many checkpoints to keep, newest first; 0 keeps all.
    pub keep: usize,
    /// Also keep every checkpoint whose step is a multiple of this (0: none), e.g. for
    /// evaluating the run's history later.
    pub keep_every: u64,
    /// Write checkpoints in the background while training goes on: training pauses only to
    /// copy the state to host memory.
    #[serde(rename = "async")]
    pub background: bool,
    /// With `dist.shard_optimizer`: each rank also writes its part of the weights, so no rank
    /// gathers the whole model (needed when it exceeds one host's memory). Also on by itself
    /// when the f32 weights would take more than half of this host's memory.
    pub shard_weights: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 100,
            keep: 3,
            keep_every: 0,
            background: true,
            shard_weights: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// Gradient fusion bucket size in MB: one all-reduce per bucket, copies overlapping them.
    pub bucket_mb: f64,
    /// A step phase (forward/backward, an all-reduce, evaluation, a checkpoint) taking longer
    /// than this ends the whole job with a message; 0 disables the watchdog.
    pub timeout_seconds: f64,
    /// The same for start-up (config check, opening the data, loading and broadcasting the
    /// model or checkpoint) and the first step, which compiles the GPU kernels; 0 leaves them
    /// unwatched.
    pub startup_timeout_seconds: f64,
    /// ZeRO-1: each rank keeps the AdamW moments of its 1/N of the trainable parameters and
    /// updates only that part; gradients are reduce-scattered and weights all-gathered.
    pub shard_optimizer: bool,
    /// How the gradient buckets travel: `auto`, `mpi-host`, `mpi-device` or `nccl`.
    pub transport: crate::transport::Transport,
    /// Reduce each bucket (sharded: each rank's block) as soon as the backward has made its
    /// gradients, while the backward of the earlier layers goes on (more than one rank);
    /// false waits for the whole backward first.
    pub overlap: bool,
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            bucket_mb: 25.0,
            timeout_seconds: 1800.0,
            startup_timeout_seconds: 3600.0,
            shard_optimizer: false,
            transport: Default::default(),
            overlap: true,
        }
    }
}

impl DistConfig {
    pub fn bucket_bytes(&self) -> usize {
        (self.bucket_mb * 1e6) as usize
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Also write the metrics as TensorBoard event files in `<out_dir>/tensorboard/`.
    pub tensorboard: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { tensorboard: true }
    }
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`train.lr=3e-4`), validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run config {}", path.display()))?;
        Self::from_toml_str(&text, overrides).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text.parse().map_err(|e| anyhow!("{e}"))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        let config: Self = deserialize(table, "")?;
        config.model_config()?;
        config.validate()?;
        Ok(config)
    }

    /// The model shape: the preset (if any), then every other `[model]` key on top of it.
    pub fn model_config(&self) -> Result<LlamaConfig> {
        if let Some(dir) = self.hf_dir()? {
            let extra: Vec<String> = self.model.keys().filter(|k| *k != "hf").cloned().collect();
            if !extra.is_empty() {
                bail!(
                    "model.hf takes the model's shape from {}; remove model.{} (a different shape would not match its weights)",
                    dir.join("config.json").display(),
                    extra.join(", model.")
                );
            }
            let checkpoint = HfCheckpoint::open(&dir).context("in [model] hf")?;
            return Ok(checkpoint.config().clone());
        }
        let mut table = self.model.clone();
        if let Some(preset) = table.remove("preset") {
            let name = preset
                .as_str()
                .ok_or_else(|| anyhow!("model.preset must be a string"))?;
            let mut base = load_preset_table(name)?;
            base.extend(table);
            table = base;
        }
        let config: LlamaConfig = deserialize(table, "model.")?;
        config.validate().context("in [model]")?;
        Ok(config)
    }

    /// The Hugging Face directory of `model.hf`, if the run starts from one.
    pub fn hf_dir(&self) -> Result<Option<PathBuf>> {
        match self.model.get("hf") {
            None => Ok(None),
            Some(toml::Value::String(dir)) => Ok(Some(PathBuf::from(dir))),
            Some(other) => bail!("model.hf must be a directory path (a string), got {other}"),
        }
    }

    /// How checkpoints hold the weights: LoRA runs on a `model.hf` base keep only what trains
    /// (the adapters); sharded runs asked to (or too big for one host) each rank's part.
    pub fn weights_format(&self) -> Result<WeightsFormat> {
        let lora_on_base = self.lora.is_some() && self.hf_dir()?.is_some();
        let sharded = self.dist.shard_optimizer
            && (self.checkpoint.shard_weights || self.weights_exceed_host_memory()?);
        Ok(match lora_on_base || (sharded && self.lora.is_none()) {
            true => WeightsFormat::Trainable,
            false => WeightsFormat::Record,
        })
    }

    fn weights_exceed_host_memory(&self) -> Result<bool> {
        let Some(host) = crate::rss::host_total_bytes() else {
            return Ok(false);
        };
        let params = self.model_config()?.num_parameters() as u64;
        Ok(params * 4 > host / 2)
    }

    fn validate(&self) -> Result<()> {
        crate::transport::check(self.dist.transport, self.backend)?;
        if self.checkpoint.shard_weights && !self.dist.shard_optimizer {
            bail!("checkpoint.shard_weights needs dist.shard_optimizer = true: the ranks write the parts of the weights the sharded optimizer gives them");
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
            // A recomputed block would draw a different dropout mask than its first forward.
            if lora.dropout > 0.0 && self.train.activation_checkpointing == Checkpointing::Block {
                bail!(
                    "lora.dropout = {} cannot be used with train.activation_checkpointing = \"block\": the recomputed blocks would drop other values than the forward pass did; set one of them to 0 / \"none\"",
                    lora.dropout
                );
            }
        }
        if self.precision != Precision::F32 {
            let why = match self.backend {
                BackendKind::Ndarray => Some("burn's NdArray backend has no bf16 tensors"),
                BackendKind::Wgpu => Some("WGPU's shader language (WGSL) has no bf16"),
                BackendKind::Cpu if !cfg!(feature = "flex") => {
                    Some("the CPU backend of this binary is NdArray, which has no bf16 tensors")
                }
                _ => None,
            };
            if let Some(why) = why {
                bail!(
                    "precision = \"{}\" needs a backend with bf16 tensors (cpu/flex, cuda, rocm): {why}; use precision = \"f32\"",
                    self.precision.name()
                );
            }
        }
        self.data.validate()?;
        let t = &self.train;
        let positive = [
            ("data.seq_len", self.data.seq_len as f64),
            ("train.steps", t.steps as f64),
            ("train.global_batch_tokens", t.global_batch_tokens as f64),
            ("train.micro_batch_size", t.micro_batch_size as f64),
            ("train.lr", t.lr),
        ];
        for (key, value) in positive {
            if !value.is_finite() || value <= 0.0 {
                bail!("{key} must be a positive number (got {value})");
            }
        }
        if !t.global_batch_tokens.is_multiple_of(self.data.seq_len) {
            bail!(
                "train.global_batch_tokens ({}) must be a multiple of data.seq_len ({})",
                t.global_batch_tokens,
                self.data.seq_len
            );
        }
        let model = self.model_config()?;
        model
            .check_seq_len(self.data.seq_len)
            .context("data.seq_len")?;
        if !(0.0..=t.lr).contains(&t.min_lr) {
            bail!(
                "train.min_lr ({}) must lie between 0 and train.lr ({})",
                t.min_lr,
                t.lr
            );
        }
        for (key, beta) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                bail!("{key} must lie in [0, 1) (got {beta})");
            }
        }
        for (key, value) in [
            ("train.eps", t.eps),
            ("train.weight_decay", t.weight_decay),
            ("train.grad_clip", t.grad_clip),
            ("train.logits_chunk_mb", t.logits_chunk_mb),
        ] {
            if !value.is_finite() || value < 0.0 {
                bail!("{key} must be a finite number ≥ 0 (got {value})");
            }
        }
        if !(self.dist.bucket_mb.is_finite()
            && self.dist.bucket_mb > 0.0
            && self.dist.bucket_mb <= 4096.0)
        {
            bail!(
                "dist.bucket_mb must lie in (0, 4096] (got {})",
                self.dist.bucket_mb
            );
        }
        for (key, value) in [
            ("timeout_seconds", self.dist.timeout_seconds),
            ("startup_timeout_seconds", self.dist.startup_timeout_seconds),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                bail!("dist.{key} must be a number ≥ 0 (got {value})");
            }
        }
        if self.eval.every > 0 && self.eval.batches == 0 {
            bail!("eval.batches must be positive when eval.every is set");
        }
        Ok(())
    }

    /// Peak FLOP/s per device for MFU, when known.
    pub fn peak_flops(&self) -> Option<f64> {
        let cpu = matches!(
            self.backend,
            BackendKind::Cpu | BackendKind::Flex | BackendKind::Ndarray
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpu_peak = cpu.then(|| cores * crate::cpu_peak::core_peak_flops());
        self.peak_tflops.map(|t| t * 1e12).or(cpu_peak)
    }

    /// Sequences per optimizer step over all ranks.
    pub fn global_batch_seqs(&self) -> usize {
        self.train.global_batch_tokens / self.data.seq_len
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run config always serialises")
    }
}

/// Deserialises with the dotted path of the offending key in the error.
fn deserialize<T: serde::de::DeserializeOwned>(table: toml::Table, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().to_string();
        if path == "." {
            anyhow!("{message}")
        } else {
            anyhow!("key {prefix}{path}: {message}")
        }
    })
}

/// The model a preset name, model TOML or HF config.json describes.
pub fn model_config(name: &str) -> Result<LlamaConfig> {
    let config: LlamaConfig = toml::Value::Table(load_preset_table(name)?)
        .try_into()
        .map_err(|e| anyhow!("model {name}: {e}"))?;
    config.validate()?;
    Ok(config)
}

pub(crate) fn load_preset_table(name: &str) -> Result<toml::Table> {
    let path = Path::new(name);
    let text = match presets::preset(name) {
        Some(text) => text.to_string(),
        None if path.is_file() => {
            if path.extension().is_some_and(|e| e == "json") {
                let config = LlamaConfig::from_file(path)?;
                return Ok(toml::Value::try_from(config)?
                    .as_table()
                    .cloned()
                    .unwrap_or_default());
            }
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read model config {}", path.display()))?
        }
        None => bail!(
            "model.preset {name:?} is neither a built-in preset ({}) nor a model config file",
            presets::preset_names().join(", ")
        ),
    };
    text.parse()
        .map_err(|e| anyhow!("model preset {name}: {e}"))
}

/// `a.b.c=value`: the value is read as TOML (numbers, booleans, arrays), else as a string.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {item:?}: expected key=value"))?;
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts.pop().filter(|s| !s.is_empty());
    let last = last.ok_or_else(|| anyhow!("--set {item:?}: empty key"))?;
    let mut current = table;
    for part in parts {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {item:?}: {part} is not a table"))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}
