//! `[dist] transport`: how the gradient buckets travel between ranks, and which one `auto`
//! picks for a backend.

use crate::backend::BackendKind;
use crate::grads::Packing;
use anyhow::{bail, Result};
use fucina_dist::{Communicator, GpuApi};
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
            (Transport::MpiHost, false) => Packing::Device,
            _ => Packing::Address,
        }
    }
}

/// What the run's machine offers, the same on every rank (`Probe::of` agrees on it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// libnccl loads (cuda builds and backend only).
    pub nccl: bool,
    /// More ranks on a node than it has GPUs: ranks share one, which NCCL refuses.
    pub shared_gpu: bool,
    /// The MPI says it takes the backend's device memory (`MPIX_Query_cuda_support`, its ROCm
    /// equivalent); `None` where it cannot say.
    pub mpi_device: Option<bool>,
}

impl Probe {
    /// Asks this process's libraries and agrees with the other ranks: a transport is only
    /// chosen when every rank has it, since ranks on different transports would never meet.
    /// A collective of `comm`.
    pub fn of(backend: BackendKind, comm: &dyn Communicator) -> Result<Self> {
        #[cfg(feature = "cuda")]
        let (nccl, shared_gpu) = match backend == BackendKind::Cuda {
            true => (
                fucina_dist::nccl::library_loads(),
                fucina_dist::nccl::device_count().is_some_and(|n| comm.local_size() > n),
            ),
            false => (false, false),
        };
        #[cfg(not(feature = "cuda"))]
        let (nccl, shared_gpu) = (false, false);
        let api = match backend {
            BackendKind::Cuda => Some(GpuApi::Cuda),
            BackendKind::Rocm => Some(GpuApi::Rocm),
            _ => None,
        };
        let mpi_device = api.and_then(|api| comm.device_memory_support(api));
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut votes = [
            flag(nccl),
            flag(mpi_device == Some(true)),
            flag(mpi_device.is_some()),
            flag(shared_gpu),
        ];
        comm.all_reduce_sum(&mut votes)?;
        let all = |v: f32| v as usize == comm.size();
        Ok(Self {
            nccl: all(votes[0]),
            mpi_device: all(votes[2]).then_some(all(votes[1])),
            shared_gpu: votes[3] > 0.0,
        })
    }
}

/// Refuses a transport that cannot work with `backend` in this build, before anything runs.
pub fn check(requested: Transport, backend: BackendKind) -> Result<()> {
    match requested {
        Transport::MpiDevice if backend == BackendKind::Wgpu => bail!(
            "dist.transport = \"mpi-device\" hands MPI the gradients' device memory, which \
             the wgpu backend does not expose; use \"mpi-host\" or \"auto\""
        ),
        Transport::Nccl if backend != BackendKind::Cuda => bail!(
            "dist.transport = \"nccl\" needs the cuda backend (backend = {:?}); use \
             \"mpi-host\", \"mpi-device\" or \"auto\"",
            backend.name()
        ),
        Transport::Nccl if !cfg!(feature = "cuda") => bail!(
            "dist.transport = \"nccl\": this fucina was built without cuda (cargo build \
             --release --features cuda); use \"mpi-host\" or \"auto\""
        ),
        _ => Ok(()),
    }
}

