//! `[dist] transport`: how the gradient buckets travel between ranks, and which one `auto`
//! picks for a backend.

use crate::backend::BackendKind;
use crate::grads::Packing;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The best this build and this machine offer; the run prints what it chose and why.
    #[default]
    Auto,
    /// Buckets are copied to host memory and reduced there by MPI.
    MpiHost,
    /// Buckets are flattened by the backend and MPI is handed that memory itself (GPU-aware
    /// MPI on a GPU; on the CPU backends the device memory is host memory).
    MpiDevice,
    /// NCCL, bootstrapped over MPI.
    Nccl,
}

impl Transport {
    /// As the config spells it.
    pub fn parse(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
            anyhow::anyhow!("unknown transport {name:?}: auto, mpi-host, mpi-device or nccl")
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::MpiHost => "mpi-host",
            Transport::MpiDevice => "mpi-device",
            Transport::Nccl => "nccl",
        }
    }

    /// Where `GradSync` packs the buckets for this (resolved) transport on `backend`.
    pub fn packing(self, backend: BackendKind) -> Packing {
        match (self, backend.is_cpu()) {
            (Transport::MpiHost, true) => Packing::Host,
            _ => Packing::Device,
        }
    }
}

/// The transport a run uses on `backend`, and why: `requested` unless it cannot work here.
pub fn resolve(requested: Transport, backend: BackendKind) -> Result<(Transport, String)> {
    let gpu = !backend.is_cpu();
    let device_pointers = "this version does not yet take device pointers from the cuda, rocm \
                           or wgpu backends";
    match requested {
        Transport::MpiHost => Ok((requested, "as configured".into())),
        Transport::MpiDevice if gpu => bail!(
            "dist.transport = \"mpi-device\" hands MPI the gradients' device memory, but \
             {device_pointers}; use \"mpi-host\" (one device→host copy per bucket) or \"auto\""
        ),
        Transport::MpiDevice => Ok((
            requested,
            "as configured; the CPU backend's device memory is host memory".into(),
        )),
        Transport::Nccl => bail!(
            "dist.transport = \"nccl\" is not in this version (NCCL needs the gradients' device \
             pointers, and {device_pointers}); use \"mpi-host\" or \"auto\""
        ),
        Transport::Auto if gpu => Ok((
            Transport::MpiHost,
            format!(
                "nccl and mpi-device need device pointers, and {device_pointers}; buckets are \
                 packed on the {} device and copied to the host once each",
                backend_name(backend)
            ),
        )),
        Transport::Auto => Ok((
            Transport::MpiHost,
            "the CPU backend's gradients are already in host memory".into(),
        )),
    }
}

fn backend_name(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Cuda => "CUDA",
        BackendKind::Rocm => "ROCm",
        BackendKind::Wgpu => "WGPU",
        _ => "CPU",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_refusals() {
        let (t, why) = resolve(Transport::Auto, BackendKind::Cpu).unwrap();
        assert_eq!(
            (t, t.packing(BackendKind::Cpu)),
            (Transport::MpiHost, Packing::Host)
        );
        assert!(why.contains("host memory"), "{why}");
        let (t, _) = resolve(Transport::Auto, BackendKind::Cuda).unwrap();
        assert_eq!(
            (t, t.packing(BackendKind::Cuda)),
            (Transport::MpiHost, Packing::Device)
        );
        let (t, _) = resolve(Transport::MpiDevice, BackendKind::Flex).unwrap();
        assert_eq!(t.packing(BackendKind::Flex), Packing::Device);
        for (t, b) in [
            (Transport::MpiDevice, BackendKind::Rocm),
            (Transport::Nccl, BackendKind::Cuda),
            (Transport::Nccl, BackendKind::Cpu),
        ] {
            let e = resolve(t, b).unwrap_err().to_string();
            assert!(e.contains(t.name()) && e.contains("mpi-host"), "{e}");
        }
    }
}
