//! Reading the next batch of documents while the current one is tokenized.
//!
//! Tokenizing keeps every rayon thread busy, but reading and splitting the
//! inputs is serial: done between batches, it leaves all threads but one
//! idle. Here a reader thread cuts the documents into batches and stays at
//! most `depth` batches ahead of the consumer (a bounded channel), so memory
//! stays bounded at about `(depth + 2) × batch_bytes`.

use anyhow::{anyhow, Result};
use std::sync::mpsc::sync_channel;
use std::thread;

/// Cuts `docs` into batches of at least `batch_bytes` bytes as counted by
/// `bytes` (the last batch may hold fewer; none is empty) on a thread of its
/// own, at most `depth` batches ahead, and hands them in order to `consume`
/// on the calling thread.
///
/// The first error stops both sides: a reading error is returned once the
/// batches before it have been consumed, an error from `consume` stops the
/// reader at its next batch. Either way the reader thread has ended when
/// this returns.
pub(crate) fn for_each_batch<T, I, B, F>(
    docs: I,
    batch_bytes: usize,
    bytes: B,
    depth: usize,
    mut consume: F,
) -> Result<()>
where
    T: Send,
    I: Iterator<Item = Result<T>> + Send,
    B: Fn(&T) -> usize + Send,
    F: FnMut(Vec<T>) -> Result<()>,
{
    let (tx, rx) = sync_channel::<Result<Vec<T>>>(depth);
    thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut docs = docs;
            loop {
                let batch = next_batch(&mut docs, batch_bytes, &bytes);
                let last = !matches!(&batch, Ok(b) if !b.is_empty());
                // Sending fails only once the consumer has given up.
                if tx.send(batch).is_err() || last {
                    return;
                }
            }
        });
        let result = (|| {
            for batch in &rx {
                let batch = batch?;
                if batch.is_empty() {
                    break;
                }
                consume(batch)?;
            }
            Ok(())
        })();
        // Unblocks a reader waiting on a full channel.
        drop(rx);
        reader
            .join()
            .map_err(|_| anyhow!("the thread reading the inputs panicked"))?;
        result
    })
}

fn next_batch<T>(
    docs: &mut impl Iterator<Item = Result<T>>,
    batch_bytes: usize,
    bytes: impl Fn(&T) -> usize,
) -> Result<Vec<T>> {
    let (mut batch, mut total) = (Vec::new(), 0);
    while total < batch_bytes {
        let Some(doc) = docs.next().transpose()? else {
            break;
        };
        total += bytes(&doc);
        batch.push(doc);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn docs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| "x".repeat(1 + i % 7) + &i.to_string())
            .collect()
    }

    /// The same batches as cutting the documents in one loop, serially.
    #[test]
    fn batches_are_the_serial_ones_in_order() {
        let all = docs(1000);
        let mut expected = vec![];
        let mut it = all.iter().cloned().map(Ok);
        loop {
            let b = next_batch(&mut it, 50, String::len).unwrap();
            if b.is_empty() {
                break;
            }
            expected.push(b);
        }
        // Independently: every batch but the last reaches 50 bytes, and dropping
        // its last document would not.
        for b in &expected[..expected.len() - 1] {
            let bytes: usize = b.iter().map(String::len).sum();
            assert!(bytes >= 50 && bytes - b.last().unwrap().len() < 50);
        }
        for depth in [0, 1, 4] {
            let mut got = vec![];
            for_each_batch(all.iter().cloned().map(Ok), 50, String::len, depth, |b| {
                got.push(b);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, expected, "depth {depth}");
            assert_eq!(got.concat(), all);
        }
    }

    #[test]
    fn no_documents_no_batches() {
        let mut calls = 0;
        for_each_batch(
            std::iter::empty::<Result<String>>(),
            50,
            String::len,
            1,
            |_| {
                calls += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(calls, 0);
    }

    /// A reading error surfaces after the batches read before it, and reading stops there.
    #[test]
    fn a_reading_error_is_returned_in_order() {
        let read = AtomicUsize::new(0);
        let input = (0..100).map(|i| {
            read.fetch_add(1, Ordering::Relaxed);
            if i == 30 {
                bail!("bad line {i}")
            }
            Ok(format!("doc {i}"))
        });
        let mut got = vec![];
        let err = for_each_batch(input, 20, String::len, 2, |b| {
            got.extend(b);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "bad line 30");
        // Batches of 4 documents of 5-6 bytes: the 28 before the batch holding the error.
        assert_eq!(got.len(), 28);
        assert_eq!(read.load(Ordering::Relaxed), 31);
    }

    /// The consumer's error stops the reader long before the end of an endless input.
    #[test]
    fn a_consumer_error_stops_the_reader() {
        let read = AtomicUsize::new(0);
        let input = std::iter::repeat_with(|| {
            read.fetch_add(1, Ordering::Relaxed);
            Ok("0123456789".to_string())
        });
        let mut batches = 0;
        let err = for_each_batch(input, 100, String::len, 2, |_| {
            batches += 1;
            if batches == 3 {
                bail!("disk full");
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        // 3 consumed, at most 2 queued and 1 being cut when the channel closed.
        assert!(read.load(Ordering::Relaxed) <= 6 * 10, "{read:?}");
    }
}
