//! fucina-dist: moves buffers between ranks. It knows nothing of models: the trainer flattens
//! whatever it needs to share into `f32` or byte buffers and hands them over.

mod single;

pub use single::SingleProcess;

use anyhow::Result;

/// The collectives the trainer needs. Every rank must call them in the same order.
pub trait Communicator {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Rank among the processes of this node; picks the device.
    fn local_rank(&self) -> usize;
    fn local_size(&self) -> usize;
    /// Element-wise sum over all ranks, in place, identical on every rank afterwards.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Replaces `buf` on every rank with the bytes of `root`.
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()>;
    fn barrier(&self) -> Result<()>;

    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// The communicator for this process: world size 1 unless started by a launcher.
pub fn init() -> Result<Box<dyn Communicator>> {
    Ok(Box::new(SingleProcess))
}
