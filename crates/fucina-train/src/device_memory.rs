//! Buckets by address for the transports that hand MPI or NCCL the gradients' own memory
//! (`mpi-device`, `nccl`). On cuda and rocm the address is the cubecl buffer's device pointer;
//! on the CPU backends a download hands over the tensor's memory, and its address is used the
//! same way, which is how the tests run this path.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::DType;
use std::any::Any;

use crate::grads::download;

/// A flat f32 bucket whose memory a collective reads or writes by address: it stays allocated
/// as long as this lives.
pub(crate) struct Held<B: Backend> {
    memory: Memory<B>,
    pub address: u64,
}

enum Memory<B: Backend> {
    Host(Vec<f32>),
    /// The burn tensor, and what keeps its buffer's address valid (the backend's own
    /// handle on it).
    Device(Tensor<B, 1>, #[allow(dead_code)] Box<dyn Any>),
}

impl<B: Backend> Held<B> {
    /// `bucket`'s memory, once every kernel writing it has finished.
    pub fn send(bucket: Tensor<B, 1>) -> Result<Self> {
        let device = bucket.device();
        match gpu::address(&bucket) {
            Some((address, keep)) => {
                B::sync(&device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
                Ok(Self {
                    memory: Memory::Device(bucket, keep),
                    address,
                })
            }
            None => Ok(Self::host(download(bucket)?)),
        }
    }

    /// Memory for `len` reduced values, where `self`'s are: `spare` is host memory to reuse.
    pub fn recv_like(&self, len: usize, spare: Option<Vec<f32>>) -> Result<Self> {
        match &self.memory {
            Memory::Host(_) => {
                let mut values = spare.unwrap_or_default();
                values.resize(len, 0.0);
                Ok(Self::host(values))
            }
            Memory::Device(like, _) => {
                let out = Tensor::<B, 1>::empty([len], (&like.device(), DType::F32));
                let (address, keep) = gpu::address(&out)
                    .ok_or_else(|| anyhow::anyhow!("no device address for a new bucket"))?;
                Ok(Self {
                    memory: Memory::Device(out, keep),
                    address,
                })
            }
        }
    }

    fn host(mut values: Vec<f32>) -> Self {
        let address = values.as_mut_ptr() as u64;
        Self {
            memory: Memory::Host(values),
            address,
        }
    }

    /// The values as a tensor on `device`.
    pub fn into_tensor(self, device: &B::Device) -> Tensor<B, 1> {
        match self.memory {
            Memory::Host(values) => {
                let n = values.len();
                Tensor::from_data(TensorData::new(values, [n]), (device, DType::F32))
            }
            Memory::Device(tensor, _) => tensor,
        }
    }

    /// Host memory that can be reused for the next step's buffers.
    pub fn into_host(self) -> Option<Vec<f32>> {
        match self.memory {
            Memory::Host(values) => Some(values),
            Memory::Device(..) => None,
        }
    }
}

/// Whether `device`'s memory is host memory (every backend but cuda and rocm, whose memory
/// transports take by address; wgpu is refused before).
pub(crate) fn on_host<B: Backend>(device: &B::Device) -> bool {
    !gpu::is_gpu(device as &dyn Any)
}

/// The CUDA device ordinal of `device`, for NCCL.
pub(crate) fn cuda_ordinal<B: Backend>(device: &B::Device) -> Option<usize> {
    gpu::cuda_ordinal(device as &dyn Any)
}

#[cfg(not(any(feature = "cuda", feature = "rocm")))]
mod gpu {
    use super::*;

    pub fn address<B: Backend>(_: &Tensor<B, 1>) -> Option<(u64, Box<dyn Any>)> {
        None
    }

    pub fn cuda_ordinal(_: &dyn Any) -> Option<usize> {
        None
    }

    pub fn is_gpu(_: &dyn Any) -> bool {
        false
    }
}

#[cfg(any(feature = "cuda", feature = "rocm"))]
mod gpu {
    use super::*;
    use burn_cubecl::fusion::FusionCubeRuntime;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime};
    use burn_fusion::FusionTensor;

    /// The device pointer of `t`'s buffer (f32: the buckets are cast), made contiguous if it
    /// is not, and the handles that keep it allocated. `None` for a backend without one.
    pub fn address<B: Backend>(t: &Tensor<B, 1>) -> Option<(u64, Box<dyn Any>)> {
        let primitive = t.clone().into_primitive().tensor();
        let any: &dyn Any = &primitive;
        #[cfg(feature = "cuda")]
        if let Some(cube) = resolve::<burn_cubecl::cubecl::cuda::CudaRuntime>(any) {
            debug_assert_eq!(cube.dtype, DType::F32);
            let resource = cube.client.get_resource(cube.handle.clone()).ok()?;
            let ptr = resource.resource().ptr;
            return Some((ptr, Box::new((cube, resource, primitive))));
        }
        #[cfg(feature = "rocm")]
        if let Some(cube) = resolve::<burn_cubecl::cubecl::hip::HipRuntime>(any) {
            let resource = cube.client.get_resource(cube.handle.clone()).ok()?;
            let ptr = resource.resource().ptr as u64;
            return Some((ptr, Box::new((cube, resource, primitive))));
        }
        None
    }

    /// The cubecl tensor behind a fused one. The clone leaves the fused tensor (and the
    /// buffer it names) in place: what a collective writes there, burn reads afterwards.
    fn resolve<R: CubeRuntime>(primitive: &dyn Any) -> Option<CubeTensor<R>> {
        let fused = primitive.downcast_ref::<FusionTensor<FusionCubeRuntime<R>>>()?;
        let cube = fused
            .client
            .resolve_tensor_float::<CubeBackend<R, f32, i32, u8>>(fused.clone());
        match cube.is_contiguous() {
            true => Some(cube),
            false => Some(burn_cubecl::kernel::into_contiguous(cube)),
        }
    }

    pub fn cuda_ordinal(device: &dyn Any) -> Option<usize> {
        #[cfg(feature = "cuda")]
        if let Some(d) = device.downcast_ref::<burn::backend::cuda::CudaDevice>() {
            return Some(d.index);
        }
        let _ = device;
        None
    }

    pub fn is_gpu(device: &dyn Any) -> bool {
        #[cfg(feature = "rocm")]
        if device.is::<burn::backend::rocm::RocmDevice>() {
            return true;
        }
        cuda_ordinal(device).is_some()
    }
}
