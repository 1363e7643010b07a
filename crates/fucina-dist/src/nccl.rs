//! NCCL through cudarc, bootstrapped over the run's communicator as llm.c does: rank 0 makes
//! the unique id and broadcasts its 128 bytes, every rank joins with it. NCCL reduces on a
//! CUDA stream of its own, so the ranks' next kernels run while the buckets travel.

use crate::{AddressCollectives, BucketTiming, Communicator, Span};
use anyhow::{anyhow, bail, ensure, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys::{CUcontext, CUstream};
use cudarc::nccl::{result as nccl, sys as nccl_sys};
use std::mem::MaybeUninit;
use std::time::Instant;

/// Whether libnccl loads here, as cudarc looks it up (`libnccl.so` on the library path).
pub fn library_loads() -> bool {
    // SAFETY: loading the library runs only its initialisers, as its first use would.
    unsafe { nccl_sys::is_culib_present() }
}

/// How many CUDA devices this process sees (`None` without a driver).
pub fn device_count() -> Option<usize> {
    cu::init().ok()?;
    cu::device::get_count().ok().map(|n| n as usize)
}

/// Makes CUDA device `ordinal`'s primary context (the one cubecl computes in) current on
/// this thread.
pub fn bind_device(ordinal: usize) -> Result<CUcontext> {
    cu::init().map_err(|e| anyhow!("CUDA init: {e:?}"))?;
    let device =
        cu::device::get(ordinal as i32).map_err(|e| anyhow!("CUDA device {ordinal}: {e:?}"))?;
    // SAFETY: `device` is a valid device; the primary context is retained for the process.
    unsafe {
        let ctx = cu::primary_ctx::retain(device).map_err(|e| anyhow!("CUDA context: {e:?}"))?;
        cu::ctx::set_current(ctx).map_err(|e| anyhow!("CUDA context: {e:?}"))?;
        Ok(ctx)
    }
}

pub struct NcclComm {
    comm: nccl_sys::ncclComm_t,
    stream: CUstream,
    ctx: CUcontext,
}

// SAFETY: the communicator and stream are used by one thread at a time (`&self` calls are made
// by the trainer's main thread, which owns the communicator).
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins every rank of `comm` into one NCCL communicator on CUDA device `ordinal`. A
    /// collective of `comm`: every rank calls it.
    pub fn new(comm: &dyn Communicator, ordinal: usize) -> Result<Self> {
        // Every rank learns whether all found libnccl, so that none is left waiting in
        // ncclCommInitRank for one that gave up.
        let mut loads = [if library_loads() { 1.0 } else { 0.0 }];
        comm.all_reduce_sum(&mut loads)?;
        let missing = comm.size() - loads[0] as usize;
        if missing > 0 {
            bail!(
                "dist.transport = \"nccl\": libnccl.so is not on the library path of {missing} \
                 rank(s) (load the site's nccl module; a runtime-only install has libnccl.so.2 \
                 alone, which needs a libnccl.so link next to it)"
            );
        }
        let mut id = vec![0u8; 128];
        if comm.is_root() {
            let unique = nccl::get_uniqueid().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
            id = unique.internal.iter().map(|&c| c as u8).collect();
        }
        comm.broadcast_bytes(0, &mut id)?;
        ensure!(id.len() == 128, "NCCL id of {} bytes", id.len());
        let ctx = bind_device(ordinal)?;
        let mut unique = nccl_sys::ncclUniqueId { internal: [0; 128] };
        for (c, b) in unique.internal.iter_mut().zip(&id) {
            *c = *b as _;
        }
        let mut raw = MaybeUninit::uninit();
        // SAFETY: `raw` is written by ncclCommInitRank; the id is the one rank 0 made.
        let comm_raw = unsafe {
            nccl::comm_init_rank(
                raw.as_mut_ptr(),
                comm.size() as i32,
                unique,
                comm.rank() as i32,
            )
            .map_err(|e| anyhow!("ncclCommInitRank: {e:?}"))?;
            raw.assume_init()
        };
        let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map_err(|e| anyhow!("CUDA stream: {e:?}"))?;
        Ok(Self {
            comm: comm_raw,
            stream,
            ctx,
        })
    }
}

