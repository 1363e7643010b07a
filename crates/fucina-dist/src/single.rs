use crate::Communicator;
use anyhow::{ensure, Result};

/// A process started without `mpirun`/`srun`: every collective is the identity.
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn local_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, root: usize, _buf: &mut Vec<u8>) -> Result<()> {
        ensure!(root == 0, "broadcast from rank {root} in a world of size 1");
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
