//! The communicator over MPI (rsmpi): Open MPI, MPICH, Cray MPICH, ParaStation MPI.

use crate::{
    sum_of_squares, AddressCollectives, BucketTiming, Buckets, Communicator, GpuApi, Span,
};
use anyhow::{anyhow, bail, ensure, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;
use mpi::Threading;
use std::ffi::{c_int, c_void, CStr};
use std::sync::mpsc;
use std::time::Instant;

/// MPI counts are C ints: larger buffers go in pieces of this many elements.
const MAX_COUNT: usize = 1 << 30;

pub struct MpiComm {
    world: SimpleCommunicator,
    /// The gradient buckets' own communicator, used by the communication thread: its
    /// collectives can never be matched with the main thread's.
    buckets: SimpleCommunicator,
    threading: Threading,
    local_rank: usize,
    local_size: usize,
    // Declared last: MPI is finalised when the universe drops, after the communicators.
    _universe: Universe,
}

impl MpiComm {
    pub fn init() -> Result<Self> {
        // Serialized: the bucket reductions run on a thread of their own, which blocking in
        // MPI drives its progress (nonblocking collectives tested from the main thread
        // progressed only when tested: the reductions did not overlap the copies); the main
        // thread makes no MPI call meanwhile. An MPI that offers less gets the old path.
        // The communication thread waits in MPI while this rank's compute threads work, and an
        // MPI that spins while it waits takes a core from them (measured, 2 ranks on 2 cores
        // with the backward overlapped: steps 15 % slower; yielding: no slower than without
        // overlap). Open MPI yields when asked, which costs nothing where a core is free; a
        // setting of the user's or the launcher's stays.
        const YIELD: &str = "OMPI_MCA_mpi_yield_when_idle";
        if std::env::var_os(YIELD).is_none() {
            std::env::set_var(YIELD, "1");
        }
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| anyhow!("MPI is already initialised in this process"))?;
        let world = universe.world();
        let buckets = world.duplicate();
        // Ranks sharing a node share memory: this split is the node, whatever the launcher.
        let node = world.split_shared(world.rank());
        Ok(Self {
            local_rank: node.rank() as usize,
            local_size: node.size() as usize,
            world,
            buckets,
            threading,
            _universe: universe,
        })
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn local_size(&self) -> usize {
        self.local_size
    }

    fn all_reduce_sum_into(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(
            send.len() == recv.len(),
            "all-reduce of {} values into {}",
            send.len(),
            recv.len()
        );
        for (s, r) in send.chunks(MAX_COUNT).zip(recv.chunks_mut(MAX_COUNT)) {
            self.world.all_reduce_into(s, r, SystemOperation::sum());
        }
        Ok(())
    }

    fn all_reduce_sum_buckets(
        &self,
        buffers: &mut Buckets,
        sizes: &[usize],
        fill: &mut dyn FnMut(usize, &mut Vec<f32>),
    ) -> Result<BucketTiming> {
        ensure!(
            sizes.iter().all(|&n| n <= MAX_COUNT),
            "a gradient bucket exceeds {MAX_COUNT} values"
        );
        buffers.prepare(sizes, true);
        match self.threading >= Threading::Serialized {
            true => self.buckets_on_thread(buffers, sizes, fill),
            false => self.buckets_on_main(buffers, sizes, fill),
        }
    }

    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(
            send.len() == recv.len() * self.size(),
            "reduce-scatter: {} values do not split into {} blocks of {}",
            send.len(),
            self.size(),
            recv.len()
        );
        ensure!(
            recv.len() <= MAX_COUNT,
            "reduce-scatter block exceeds {MAX_COUNT} values"
        );
        self.world
            .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        Ok(())
    }

    fn reduce_blocks_to_owners(
        &self,
        send: &mut [f32],
        recv: &mut [f32],
        fill: &mut dyn FnMut(usize, &mut [f32]),
    ) -> Result<f64> {
        let (block, size, me) = (recv.len(), self.size(), self.rank());
        if self.threading < Threading::Serialized || send.len() != block * size {
            // The plain path (which also refuses buffers that do not split into blocks).
            return crate::fill_then_reduce_scatter(self, send, recv, fill);
        }
        let lent = Lent(&self.buckets);
        let mut blocks: Vec<Option<&mut [f32]>> = send.chunks_mut(block.max(1)).map(Some).collect();
        let (result, waited) = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, &[f32])>();
            let worker = scope.spawn(move || {
                let world = lent.comm();
                for (r, block) in rx {
                    let root = world.process_at_rank(r as i32);
                    // MPI counts are ints: a block of more values goes in pieces.
                    for (i, piece) in block.chunks(MAX_COUNT).enumerate() {
                        match r == me {
                            true => {
                                let out = &mut recv[i * MAX_COUNT..i * MAX_COUNT + piece.len()];
                                root.reduce_into_root(piece, out, SystemOperation::sum());
                            }
                            false => root.reduce_into(piece, SystemOperation::sum()),
                        }
                    }
                }
            });
            for r in (0..size).rev() {
                let chunk = blocks.get_mut(r).and_then(Option::take).unwrap_or_default();
                fill(r, chunk);
                let _ = tx.send((r, &*chunk));
            }
            drop(tx);
            let waited = Instant::now();
            let result = worker.join();
            (result, waited.elapsed().as_secs_f64())
        });
        result.map_err(|_| anyhow!("the communication thread panicked"))?;
        Ok(waited)
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(
            recv.len() == send.len() * self.size(),
            "all-gather: {} values do not hold {} blocks of {}",
            recv.len(),
            self.size(),
            send.len()
        );
        ensure!(
            send.len() <= MAX_COUNT,
            "all-gather block exceeds {MAX_COUNT} values"
        );
        self.world.all_gather_into(send, recv);
        Ok(())
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        ensure!(
            root < self.size(),
            "broadcast from rank {root} in a world of size {}",
            self.size()
        );
        let process = self.world.process_at_rank(root as i32);
        let mut len = buf.len() as u64;
        process.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        for chunk in buf.chunks_mut(MAX_COUNT) {
            process.broadcast_into(chunk);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn by_address(&self) -> Option<&dyn AddressCollectives> {
        (self.threading >= Threading::Serialized).then_some(self as &dyn AddressCollectives)
    }

    fn device_memory_support(&self, api: GpuApi) -> Option<bool> {
        // Open MPI (mpi-ext.h) and MPICH 4 answer at run time; an MPI without the query (Cray
        // MPICH: MPICH_GPU_SUPPORT_ENABLED and the GTL library decide) leaves it to the user.
        let names: &[&CStr] = match api {
            GpuApi::Cuda => &[c"MPIX_Query_cuda_support"],
            GpuApi::Rocm => &[c"MPIX_Query_rocm_support", c"MPIX_Query_hip_support"],
        };
        let this = libloading::os::unix::Library::this();
        names.iter().find_map(|name| {
            // SAFETY: both queries take nothing and return an int, and MPI is initialised.
            let query = unsafe { this.get::<unsafe extern "C" fn() -> c_int>(*name) }.ok()?;
            Some(unsafe { query() } == 1)
        })
    }
}

