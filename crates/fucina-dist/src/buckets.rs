//! Host buffers for bucketed all-reduces, kept from one step to the next: fresh gigabytes every
//! step would cost a page fault per 4 KiB, more than the copies themselves on a CPU.

#[derive(Debug, Default)]
pub struct Buckets {
    pub(crate) send: Vec<Vec<f32>>,
    pub(crate) recv: Vec<Vec<f32>>,
}

impl Buckets {
    /// Shapes the buffers for buckets of `sizes` values, reusing their memory.
    pub(crate) fn prepare(&mut self, sizes: &[usize], with_send: bool) {
        for (buffers, wanted) in [(&mut self.send, with_send), (&mut self.recv, true)] {
            let sizes = if wanted { sizes } else { &[] };
            buffers.truncate(sizes.len());
            buffers.resize_with(sizes.len(), Vec::new);
            for (buf, &n) in buffers.iter_mut().zip(sizes) {
                buf.resize(n, 0.0);
            }
        }
    }

    /// Bucket `k` summed over all ranks, after `all_reduce_sum_buckets`.
    pub fn reduced(&self, k: usize) -> &[f32] {
        &self.recv[k]
    }

    /// Takes bucket `k`'s reduced values out, leaving `spare` (of any length) in their place:
    /// a bucket that holds one gradient becomes that gradient without a copy, and the spare
    /// memory is the next step's buffer.
    pub fn take_reduced(&mut self, k: usize, spare: Vec<f32>) -> Vec<f32> {
        std::mem::replace(&mut self.recv[k], spare)
    }

    pub fn len(&self) -> usize {
        self.recv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recv.is_empty()
    }
}
