//! fucina-dist: moves buffers between ranks. It knows nothing of models: the trainer flattens
//! whatever it needs to share into `f32` or byte buffers and hands them over.

mod buckets;
mod by_address;
#[cfg(feature = "mpi")]
mod mpi_comm;
mod mpirun;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod placement;
mod single;
mod squares;

pub use buckets::Buckets;
pub use by_address::{AddressCollectives, Span};
#[cfg(feature = "mpi")]
pub use mpi_comm::MpiComm;
pub use mpirun::mpirun_command;
pub use single::SingleProcess;
pub use squares::sum_of_squares;

use anyhow::Result;

/// An error every rank raised together, after agreeing on it through the communicator: one
/// rank reporting it is enough, and no rank is left waiting for the others.
#[derive(Debug)]
pub struct CollectiveError(pub String);

impl std::fmt::Display for CollectiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CollectiveError {}

/// Where the time of a bucketed all-reduce went.
#[derive(Debug, Clone, Copy, Default)]
pub struct BucketTiming {
    /// Spent blocked in MPI rather than copying: communication not hidden behind the copies.
    pub blocked_seconds: f64,
    /// Σx² of the reduced values of every bucket (the global norm's square), computed as
    /// each bucket lands while later ones are still being filled or reduced.
    pub sum_of_squares: f64,
}

/// The GPU programming interfaces whose memory an MPI may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuApi {
    Cuda,
    Rocm,
}

/// The collectives the trainer needs. Every rank must call them in the same order.
pub trait Communicator {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Rank among the processes of this node; picks the device.
    fn local_rank(&self) -> usize;
    fn local_size(&self) -> usize;
    /// Element-wise sum over all ranks, in place, identical on every rank afterwards.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.all_reduce_sum_into(&send, buf)
    }
    /// The plain `MPI_Allreduce(sum)` of `send` into `recv`.
    fn all_reduce_sum_into(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Sums buckets of the given sizes over all ranks into `buffers` (read them back with
    /// `Buckets::reduced`). `fill(k, buf)` gives this rank's bucket k: it either writes the
    /// `sizes[k]` values into `buf` or swaps in a buffer of its own of that length (memory a
    /// backend already flattened the bucket into: no staging copy). It is called in order,
    /// while earlier buckets are reduced on a communication thread where the MPI allows one.
    fn all_reduce_sum_buckets(
        &self,
        buffers: &mut Buckets,
        sizes: &[usize],
        fill: &mut dyn FnMut(usize, &mut Vec<f32>),
    ) -> Result<BucketTiming>;
    /// `send` holds `size()` blocks of `recv.len()`; rank r receives the sum of block r.
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// `reduce_scatter_sum`, filled and reduced block by block from the last to the first:
    /// `fill(r, block)` writes this rank's block r of `send` just before its reduction to rank
    /// r starts, while the blocks filled before are reduced on a communication thread where
    /// the MPI allows one. ZeRO-1's reduce-scatter overlapped with the backward, which produces
    /// the last parameters' gradients first. Returns the seconds waited after the last fill.
    fn reduce_blocks_to_owners(
        &self,
        send: &mut [f32],
        recv: &mut [f32],
        fill: &mut dyn FnMut(usize, &mut [f32]),
    ) -> Result<f64> {
        fill_then_reduce_scatter(self, send, recv, fill)
    }
    /// Concatenates every rank's `send`, in rank order, into `recv` on every rank.
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Replaces `buf` on every rank with the bytes of `root`.
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// Ends every rank of the job: the way out when one rank fails and the others would wait
    /// forever in the next collective.
    fn abort(&self, code: i32) -> !;

    /// The same communicator's collectives on memory by address (`mpi-device`), where its MPI
    /// allows them from a communication thread.
    fn by_address(&self) -> Option<&dyn AddressCollectives> {
        None
    }

    /// Whether this MPI takes `api`'s device memory, if it can say.
    fn device_memory_support(&self, _api: GpuApi) -> Option<bool> {
        None
    }

    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// `reduce_blocks_to_owners` without a communication thread: every block filled, then one
/// reduce-scatter.
pub(crate) fn fill_then_reduce_scatter<C: Communicator + ?Sized>(
    comm: &C,
    send: &mut [f32],
    recv: &mut [f32],
    fill: &mut dyn FnMut(usize, &mut [f32]),
) -> Result<f64> {
    let block = recv.len();
    anyhow::ensure!(
        send.len() == block * comm.size(),
        "reduce to owners: {} values do not split into {} blocks of {block}",
        send.len(),
        comm.size()
    );
    for r in (0..comm.size()).rev() {
        fill(r, &mut send[r * block..(r + 1) * block]);
    }
    let waited = std::time::Instant::now();
    comm.reduce_scatter_sum(send, recv)?;
    Ok(waited.elapsed().as_secs_f64())
}

/// Ends every rank of the job, from any thread (the watchdog's): `MPI_Abort` when MPI is up,
/// else this process alone.
pub fn abort_job(code: i32) -> ! {
    #[cfg(feature = "mpi")]
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        use mpi::traits::Communicator as _;
        mpi::topology::SimpleCommunicator::world().abort(code)
    }
    std::process::exit(code)
}

/// World size announced by a launcher (`mpirun`, `srun`, `mpiexec`), if this process has one.
pub fn launcher_world_size(env: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
    const SIZE_VARS: &[&str] = &[
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "SLURM_STEP_NUM_TASKS",
        "PALS_SIZE",
        "MPI_LOCALNRANKS",
    ];
    const RANK_ONLY_VARS: &[&str] = &["PMIX_RANK", "PALS_RANKID", "PMI_RANK"];
    let size = SIZE_VARS
        .iter()
        .find_map(|v| env(v).and_then(|s| s.trim().parse().ok()));
    size.or_else(|| RANK_ONLY_VARS.iter().any(|v| env(v).is_some()).then_some(0))
}

/// The communicator for this process: MPI when a launcher started it (or `FUCINA_MPI=1`),
/// otherwise a world of size 1 without touching MPI, so that a laptop needs no MPI at all.
pub fn init() -> Result<Box<dyn Communicator>> {
    let env = placement::process_env;
    let forced = env("FUCINA_MPI");
    let launched = launcher_world_size(&env);
    let use_mpi = match forced.as_deref() {
        Some("1") => true,
        Some("0") => false,
        _ => launched.is_some(),
    };
    if !use_mpi {
        return Ok(Box::new(SingleProcess));
    }
    #[cfg(feature = "mpi")]
    return Ok(Box::new(MpiComm::init()?));
    #[cfg(not(feature = "mpi"))]
    match launched {
        Some(n) if n > 1 => anyhow::bail!(
            "started by a launcher with {n} ranks, but this fucina was built without MPI (rebuild with --features mpi)"
        ),
        _ => Ok(Box::new(SingleProcess)),
    }
}