impl AddressCollectives for MpiComm {
    fn name(&self) -> &'static str {
        "mpi-device"
    }

    unsafe fn all_reduce_sum_spans(
        &self,
        count: usize,
        host_squares: bool,
        thread_init: &(dyn Fn() + Sync),
        fill: &mut dyn FnMut(usize) -> Span,
    ) -> Result<BucketTiming> {
        let lent = Lent(&self.buckets);
        let (result, blocked) = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<Span>();
            let worker = scope.spawn(move || -> Result<f64> {
                thread_init();
                let comm = lent.comm().as_raw();
                let mut squares = 0.0;
                for span in rx {
                    // SAFETY: the caller keeps both spans valid until this function returns,
                    // which joins this thread first, and says when they are host memory.
                    unsafe {
                        all_reduce_span(span, comm)?;
                        if host_squares && span.len > 0 {
                            let recv =
                                std::slice::from_raw_parts(span.recv as *const f32, span.len);
                            squares += sum_of_squares(recv);
                        }
                    }
                }
                Ok(squares)
            });
            for k in 0..count {
                // The worker only stops early on an error, which the join reports.
                let _ = tx.send(fill(k));
            }
            drop(tx);
            let waited = Instant::now();
            let result = worker.join();
            (result, waited.elapsed().as_secs_f64())
        });
        let squares = result.map_err(|_| anyhow!("the communication thread panicked"))??;
        Ok(BucketTiming {
            blocked_seconds: blocked,
            sum_of_squares: squares,
        })
    }

    unsafe fn reduce_spans_to_owners(
        &self,
        thread_init: &(dyn Fn() + Sync),
        fill: &mut dyn FnMut(usize) -> Span,
    ) -> Result<f64> {
        let lent = Lent(&self.buckets);
        let size = self.size();
        let (result, blocked) = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, Span)>();
            let worker = scope.spawn(move || -> Result<()> {
                thread_init();
                let comm = lent.comm().as_raw();
                for (root, span) in rx {
                    // SAFETY: as in all_reduce_sum_spans.
                    unsafe { reduce_span(span, root, comm)? };
                }
                Ok(())
            });
            for r in (0..size).rev() {
                let _ = tx.send((r, fill(r)));
            }
            drop(tx);
            let waited = Instant::now();
            let result = worker.join();
            (result, waited.elapsed().as_secs_f64())
        });
        result.map_err(|_| anyhow!("the communication thread panicked"))??;
        Ok(blocked)
    }

    unsafe fn all_gather_span(&self, span: Span) -> Result<f64> {
        ensure!(
            span.len <= MAX_COUNT,
            "all-gather block exceeds {MAX_COUNT} values"
        );
        let started = Instant::now();
        let code = mpi::ffi::MPI_Allgather(
            span.send as *const c_void,
            span.len as c_int,
            mpi::ffi::RSMPI_FLOAT,
            span.recv as *mut c_void,
            span.len as c_int,
            mpi::ffi::RSMPI_FLOAT,
            self.world.as_raw(),
        );
        ensure!(
            code == 0,
            "MPI_Allgather of {} values by address: error {code}",
            span.len
        );
        Ok(started.elapsed().as_secs_f64())
    }
}