/// The transport a run uses on `backend`, and why: `requested` unless it cannot work here.
pub fn resolve(
    requested: Transport,
    backend: BackendKind,
    probe: &Probe,
) -> Result<(Transport, String)> {
    check(requested, backend)?;
    let gpu = !backend.is_cpu();
    let api = match backend {
        BackendKind::Rocm => "MPIX_Query_rocm_support",
        _ => "MPIX_Query_cuda_support",
    };
    match requested {
        Transport::MpiHost => Ok((requested, "as configured".into())),
        Transport::MpiDevice if gpu && probe.mpi_device == Some(false) => bail!(
            "dist.transport = \"mpi-device\", but this MPI says it does not take {} memory \
             ({api}() returned 0): handed device pointers it would crash. Use a GPU-aware MPI \
             (the site's CUDA/ROCm-aware module), \"mpi-host\" or \"auto\"",
            backend_name(backend)
        ),
        Transport::MpiDevice if gpu => Ok((
            requested,
            match probe.mpi_device {
                Some(_) => format!("as configured; {api}() says this MPI takes device memory"),
                None => "as configured; this MPI cannot say whether it takes device memory \
                         (Cray MPICH: MPICH_GPU_SUPPORT_ENABLED=1 and the GTL library)"
                    .into(),
            },
        )),
        Transport::MpiDevice => Ok((
            requested,
            "as configured; the CPU backend's device memory is host memory".into(),
        )),
        Transport::Nccl if !probe.nccl => bail!(
            "dist.transport = \"nccl\": libnccl.so does not load on every rank (load the \
             site's nccl module, or add a libnccl.so link beside libnccl.so.2); or use \
             \"mpi-device\" or \"mpi-host\""
        ),
        Transport::Nccl if probe.shared_gpu => bail!(
            "dist.transport = \"nccl\": this node has more ranks than GPUs, and NCCL refuses \
             two ranks on one GPU; use \"mpi-device\" or \"mpi-host\" (or one rank per GPU)"
        ),
        Transport::Nccl => Ok((requested, "as configured; libnccl loads".into())),
        Transport::Auto if backend == BackendKind::Cuda && probe.nccl && !probe.shared_gpu => Ok((
            Transport::Nccl,
            "libnccl loads on every rank: NCCL reduces from device memory".into(),
        )),
        Transport::Auto if gpu && probe.mpi_device == Some(true) => Ok((
            Transport::MpiDevice,
            format!(
                "{api}() says this MPI takes device memory ({})",
                match probe.shared_gpu {
                    true => "ranks share a GPU, which NCCL refuses",
                    false => "no NCCL here",
                }
            ),
        )),
        Transport::Auto if gpu => Ok((
            Transport::MpiHost,
            format!(
                "{}, and this MPI {} device memory: buckets are packed on the {} device and \
                 copied to the host once each",
                match probe.shared_gpu {
                    true => "ranks share a GPU, which NCCL refuses",
                    false => "no NCCL here",
                },
                match probe.mpi_device {
                    Some(_) => "does not take",
                    None => "cannot say whether it takes",
                },
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
    fn auto_follows_what_the_machine_offers_and_impossible_choices_are_refused() {
        let none = Probe::default();
        let (t, why) = resolve(Transport::Auto, BackendKind::Cpu, &none).unwrap();
        assert_eq!(
            (t, t.packing(BackendKind::Cpu)),
            (Transport::MpiHost, Packing::Host)
        );
        assert!(why.contains("host memory"), "{why}");
        let (t, _) = resolve(Transport::Auto, BackendKind::Cuda, &none).unwrap();
        assert_eq!(
            (t, t.packing(BackendKind::Cuda)),
            (Transport::MpiHost, Packing::Device)
        );
        let aware = Probe {
            mpi_device: Some(true),
            ..none
        };
        let (t, why) = resolve(Transport::Auto, BackendKind::Rocm, &aware).unwrap();
        assert_eq!(t, Transport::MpiDevice, "{why}");
        assert!(why.contains("MPIX_Query_rocm_support"), "{why}");
        let nccl = Probe {
            nccl: true,
            mpi_device: Some(true),
            shared_gpu: false,
        };
        let (t, _) = resolve(Transport::Auto, BackendKind::Cuda, &nccl).unwrap();
        assert_eq!(t, Transport::Nccl);
        let shared = Probe {
            shared_gpu: true,
            ..nccl
        };
        let (t, why) = resolve(Transport::Auto, BackendKind::Cuda, &shared).unwrap();
        assert_eq!(t, Transport::MpiDevice);
        assert!(why.contains("share a GPU"), "{why}");
        let (t, _) = resolve(Transport::MpiDevice, BackendKind::Flex, &none).unwrap();
        assert_eq!(t.packing(BackendKind::Flex), Packing::Address);
        let unaware = Probe {
            mpi_device: Some(false),
            ..none
        };
        for (t, b, probe) in [
            (Transport::MpiDevice, BackendKind::Wgpu, none),
            (Transport::MpiDevice, BackendKind::Cuda, unaware),
            (Transport::Nccl, BackendKind::Cuda, none),
            (Transport::Nccl, BackendKind::Cuda, shared),
            (Transport::Nccl, BackendKind::Cpu, nccl),
        ] {
            let e = resolve(t, b, &probe).unwrap_err().to_string();
            assert!(
                e.contains(t.name()) && e.contains("mpi-host"),
                "{t:?} {b:?}: {e}"
            );
        }
    }
}
