//! ZeRO-1 over the transports that take memory by address (`mpi-device`, `nccl`): each rank's
//! block of the gradients is packed where the gradients are and reduced to its rank there, so
//! only that 1/N crosses to the host for the update; the updated blocks are gathered there too
//! and the weights cut from the gathered vector without a round trip through host memory.

use crate::device_memory::{cuda_ordinal, Held};
use crate::grads::{bind_device_on_thread, download, AddressTransport};
use crate::zero::ZeroAdamW;
use anyhow::{anyhow, Result};
use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use fucina_dist::{Communicator, Span};
use fucina_model::fused::cast;

impl ZeroAdamW {
    /// Reduces block r of the gradients `take(i)` gives (parameter i's whole flat gradient,
    /// asked once each) to rank r, from the last block to the first, and brings this rank's
    /// block to the host. Returns the seconds waited after the last block was handed over.
    pub(crate) fn reduce_by_address<B: Backend>(
        &mut self,
        transport: &mut AddressTransport,
        device: &B::Device,
        take: &mut dyn FnMut(usize) -> Tensor<B, 1>,
        comm: &dyn Communicator,
    ) -> Result<f64> {
        let ranges = self.layout().ranges();
        let (block, total, me) = (self.block(), self.layout().len(), comm.rank());
        let ordinal = cuda_ordinal::<B>(device);
        let collectives = transport.collectives(comm, ordinal)?;
        let thread_init = bind_device_on_thread(ordinal);
        // A gradient that spans two blocks, kept for the lower one after filling the upper.
        let mut kept: Vec<Option<Tensor<B, 1>>> = vec![None; ranges.len()];
        let mut held: Vec<[Held<B>; 2]> = Vec::new();
        let mut mine = None;
        let mut fill = |r: usize| {
            let (lo, hi) = (r * block, (r + 1) * block);
            let mut parts = Vec::new();
            for (i, (range, _)) in ranges.iter().enumerate() {
                if range.end <= lo || range.start >= hi {
                    continue;
                }
                let grad = kept[i].take().unwrap_or_else(|| cast(take(i), DType::F32));
                let (from, to) = (range.start.max(lo), range.end.min(hi));
                parts.push(grad.clone().slice(from - range.start..to - range.start));
                if range.start < lo {
                    kept[i] = Some(grad);
                }
            }
            let padding = hi - hi.min(total).max(lo);
            if padding > 0 {
                parts.push(Tensor::zeros([padding], (device, DType::F32)));
            }
            let pair = Held::send(Tensor::cat(parts, 0)).and_then(|send| {
                let recv = send.recv_like(block, None)?;
                Ok([send, recv])
            });
            match pair {
                Ok([send, recv]) => {
                    let span = Span {
                        send: send.address,
                        recv: recv.address,
                        len: block,
                    };
                    if r == me {
                        mine = Some(held.len());
                    }
                    held.push([send, recv]);
                    span
                }
                // The other ranks are inside this reduction already: only ending the job
                // releases them.
                Err(e) => {
                    eprintln!("rank {me}: gradient block {r} could not be handed over: {e:#}");
                    fucina_dist::abort_job(1)
                }
            }
        };
        // SAFETY: `held` keeps every span's memory until the reductions have returned.
        let waited = unsafe { collectives.reduce_spans_to_owners(&thread_init, &mut fill)? };
        let index = mine.ok_or_else(|| anyhow!("no block was reduced to rank {me}"))?;
        let [_, recv] = held.swap_remove(index);
        let values = download(recv.into_tensor(device))?;
        self.set_grads(values)?;
        Ok(waited)
    }

    /// Every rank's updated block, gathered where the model is into one flat vector, and the
    /// model's trainable weights cut from it. Returns the model and the seconds it took.
    pub(crate) fn gather_by_address<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        &mut self,
        transport: &mut AddressTransport,
        model: M,
        comm: &dyn Communicator,
    ) -> Result<(M, f64)> {
        let mut write = DeviceWriteBack::<B> {
            flat: None,
            offset: 0,
            gather: &mut |device| {
                let block = self.block();
                let local = Tensor::<B::InnerBackend, 1>::from_data(
                    TensorData::new(self.weights().to_vec(), [block]),
                    (device, DType::F32),
                );
                let send = Held::send(local)?;
                let recv = send.recv_like(block * comm.size(), None)?;
                let ordinal = cuda_ordinal::<B::InnerBackend>(device);
                let collectives = transport.collectives(comm, ordinal)?;
                let span = Span {
                    send: send.address,
                    recv: recv.address,
                    len: block,
                };
                // SAFETY: both memories live until the call returns.
                let seconds = unsafe { collectives.all_gather_span(span)? };
                Ok((recv.into_tensor(device), seconds))
            },
            seconds: 0.0,
            error: None,
        };
        let model = model.map(&mut write);
        match write.error {
            Some(e) => Err(e),
            None => Ok((model, write.seconds)),
        }
    }
}

type Gather<'a, B> = dyn FnMut(
        &burn::tensor::Device<<B as AutodiffBackend>::InnerBackend>,
    ) -> Result<(Tensor<<B as AutodiffBackend>::InnerBackend, 1>, f64)>
    + 'a;

/// Replaces every trainable weight with its slice of the gathered flat vector, made by
/// `gather` on the first weight's device; keeps each parameter's id and dtype.
struct DeviceWriteBack<'a, B: AutodiffBackend> {
    flat: Option<Tensor<B::InnerBackend, 1>>,
    offset: usize,
    gather: &'a mut Gather<'a, B>,
    seconds: f64,
    error: Option<anyhow::Error>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for DeviceWriteBack<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() || self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        if self.flat.is_none() {
            match (self.gather)(&tensor.device()) {
                Ok((flat, seconds)) => {
                    self.flat = Some(flat);
                    self.seconds = seconds;
                }
                Err(e) => {
                    self.error = Some(e);
                    return Param::from_mapped_value(id, tensor, mapper);
                }
            }
        }
        let flat = self.flat.as_ref().expect("gathered above");
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let part = flat
            .clone()
            .slice(self.offset..self.offset + n)
            .reshape(dims);
        self.offset += n;
        // In f32 and cast as the host path casts, so both give the same bits.
        let updated = Tensor::from_inner(cast(part, tensor.dtype())).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}