/// `MPI_Reduce(sum)` of a span to `root`, in pieces MPI's int counts can hold.
unsafe fn reduce_span(span: Span, root: usize, comm: mpi::ffi::MPI_Comm) -> Result<()> {
    let mut done = 0;
    while done < span.len {
        let n = (span.len - done).min(MAX_COUNT);
        let offset = (done * std::mem::size_of::<f32>()) as u64;
        let code = mpi::ffi::MPI_Reduce(
            (span.send + offset) as *const c_void,
            (span.recv + offset) as *mut c_void,
            n as c_int,
            mpi::ffi::RSMPI_FLOAT,
            mpi::ffi::RSMPI_SUM,
            root as c_int,
            comm,
        );
        ensure!(
            code == 0,
            "MPI_Reduce of {n} values by address: error {code}"
        );
        done += n;
    }
    Ok(())
}

/// `MPI_Allreduce(sum)` of a span, in pieces MPI's int counts can hold. rsmpi takes slices,
/// which device memory cannot be: the C call takes the addresses as they are.
unsafe fn all_reduce_span(span: Span, comm: mpi::ffi::MPI_Comm) -> Result<()> {
    let mut done = 0;
    while done < span.len {
        let n = (span.len - done).min(MAX_COUNT);
        let offset = (done * std::mem::size_of::<f32>()) as u64;
        let code = mpi::ffi::MPI_Allreduce(
            (span.send + offset) as *const c_void,
            (span.recv + offset) as *mut c_void,
            n as c_int,
            mpi::ffi::RSMPI_FLOAT,
            mpi::ffi::RSMPI_SUM,
            comm,
        );
        ensure!(
            code == 0,
            "MPI_Allreduce of {n} values by address: error {code}"
        );
        done += n;
    }
    Ok(())
}

