//! Run-time choice among the backends compiled in (cargo features `flex`, `ndarray`, `wgpu`,
//! `cuda`, `rocm`), each wrapped in burn's autodiff. Every backend is instantiated with f32 as
//! its default float: bf16 is a property of tensors (burn 0.21 dispatches on each tensor's
//! dtype), so mixed precision can hold f32 masters and bf16 weights on the same device.

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
            {
                gpu_runtime("cuda", "the NVIDIA driver", &["libcuda.so.1", "libcuda.so"])?;
                let device = burn::backend::cuda::CudaDevice::new(device_index);
                return Ok(task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(device));
            }
            "cuda"
        }
        BackendKind::Rocm => {
            #[cfg(feature = "rocm")]
            {
                let mut names = vec!["libamdhip64.so".to_string(), "libamdhip64.so.6".into()];
                for var in ["ROCM_PATH", "HIP_PATH"] {
                    if let Ok(root) = std::env::var(var) {
                        names.push(format!("{root}/lib/libamdhip64.so"));
                    }
                }
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                gpu_runtime("rocm", "ROCm's HIP runtime", &names)?;
                let device = burn::backend::rocm::RocmDevice::new(device_index);
                return Ok(task.run::<burn::backend::Autodiff<burn::backend::Rocm>>(device));
            }
            "rocm"
        }
    };
    bail!(
        "backend {kind:?} is not compiled into this binary; rebuild with `cargo build --release --features {feature}`"
    )
}

/// The GPU runtimes are loaded at run time; without one they panic on a worker thread with a
/// backtrace. Look first, and say what is missing.
#[cfg(any(feature = "cuda", feature = "rocm"))]
fn gpu_runtime(backend: &str, what: &str, libraries: &[&str]) -> Result<()> {
    // Loading a system library runs only its initialisers, as the GPU runtime itself would.
    let found = libraries
        .iter()
        .any(|name| unsafe { libloading::Library::new(*name) }.is_ok());
    if !found {
        bail!(
            "backend {backend}: {what} is not on this machine (none of {} loads); run on a GPU \
             node, with the cluster's {backend} module loaded (or LD_LIBRARY_PATH set)",
            libraries.join(", ")
        );
    }
    Ok(())
}