impl AddressCollectives for NcclComm {
    fn name(&self) -> &'static str {
        "nccl"
    }

    unsafe fn all_reduce_sum_spans(
        &self,
        count: usize,
        host_squares: bool,
        _thread_init: &(dyn Fn() + Sync),
        fill: &mut dyn FnMut(usize) -> Span,
    ) -> Result<BucketTiming> {
        ensure!(!host_squares, "NCCL reduces device memory only");
        // NCCL queues each reduction on its stream and returns: the calling thread fills the
        // next bucket meanwhile, and waits once, for the last.
        let mut error = None;
        for k in 0..count {
            let span = fill(k);
            cu::ctx::set_current(self.ctx).map_err(|e| anyhow!("CUDA context: {e:?}"))?;
            let queued = nccl::all_reduce(
                span.send as *const _,
                span.recv as *mut _,
                span.len,
                nccl_sys::ncclDataType_t::ncclFloat32,
                nccl_sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.stream as _,
            );
            if let Err(e) = queued {
                error.get_or_insert(anyhow!("ncclAllReduce of bucket {k}: {e:?}"));
            }
        }
        let waited = Instant::now();
        cu::stream::synchronize(self.stream).map_err(|e| anyhow!("NCCL stream: {e:?}"))?;
        match error {
            Some(e) => Err(e),
            None => Ok(BucketTiming {
                blocked_seconds: waited.elapsed().as_secs_f64(),
                sum_of_squares: 0.0,
            }),
        }
    }

    unsafe fn reduce_spans_to_owners(
        &self,
        _thread_init: &(dyn Fn() + Sync),
        fill: &mut dyn FnMut(usize) -> Span,
    ) -> Result<f64> {
        let size = nccl::comm_count(self.comm).map_err(|e| anyhow!("ncclCommCount: {e:?}"))?;
        let mut error = None;
        for r in (0..size as usize).rev() {
            let span = fill(r);
            cu::ctx::set_current(self.ctx).map_err(|e| anyhow!("CUDA context: {e:?}"))?;
            let queued = nccl::reduce(
                span.send as *const _,
                span.recv as *mut _,
                span.len,
                nccl_sys::ncclDataType_t::ncclFloat32,
                nccl_sys::ncclRedOp_t::ncclSum,
                r as i32,
                self.comm,
                self.stream as _,
            );
            if let Err(e) = queued {
                error.get_or_insert(anyhow!("ncclReduce of block {r}: {e:?}"));
            }
        }
        let waited = Instant::now();
        cu::stream::synchronize(self.stream).map_err(|e| anyhow!("NCCL stream: {e:?}"))?;
        match error {
            Some(e) => Err(e),
            None => Ok(waited.elapsed().as_secs_f64()),
        }
    }

    unsafe fn all_gather_span(&self, span: Span) -> Result<f64> {
        let started = Instant::now();
        cu::ctx::set_current(self.ctx).map_err(|e| anyhow!("CUDA context: {e:?}"))?;
        nccl::all_gather(
            span.send as *const _,
            span.recv as *mut _,
            span.len,
            nccl_sys::ncclDataType_t::ncclFloat32,
            self.comm,
            self.stream as _,
        )
        .map_err(|e| anyhow!("ncclAllGather: {e:?}"))?;
        cu::stream::synchronize(self.stream).map_err(|e| anyhow!("NCCL stream: {e:?}"))?;
        Ok(started.elapsed().as_secs_f64())
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: nothing is queued on either after the last synchronize.
        unsafe {
            let _ = nccl::comm_destroy(self.comm);
            let _ = cu::stream::destroy(self.stream);
        }
    }
}
