//! What cubecl reports of a GPU backend's device memory, for the benchmarks: burn's `Backend`
//! has no such query, and each cubecl runtime keeps its own memory pools.

use cubecl::Runtime;
use std::any::Any;

/// Bytes on a cubecl device: in tensors now, and reserved by cubecl's pools (pages are kept
/// once allocated, so after a run this is about the run's peak).
#[derive(Debug, Clone, Copy)]
pub struct DeviceMemory {
    pub in_use: u64,
    pub reserved: u64,
}

fn usage<R: Runtime>(device: &dyn Any) -> Option<DeviceMemory> {
    let device = device.downcast_ref::<R::Device>()?;
    let usage = R::client(device).memory_usage().ok()?;
    Some(DeviceMemory {
        in_use: usage.bytes_in_use,
        reserved: usage.bytes_reserved,
    })
}

/// The device memory of `device` when it is a device of a cubecl backend of this binary.
pub fn device_memory<D: Any>(device: &D) -> Option<DeviceMemory> {
    let device: &dyn Any = device;
    #[cfg(feature = "wgpu")]
    if let Some(m) = usage::<cubecl::wgpu::WgpuRuntime>(device) {
        return Some(m);
    }
    #[cfg(feature = "cuda")]
    if let Some(m) = usage::<cubecl::cuda::CudaRuntime>(device) {
        return Some(m);
    }
    #[cfg(feature = "rocm")]
    if let Some(m) = usage::<cubecl::hip::HipRuntime>(device) {
        return Some(m);
    }
    let _ = device;
    None
}
