//! Run-time choice among the backends compiled in (cargo features `flex`, `ndarray`, `wgpu`,
//! `cuda`, `rocm`), each wrapped in burn's autodiff.

use crate::config::Precision;
use anyhow::{bail, Result};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The fastest CPU backend compiled in: Flex, else NdArray.
    #[default]
    Cpu,
    Flex,
    Ndarray,
    Wgpu,
    Cuda,
    Rocm,
}

impl BackendKind {
    /// Whether this binary was built with the backend's cargo feature.
    pub fn compiled(self) -> bool {
        match self {
            BackendKind::Cpu => cfg!(any(feature = "flex", feature = "ndarray")),
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Rocm => cfg!(feature = "rocm"),
        }
    }

    pub fn is_cpu(self) -> bool {
        matches!(
            self,
            BackendKind::Cpu | BackendKind::Flex | BackendKind::Ndarray
        )
    }
}

/// Work generic over the backend; `dispatch` monomorphises it for the one the config names.
pub trait BackendTask {
    type Output;
    /// `device_index` is the local rank's device on GPU backends, ignored on CPU.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

#[allow(unreachable_code, unused_variables)]
pub fn dispatch<T: BackendTask>(
    kind: BackendKind,
    precision: Precision,
    device_index: usize,
    task: T,
) -> Result<T::Output> {
    let bf16 = precision == Precision::Bf16;
    if bf16 && !matches!(kind, BackendKind::Cuda | BackendKind::Rocm) {
        bail!("precision bf16 needs backend cuda or rocm (got {kind:?})");
    }
    let feature = match kind {
        BackendKind::Cpu => {
            #[cfg(feature = "flex")]
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default()));
            #[cfg(feature = "ndarray")]
            return Ok(
                task.run::<burn::backend::Autodiff<burn::backend::NdArray>>(Default::default())
            );
            "flex"
        }
        BackendKind::Flex => {
            #[cfg(feature = "flex")]
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default()));
            "flex"
        }
        BackendKind::Ndarray => {
            #[cfg(feature = "ndarray")]
            return Ok(
                task.run::<burn::backend::Autodiff<burn::backend::NdArray>>(Default::default())
            );
            "ndarray"
        }
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(
                // Laptops and software Vulkan have one adapter; multi-GPU runs use cuda/rocm.
                burn::backend::wgpu::WgpuDevice::DefaultDevice,
            ));
            "wgpu"
        }
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let device = burn::backend::cuda::CudaDevice::new(device_index);
                return Ok(if bf16 {
                    task.run::<burn::backend::Autodiff<burn::backend::Cuda<burn::tensor::bf16>>>(
                        device,
                    )
                } else {
                    task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(device)
                });
            }
            "cuda"
        }
        BackendKind::Rocm => {
            #[cfg(feature = "rocm")]
            {
                let device = burn::backend::rocm::RocmDevice::new(device_index);
                return Ok(if bf16 {
                    task.run::<burn::backend::Autodiff<burn::backend::Rocm<burn::tensor::bf16>>>(
                        device,
                    )
                } else {
                    task.run::<burn::backend::Autodiff<burn::backend::Rocm>>(device)
                });
            }
            "rocm"
        }
    };
    bail!(
        "backend {kind:?} is not compiled into this binary; rebuild with `cargo build --release --features {feature}`"
    )
}
