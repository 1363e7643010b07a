use crate::{sum_of_squares, BucketTiming, Buckets, Communicator};
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
    fn all_reduce_sum_into(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(
            send.len() == recv.len(),
            "all-reduce of {} values into {}",
            send.len(),
            recv.len()
        );
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_reduce_sum_buckets(
        &self,
        buffers: &mut Buckets,
        sizes: &[usize],
        fill: &mut dyn FnMut(usize, &mut Vec<f32>),
    ) -> Result<BucketTiming> {
        buffers.prepare(sizes, false);
        let mut squares = 0.0;
        for (k, buf) in buffers.recv.iter_mut().enumerate() {
            fill(k, buf);
            ensure!(
                buf.len() == sizes[k],
                "bucket {k}: {} values, not {}",
                buf.len(),
                sizes[k]
            );
            squares += sum_of_squares(buf);
        }
        Ok(BucketTiming {
            blocked_seconds: 0.0,
            sum_of_squares: squares,
        })
    }
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(
            send.len() == recv.len(),
            "reduce-scatter over one rank needs equal buffers"
        );
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(
            send.len() == recv.len(),
            "all-gather over one rank needs equal buffers"
        );
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast_bytes(&self, root: usize, _buf: &mut Vec<u8>) -> Result<()> {
        ensure!(root == 0, "broadcast from rank {root} in a world of size 1");
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
