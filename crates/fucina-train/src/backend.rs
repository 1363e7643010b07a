//! Run-time choice among the backends compiled in (cargo features `flex`, `ndarray`, `wgpu`,
//! `cuda`, `rocm`), each wrapped in burn's autodiff.

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

/// Work generic over the backend; `dispatch` monomorphises it for the one the config names.
pub trait BackendTask {
    type Output;
    /// `device_index` is the local rank's device on GPU backends, ignored on CPU.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

#[allow(unreachable_code, unused_variables)]
pub fn dispatch<T: BackendTask>(
    kind: BackendKind,
    device_index: usize,
    task: T,
) -> Result<T::Output> {
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
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
                burn::backend::cuda::CudaDevice::new(device_index),
            ));
            "cuda"
        }
        BackendKind::Rocm => {
            #[cfg(feature = "rocm")]
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::Rocm>>(
                burn::backend::rocm::RocmDevice::new(device_index),
            ));
            "rocm"
        }
    };
    bail!(
        "backend {kind:?} is not compiled into this binary; rebuild with `cargo build --release --features {feature}`"
    )
}
