//! `GradSync` for the transports that take the buckets' memory by address (`mpi-device`,
//! `nccl`), and the state those transports keep.

use super::*;
use crate::device_memory::Held;
use fucina_dist::{AddressCollectives, BucketTiming, Span};

impl GradSync {
    /// `reduce` for the transports that take the buckets' memory by address: the buckets are
    /// flattened where the gradients are, summed there by GPU-aware MPI or NCCL, and the norm
    /// is taken there too; one small copy brings it to the host.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reduce_by_address<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        shapes: Vec<(ParamId, Vec<usize>)>,
        buckets: Vec<Bucket>,
        device: burn::tensor::Device<B::InnerBackend>,
        take: &mut dyn FnMut(usize) -> Tensor<B::InnerBackend, 1>,
        comm: &dyn Communicator,
        started: Instant,
    ) -> Result<(GradientsParams, SyncStats)> {
        let ordinal = crate::device_memory::cuda_ordinal::<B::InnerBackend>(&device);
        let collectives = self.address.collectives(comm, ordinal)?;
        let thread_init = bind_device_on_thread(ordinal);
        let mut spares = std::mem::take(&mut self.spares);
        spares.resize_with(buckets.len(), || None);
        // Each bucket's (send, receive) memory.
        let mut held: Vec<[Held<B::InnerBackend>; 2]> = Vec::new();
        let rank = comm.rank();
        let mut fill = |k: usize| {
            let bucket: &Bucket = &buckets[k];
            let flat = match &bucket.params[..] {
                &[i] => cast(take(i), DType::F32),
                params => Tensor::cat(
                    params.iter().map(|&i| cast(take(i), DType::F32)).collect(),
                    0,
                ),
            };
            let pair = Held::send(flat).and_then(|send| {
                let recv = send.recv_like(bucket.len, spares[k].take())?;
                Ok((send, recv))
            });
            match pair {
                Ok((send, recv)) => {
                    let span = Span {
                        send: send.address,
                        recv: recv.address,
                        len: bucket.len,
                    };
                    held.push([send, recv]);
                    span
                }
                // The other ranks are inside this reduction already: only ending the job
                // releases them.
                Err(e) => {
                    eprintln!("rank {rank}: gradient bucket {k} could not be handed over: {e:#}");
                    fucina_dist::abort_job(1)
                }
            }
        };
        let on_host = crate::device_memory::on_host::<B::InnerBackend>(&device);
        // SAFETY: `held` keeps every span's memory until the reductions have returned, and
        // the CPU backends' memory is host memory.
        let timing = unsafe {
            collectives.all_reduce_sum_spans(buckets.len(), on_host, &thread_init, &mut fill)?
        };

        let mut sums: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
        for (k, [send, recv]) in held.into_iter().enumerate() {
            spares[k] = send.into_host();
            sums.push(recv.into_tensor(&device));
        }
        self.spares = spares;
        // On a device: each bucket's Σx² there, then one small download, summed in f64 here.
        let squares: Vec<Tensor<B::InnerBackend, 1>> = match on_host {
            true => Vec::new(),
            false => sums
                .iter()
                .map(|t| t.clone().powi_scalar(2).sum())
                .collect(),
        };
        let sum_of_squares = match squares.is_empty() {
            true => timing.sum_of_squares,
            false => download(Tensor::cat(squares, 0))?
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>(),
        };
        let lens: Vec<usize> = shapes.iter().map(|(_, d)| d.iter().product()).collect();
        let mut ready: Vec<Option<Ready<B::InnerBackend>>> =
            (0..lens.len()).map(|_| None).collect();
        for (bucket, sum) in buckets.iter().zip(sums) {
            let mut offset = 0;
            for &i in &bucket.params {
                let part = match bucket.params.len() {
                    1 => sum.clone(),
                    _ => sum.clone().slice(offset..offset + lens[i]),
                };
                ready[i] = Some(Ready::Device(part));
                offset += lens[i];
            }
        }
        let timing = BucketTiming {
            sum_of_squares,
            ..timing
        };
        let stats = self.averaged(timing, comm.size(), started);
        Ok((self.unflatten::<B, M>(model, ready, shapes, device), stats))
    }
}

/// The transport that takes memory by address (`mpi-device`, `nccl`), with NCCL's communicator
/// once made.
#[derive(Default)]
pub struct AddressTransport {
    /// NCCL rather than the MPI communicator's own collectives.
    pub nccl: bool,
    #[cfg(feature = "cuda")]
    nccl_comm: Option<fucina_dist::nccl::NcclComm>,
}

impl AddressTransport {
    /// NCCL when `nccl`, else the MPI communicator's collectives.
    pub fn new(nccl: bool) -> Self {
        Self {
            nccl,
            #[cfg(feature = "cuda")]
            nccl_comm: None,
        }
    }

    /// The collectives to reduce with: NCCL (made on first use, a collective of every rank,
    /// on CUDA device `ordinal`) or the MPI communicator's own.
    pub(crate) fn collectives<'a>(
        &'a mut self,
        comm: &'a dyn Communicator,
        ordinal: Option<usize>,
    ) -> Result<&'a dyn AddressCollectives> {
        if !self.nccl {
            return mpi_by_address(comm);
        }
        #[cfg(feature = "cuda")]
        {
            if self.nccl_comm.is_none() {
                let ordinal = ordinal
                    .ok_or_else(|| anyhow!("dist.transport = \"nccl\" needs the cuda backend"))?;
                self.nccl_comm = Some(fucina_dist::nccl::NcclComm::new(comm, ordinal)?);
            }
            Ok(self.nccl_comm.as_ref().expect("made above"))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(anyhow!(
                "this fucina was built without cuda, which nccl needs"
            ))
        }
    }
}

/// A GPU-aware MPI may need the GPU's context current on its calling thread (UCX does).
pub(crate) fn bind_device_on_thread(ordinal: Option<usize>) -> impl Fn() + Sync {
    move || {
        #[cfg(feature = "cuda")]
        if let Some(ordinal) = ordinal {
            let _ = fucina_dist::nccl::bind_device(ordinal);
        }
        let _ = ordinal;
    }
}

fn mpi_by_address(comm: &dyn Communicator) -> Result<&dyn AddressCollectives> {
    comm.by_address().ok_or_else(|| {
        anyhow!(
            "dist.transport = \"mpi-device\" reduces on a communication thread, which needs \
             MPI_THREAD_SERIALIZED, and this MPI offers less: use \"mpi-host\""
        )
    })
}
