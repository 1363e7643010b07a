//! The communicator over MPI (rsmpi): Open MPI, MPICH, Cray MPICH, ParaStation MPI.

use crate::{BucketTiming, Buckets, Communicator};
use anyhow::{anyhow, ensure, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;
use std::time::Instant;

/// MPI counts are C ints: larger buffers go in pieces of this many elements.
const MAX_COUNT: usize = 1 << 30;

pub struct MpiComm {
    world: SimpleCommunicator,
    local_rank: usize,
    local_size: usize,
    // Declared last: MPI is finalised when the universe drops, after the communicators.
    _universe: Universe,
}

impl MpiComm {
    pub fn init() -> Result<Self> {
        // Funneled: only the main thread calls MPI (burn's worker threads never do).
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| anyhow!("MPI is already initialised in this process"))?;
        let world = universe.world();
        // Ranks sharing a node share memory: this split is the node, whatever the launcher.
        let node = world.split_shared(world.rank());
        Ok(Self {
            local_rank: node.rank() as usize,
            local_size: node.size() as usize,
            world,
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
        fill: &mut dyn FnMut(usize, &mut [f32]),
    ) -> Result<BucketTiming> {
        ensure!(
            sizes.iter().all(|&n| n <= MAX_COUNT),
            "a gradient bucket exceeds {MAX_COUNT} values"
        );
        buffers.prepare(sizes, true);
        let mut blocked = 0.0;
        mpi::request::scope(|scope| {
            let mut pending = Vec::new();
            let pairs = buffers.send.iter_mut().zip(buffers.recv.iter_mut());
            for (k, (send, recv)) in pairs.enumerate() {
                // Copying bucket k overlaps the reductions already in flight.
                fill(k, send);
                let send: &[f32] = send;
                pending.push(self.world.immediate_all_reduce_into(
                    scope,
                    send,
                    &mut recv[..],
                    SystemOperation::sum(),
                ));
                // Testing drives MPI's progress engine; finished requests are dropped.
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
        let timing = BucketTiming {
            blocked_seconds: blocked,
        };
        Ok(timing)
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
}
