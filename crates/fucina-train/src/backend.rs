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
    /// As the config spells it: `cpu`, `flex`, `ndarray`, `wgpu`, `cuda` or `rocm`.
    pub fn parse(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
            anyhow::anyhow!(
                "unknown backend {name:?}: expected cpu, flex, ndarray, wgpu, cuda or rocm"
            )
        })
    }

    /// Lower case, as in configs.
    pub fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

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
                gpu_runtime(kind)?;
                let device = burn::backend::cuda::CudaDevice::new(device_index);
                return Ok(task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(device));
            }
            "cuda"
        }
        BackendKind::Rocm => {
            #[cfg(feature = "rocm")]
            {
                gpu_runtime(kind)?;
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

/// A shared library a GPU backend loads at run time, and the names it is looked up by.
pub struct RuntimeLibrary {
    pub what: &'static str,
    pub names: Vec<String>,
}

impl RuntimeLibrary {
    /// The first name that loads. Loading a system library runs only its initialisers, as the
    /// GPU runtime itself would.
    #[cfg(any(feature = "cuda", feature = "rocm"))]
    pub fn find(&self) -> Option<&str> {
        self.names
            .iter()
            .find(|name| unsafe { libloading::Library::new(name.as_str()) }.is_ok())
            .map(String::as_str)
    }

    #[cfg(not(any(feature = "cuda", feature = "rocm")))]
    pub fn find(&self) -> Option<&str> {
        None
    }
}

/// What `kind` needs besides this binary: the driver, and for CUDA the NVRTC compiler that
/// cubecl JITs every kernel with. The NVRTC names are the ones cudarc 0.19 tries (its
/// `get_lib_name_candidates`) for the CUDA versions GPU machines carry.
pub fn runtime_libraries(kind: BackendKind) -> Vec<RuntimeLibrary> {
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect();
    match kind {
        BackendKind::Cuda => vec![
            RuntimeLibrary {
                what: "the NVIDIA driver (libcuda)",
                names: names(&["libcuda.so", "libcuda.so.1"]),
            },
            RuntimeLibrary {
                what: "NVRTC, CUDA's run-time compiler",
                names: names(&[
                    "libnvrtc.so",
                    "libnvrtc.so.13",
                    "libnvrtc.so.12",
                    "libnvrtc.so.11",
                    "libnvrtc.so.1",
                ]),
            },
        ],
        BackendKind::Rocm => {
            let mut hip: Vec<String> = names(&["libamdhip64.so", "libamdhip64.so.6"]);
            for var in ["ROCM_PATH", "HIP_PATH"] {
                if let Ok(root) = std::env::var(var) {
                    hip.push(format!("{root}/lib/libamdhip64.so"));
                }
            }
            vec![RuntimeLibrary {
                what: "ROCm's HIP runtime",
                names: hip,
            }]
        }
        _ => Vec::new(),
    }
}

/// The GPU runtimes are loaded at run time; without one they panic on a worker thread with a
/// backtrace. Look first, and say what is missing.
#[cfg(any(feature = "cuda", feature = "rocm"))]
fn gpu_runtime(kind: BackendKind) -> Result<()> {
    let backend = kind.name();
    for library in runtime_libraries(kind) {
        if library.find().is_none() {
            bail!(
                "backend {backend}: {} is not on this machine (none of {} loads); run on a GPU \
                 node, with the cluster's {backend} module loaded (or LD_LIBRARY_PATH set)",
                library.what,
                library.names.join(", ")
            );
        }
    }
    Ok(())
}
