//! Collectives on memory given by its address, for transports that take the gradients where
//! they are: a GPU's memory for GPU-aware MPI and NCCL; on the CPU backends the same calls get
//! host memory, which is how the tests run them.

use crate::BucketTiming;
use anyhow::Result;

/// `len` f32 values at address `send`, summed over all ranks into the `len` at `recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub send: u64,
    pub recv: u64,
    pub len: usize,
}

/// Buckets summed over all ranks by address. Every rank must call it with the same buckets.
pub trait AddressCollectives {
    /// As `[dist] transport` names it.
    fn name(&self) -> &'static str;

    /// Sums buckets `0..count`: `fill(k)` returns bucket k's span, its values complete in
    /// memory (a GPU's queue synchronised). Buckets are reduced in order, bucket k while
    /// k + 1 is filled. `thread_init` runs first on any thread of the transport's own (a GPU
    /// context made current there). `host_squares`: the spans are host memory, and the sum of
    /// squares of the reduced values is taken as each lands (else it is 0: the caller takes it
    /// where the memory is).
    ///
    /// # Safety
    /// Each span's memory stays allocated, and its `send` values unchanged, until this
    /// returns; `send` and `recv` do not overlap; `host_squares` only for host memory.
    unsafe fn all_reduce_sum_spans(
        &self,
        count: usize,
        host_squares: bool,
        thread_init: &(dyn Fn() + Sync),
        fill: &mut dyn FnMut(usize) -> Span,
    ) -> Result<BucketTiming>;

    /// ZeRO-1's reduce-scatter by address: `fill(r)`, called for r from `size() - 1` down to 0
    /// (the order the backward produces the blocks in), gives this rank's block r; its sum
    /// over all ranks lands at rank r's `recv` (the other ranks' `recv` is not written). Each
    /// block is reduced while the next is filled. Returns the seconds waited after the last.
    ///
    /// # Safety
    /// As `all_reduce_sum_spans`.
    unsafe fn reduce_spans_to_owners(
        &self,
        thread_init: &(dyn Fn() + Sync),
        fill: &mut dyn FnMut(usize) -> Span,
    ) -> Result<f64>;

    /// Concatenates every rank's `span.len` values at `span.send`, in rank order, into the
    /// `size() × span.len` at `span.recv`. Returns the seconds it took.
    ///
    /// # Safety
    /// Both memories are valid for the call and do not overlap.
    unsafe fn all_gather_span(&self, span: Span) -> Result<f64>;
}
