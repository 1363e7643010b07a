//! One AI factory's facts as a TOML file; the built-in ones are compiled in from
//! `configs/factories/`, and a user's own file is read the same way.

use crate::walltime::parse_walltime;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const BUILTIN: &[(&str, &str)] = &[
    (
        "mn5-acc",
        include_str!("../../../configs/factories/mn5-acc.toml"),
    ),
    (
        "leonardo-booster",
        include_str!("../../../configs/factories/leonardo-booster.toml"),
    ),
    (
        "lumi-g",
        include_str!("../../../configs/factories/lumi-g.toml"),
    ),
    (
        "meluxina",
        include_str!("../../../configs/factories/meluxina.toml"),
    ),
    (
        "berzelius",
        include_str!("../../../configs/factories/berzelius.toml"),
    ),
    (
        "hunter",
        include_str!("../../../configs/factories/hunter.toml"),
    ),
    (
        "daedalus",
        include_str!("../../../configs/factories/daedalus.toml"),
    ),
    (
        "jupiter-booster",
        include_str!("../../../configs/factories/jupiter-booster.toml"),
    ),
    (
        "local",
        include_str!("../../../configs/factories/local.toml"),
    ),
    (
        "local-wgpu",
        include_str!("../../../configs/factories/local-wgpu.toml"),
    ),
    (
        "local-slurm",
        include_str!("../../../configs/factories/local-slurm.toml"),
    ),
];

pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Slurm,
    Pbs,
    None,
}

fn auto() -> String {
    "auto".into()
}

/// Cray MPICH reads device pointers only with this set, and then needs the GTL library linked
/// into the binary: only a transport that hands MPI device memory may set it.
pub const CRAY_GPU_SUPPORT: &str = "MPICH_GPU_SUPPORT_ENABLED";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub machine: String,
    pub factory: String,
    pub scheduler: Scheduler,
    /// `srun`, `mpirun`, `mpiexec`, or `none` (one process, no MPI launcher).
    pub launcher: String,
    /// CPU architecture of the compute nodes (`x86_64`, `aarch64`, `any`); binaries must match.
    pub arch: String,
    /// fucina backend: cpu, flex, ndarray, wgpu, cuda, rocm.
    pub backend: String,
    /// f32, or bf16 on cuda/rocm.
    pub precision: String,
    /// How gradients travel (`dist.transport`): auto, mpi-host, mpi-device or nccl.
    #[serde(default = "auto")]
    pub transport: String,
    /// Placeholder until the user gives `--account`.
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub scratch: String,
    /// The longest wall time any partition allows.
    #[serde(default)]
    pub max_time: Option<String>,
    /// Loaded in the job script, in order.
    #[serde(default)]
    pub modules: Vec<String>,
    /// What to load before `cargo build` on the login node (README).
    #[serde(default)]
    pub build_modules: Vec<String>,
    pub node: Node,
    /// `debug` and `production`, chosen with `--debug`.
    #[serde(default)]
    pub partitions: BTreeMap<String, Partition>,
    /// Exported in the job script; values are expanded by the shell (`$SLURM_CPUS_PER_TASK`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Field (dotted path) → why its value is not certain.
    #[serde(default)]
    pub unsure: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Ranks per node: one per GPU (per GCD on MI250X).
    pub devices: u32,
    pub device: String,
    pub device_memory_gib: f64,
    /// Cores given to each rank; 0 leaves the choice to the system.
    pub cpus_per_rank: u32,
    /// The launcher's CPU binding (`srun --cpu-bind=`, `mpiexec --cpu-bind`).
    #[serde(default)]
    pub cpu_bind: Option<String>,
    /// The launcher's GPU binding (`srun --gpu-bind=`, `mpiexec --gpu-bind`).
    #[serde(default)]
    pub gpu_bind: Option<String>,
    /// Set to the local rank in a wrapper, so each rank sees only its own device.
    #[serde(default)]
    pub select_device_var: Option<String>,
    /// How GPUs are requested from Slurm: `--gpus-per-node`, `--gres` (gpu:N) or `--gpus` (total).
    #[serde(default)]
    pub gpus_flag: Option<String>,
    /// PBS `node_type` in the select statement.
    #[serde(default)]
    pub node_type: Option<String>,
    #[serde(default)]
    pub launcher_args: Vec<String>,
    #[serde(default)]
    pub scheduler_args: Vec<String>,
    /// Per node, all NICs together.
    #[serde(default)]
    pub interconnect_gbps: Option<f64>,
    /// Per device, dense matrix peaks; only the MFU estimate reads them.
    #[serde(default)]
    pub peak_tflops_bf16: Option<f64>,
    #[serde(default)]
    pub peak_tflops_f32: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub qos: Option<String>,
    #[serde(default)]
    pub max_time: Option<String>,
    #[serde(default)]
    pub max_nodes: Option<u32>,
}