/// The buckets' communicator, lent to the communication thread.
struct Lent<'a>(&'a SimpleCommunicator);

// SAFETY: MPI runs at MPI_THREAD_SERIALIZED or above, and while the communication thread holds
// this the main thread makes no MPI call (it only fills buckets, then joins the thread).
unsafe impl Send for Lent<'_> {}

impl Lent<'_> {
    fn comm(&self) -> &SimpleCommunicator {
        self.0
    }
}

/// A fill that returned a bucket of the wrong length: the bucket is still reduced (zeros
/// where values are missing) so that no rank is left waiting, and the error is raised after.
fn checked_len(k: usize, buf: &mut Vec<f32>, size: usize, error: &mut Option<String>) {
    if buf.len() != size {
        error.get_or_insert(format!("bucket {k}: {} values, not {size}", buf.len()));
        buf.resize(size, 0.0);
    }
}

impl MpiComm {
    fn buckets_on_thread(
        &self,
        buffers: &mut Buckets,
        sizes: &[usize],
        fill: &mut dyn FnMut(usize, &mut Vec<f32>),
    ) -> Result<BucketTiming> {
        let Buckets { send, recv } = buffers;
        let lent = Lent(&self.buckets);
        let mut error = None;
        let (squares, blocked) = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, &[f32])>();
            let worker = scope.spawn(move || {
                let world = lent.comm();
                let mut squares = 0.0;
                for (k, send) in rx {
                    let recv: &mut [f32] = &mut recv[k];
                    world.all_reduce_into(send, recv, SystemOperation::sum());
                    squares += sum_of_squares(recv);
                }
                squares
            });
            for (k, buf) in send.iter_mut().enumerate() {
                fill(k, buf);
                checked_len(k, buf, sizes[k], &mut error);
                let buf: &[f32] = buf;
                // The worker only stops early by panicking; the join below reports that.
                let _ = tx.send((k, buf));
            }
            drop(tx);
            let waited = Instant::now();
            let squares = worker.join();
            (squares, waited.elapsed().as_secs_f64())
        });
        let squares = squares.map_err(|_| anyhow!("the communication thread panicked"))?;
        if let Some(e) = error {
            bail!(e);
        }
        Ok(BucketTiming {
            blocked_seconds: blocked,
            sum_of_squares: squares,
        })
    }

    /// For an MPI without MPI_THREAD_SERIALIZED: nonblocking reductions from the main thread,
    /// progressed by testing them after each fill.
    fn buckets_on_main(
        &self,
        buffers: &mut Buckets,
        sizes: &[usize],
        fill: &mut dyn FnMut(usize, &mut Vec<f32>),
    ) -> Result<BucketTiming> {
        let mut blocked = 0.0;
        let mut error = None;
        mpi::request::scope(|scope| {
            let mut pending = Vec::new();
            let pairs = buffers.send.iter_mut().zip(buffers.recv.iter_mut());
            for (k, (send, recv)) in pairs.enumerate() {
                fill(k, send);
                checked_len(k, send, sizes[k], &mut error);
                let send: &[f32] = send;
                pending.push(self.buckets.immediate_all_reduce_into(
                    scope,
                    send,
                    &mut recv[..],
                    SystemOperation::sum(),
                ));
                let t = Instant::now();
                pending = pending.into_iter().filter_map(|r| r.test().err()).collect();
                blocked += t.elapsed().as_secs_f64();
            }
            let t = Instant::now();
            for request in pending {
                request.wait();
            }
            blocked += t.elapsed().as_secs_f64();
        });
        if let Some(e) = error {
            bail!(e);
        }
        let squares = buffers.recv.iter().map(|b| sum_of_squares(b)).sum();
        Ok(BucketTiming {
            blocked_seconds: blocked,
            sum_of_squares: squares,
        })
    }
}