impl Profile {
    /// A built-in name (`lumi-g`) or a path to a profile file (`./my-cluster.toml`).
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml_str(text)
                .with_context(|| format!("built-in profile {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            bail!(
                "no factory profile {name_or_path:?}: not a built-in one ({}) and no such file",
                builtin_names().join(", ")
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read factory profile {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_toml_str(text: &str) -> Result<Self> {
        let profile: Self = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> Result<()> {
        let backends = ["cpu", "flex", "ndarray", "wgpu", "cuda", "rocm"];
        if !backends.contains(&self.backend.as_str()) {
            bail!(
                "backend {:?}: expected one of {}",
                self.backend,
                backends.join(", ")
            );
        }
        let transports = ["auto", "mpi-host", "mpi-device", "nccl"];
        if !transports.contains(&self.transport.as_str()) {
            bail!(
                "transport {:?}: expected one of {}",
                self.transport,
                transports.join(", ")
            );
        }
        if self.env.contains_key(CRAY_GPU_SUPPORT) {
            bail!(
                "env.{CRAY_GPU_SUPPORT}: the job script exports it when transport = \"mpi-device\" (the only transport that hands MPI device memory); do not set it in [env]"
            );
        }
        match self.precision.as_str() {
            "f32" => {}
            "bf16" | "bf16-pure" if matches!(self.backend.as_str(), "cuda" | "rocm") => {}
            other => {
                bail!(
                    "precision {other:?}: expected f32, or bf16 (or bf16-pure) with the cuda or rocm backend"
                )
            }
        }
        let launchers: &[&str] = match self.scheduler {
            Scheduler::Slurm => &["srun", "mpirun"],
            Scheduler::Pbs => &["mpiexec", "mpirun"],
            Scheduler::None => &["none", "mpirun"],
        };
        if !launchers.contains(&self.launcher.as_str()) {
            bail!(
                "launcher {:?} does not go with scheduler {:?}: expected {}",
                self.launcher,
                self.scheduler,
                launchers.join(" or ")
            );
        }
        if self.node.devices == 0 {
            bail!("node.devices must be at least 1");
        }
        if self.node.device_memory_gib.is_nan() || self.node.device_memory_gib <= 0.0 {
            bail!("node.device_memory_gib must be positive");
        }
        if let Some(flag) = &self.node.gpus_flag {
            if !["--gpus-per-node", "--gres", "--gpus"].contains(&flag.as_str()) {
                bail!("node.gpus_flag {flag:?}: expected --gpus-per-node, --gres or --gpus");
            }
        }
        if self.scheduler == Scheduler::Pbs && self.node.node_type.is_none() {
            bail!("node.node_type is needed for the PBS select statement");
        }
        for time in self
            .max_time
            .iter()
            .chain(self.partitions.values().filter_map(|p| p.max_time.as_ref()))
        {
            parse_walltime(time)?;
        }
        for tier in self.partitions.keys() {
            if tier != "debug" && tier != "production" {
                bail!("[partitions.{tier}]: expected debug or production");
            }
        }
        let known = toml::Value::try_from(self)?;
        for key in self.unsure.keys() {
            let mut value = Some(&known);
            for part in key.split('.') {
                value = value.and_then(|v| v.get(part));
            }
            if value.is_none() {
                bail!("[unsure] names {key:?}, which is not a field of this profile");
            }
        }
        Ok(())
    }

    pub fn partition(&self, tier: &str) -> Partition {
        self.partitions.get(tier).cloned().unwrap_or_default()
    }

    /// The note on a field, when its value is not certain.
    pub fn unsure(&self, key: &str) -> Option<&str> {
        self.unsure.get(key).map(String::as_str)
    }

    pub fn peak_tflops(&self) -> Option<f64> {
        match self.precision.as_str() {
            "bf16" | "bf16-pure" => self.node.peak_tflops_bf16,
            _ => self.node.peak_tflops_f32,
        }
    }

    /// An account still holding the profile's placeholder (`ehpcNNN`, `<project>`).
    pub fn is_placeholder(value: &str) -> bool {
        value.contains('<') || value.contains("XX") || value.contains("NNN")
    }
}
