//! Checks every collective fucina uses against closed-form results. Run it under the launcher of
//! a new cluster (`srun -n 8 fucina-collectives`) before a long job; the tests run it with mpirun.

use anyhow::{ensure, Result};
use fucina_dist::Communicator;

fn check(comm: &dyn Communicator) -> Result<()> {
    let (rank, n) = (comm.rank(), comm.size());
    let ranks_sum = (n * (n - 1) / 2) as f32;

    let mut buf: Vec<f32> = (0..1000)
        .map(|i| ((rank + 1) * (i % 7 + 1)) as f32)
        .collect();
    comm.all_reduce_sum(&mut buf)?;
    for (i, v) in buf.iter().enumerate() {
        let expected = ((i % 7 + 1) * n * (n + 1) / 2) as f32;
        ensure!(
            *v == expected,
            "all_reduce_sum[{i}] = {v}, expected {expected}"
        );
    }

    let mut buckets = fucina_dist::Buckets::default();
    // The second call reuses, shrinks and grows the first call's buffers; the third hands over
    // buffers of its own, as a backend that flattened the buckets itself does.
    for (call, sizes) in [&[7, 1, 4099, 333, 0, 12][..], &[5000, 3, 0], &[64, 9000]]
        .into_iter()
        .enumerate()
    {
        let value = |k: usize, j: usize| (rank * 100 + k + j % 50) as f32;
        let timing = comm.all_reduce_sum_buckets(&mut buckets, sizes, &mut |k, b| match call {
            2 => *b = (0..sizes[k]).map(|j| value(k, j)).collect(),
            _ => b.iter_mut().enumerate().for_each(|(j, v)| *v = value(k, j)),
        })?;
        let squares: f64 = (0..sizes.len())
            .map(|k| fucina_dist::sum_of_squares(buckets.reduced(k)))
            .sum();
        ensure!(
            timing.sum_of_squares == squares,
            "the buckets' sum of squares is {}, expected {squares}",
            timing.sum_of_squares
        );
        ensure!(
            buckets.len() == sizes.len(),
            "{} buckets for {} sizes",
            buckets.len(),
            sizes.len()
        );
        for (k, &size) in sizes.iter().enumerate() {
            let bucket = buckets.reduced(k);
            ensure!(
                bucket.len() == size,
                "bucket {k} has {} values",
                bucket.len()
            );
            for (j, v) in bucket.iter().enumerate() {
                let expected = 100.0 * ranks_sum + (n * (k + j % 50)) as f32;
                ensure!(*v == expected, "bucket {k}[{j}] = {v}, expected {expected}");
            }
        }
    }

    // By address (mpi-device): host memory here, a GPU's where the MPI is GPU-aware. Each
    // span's sum lands in its own buffer, and the sends are left as they were.
    if let Some(collectives) = comm.by_address() {
        let sizes = [3usize, 0, 70_001, 17];
        let value = |k: usize, j: usize| (rank * 1000 + k * 7 + j % 13) as f32;
        let mut sends: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|j| value(k, j)).collect())
            .collect();
        let mut recvs: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![-1.0; n]).collect();
        let spans: Vec<fucina_dist::Span> = sends
            .iter_mut()
            .zip(recvs.iter_mut())
            .map(|(s, r)| fucina_dist::Span {
                send: s.as_mut_ptr() as u64,
                recv: r.as_mut_ptr() as u64,
                len: s.len(),
            })
            .collect();
        let mut order = Vec::new();
        // SAFETY: the buffers outlive the call and are not touched during it.
        let timing = unsafe {
            collectives.all_reduce_sum_spans(sizes.len(), true, &|| (), &mut |k| {
                order.push(k);
                spans[k]
            })?
        };
        ensure!(order == [0, 1, 2, 3], "spans filled in order {order:?}");
        let squares: f64 = recvs.iter().map(|r| fucina_dist::sum_of_squares(r)).sum();
        ensure!(
            timing.sum_of_squares == squares,
            "the spans' sum of squares is {}, expected {squares}",
            timing.sum_of_squares
        );
        for (k, recv) in recvs.iter().enumerate() {
            for (j, v) in recv.iter().enumerate() {
                let expected = 1000.0 * ranks_sum + (n * (k * 7 + j % 13)) as f32;
                ensure!(*v == expected, "span {k}[{j}] = {v}, expected {expected}");
                ensure!(
                    sends[k][j] == value(k, j),
                    "span {k}[{j}]: send overwritten"
                );
            }
        }
    }
    // ZeRO-1 by address: block r reduced to rank r (filled from the last), then gathered.
    if let Some(collectives) = comm.by_address() {
        let block = 1001;
        let value = |r: usize, j: usize| (rank * 10 + r * 3 + j % 11) as f32;
        let mut sends: Vec<Vec<f32>> = (0..n)
            .map(|r| (0..block).map(|j| value(r, j)).collect())
            .collect();
        let mut recvs: Vec<Vec<f32>> = (0..n).map(|_| vec![-1.0; block]).collect();
        let mut order = Vec::new();
        // SAFETY: the buffers outlive the calls and are not touched during them.
        unsafe {
            collectives.reduce_spans_to_owners(&|| (), &mut |r| {
                order.push(r);
                fucina_dist::Span {
                    send: sends[r].as_mut_ptr() as u64,
                    recv: recvs[r].as_mut_ptr() as u64,
                    len: block,
                }
            })?
        };
        ensure!(
            order == (0..n).rev().collect::<Vec<_>>(),
            "blocks reduced in order {order:?}"
        );
        for (j, v) in recvs[rank].iter().enumerate() {
            let expected = 10.0 * ranks_sum + (n * (rank * 3 + j % 11)) as f32;
            ensure!(
                *v == expected,
                "owned block [{j}] = {v}, expected {expected}"
            );
        }
        let mut mine: Vec<f32> = (0..block).map(|j| (rank * block + j) as f32).collect();
        let mut all = vec![-1.0f32; n * block];
        let span = fucina_dist::Span {
            send: mine.as_mut_ptr() as u64,
            recv: all.as_mut_ptr() as u64,
            len: block,
        };
        // SAFETY: as above.
        unsafe { collectives.all_gather_span(span)? };
        let expected: Vec<f32> = (0..n * block).map(|i| i as f32).collect();
        ensure!(all == expected, "all-gather by address differs");
    }
    if comm.by_address().is_none() {
        println!("rank {rank}: no collectives by address (one process, or an MPI below MPI_THREAD_SERIALIZED)");
    }

    let block = 5;
    let send: Vec<f32> = (0..n * block).map(|i| (rank + i) as f32).collect();
    let mut recv = vec![0.0; block];
    comm.reduce_scatter_sum(&send, &mut recv)?;
    for (j, v) in recv.iter().enumerate() {
        let expected = ranks_sum + (n * (rank * block + j)) as f32;
        ensure!(
            *v == expected,
            "reduce_scatter[{j}] = {v}, expected {expected}"
        );
    }

    // The same sums, block by block from the last, each filled just before it travels.
    let mut blocks = vec![-1.0; n * block];
    let mut owned = vec![0.0; block];
    let mut order = Vec::new();
    comm.reduce_blocks_to_owners(&mut blocks, &mut owned, &mut |r, b| {
        order.push(r);
        for (j, v) in b.iter_mut().enumerate() {
            *v = (rank + r * block + j) as f32;
        }
    })?;
    ensure!(
        order == (0..n).rev().collect::<Vec<_>>(),
        "blocks filled in order {order:?}"
    );
    ensure!(
        owned == recv,
        "reduce to owners = {owned:?}, reduce_scatter = {recv:?}"
    );

    let mut gathered = vec![0.0; 3 * n];
    comm.all_gather(&[rank as f32; 3], &mut gathered)?;
    let expected: Vec<f32> = (0..n).flat_map(|r| [r as f32; 3]).collect();
    ensure!(gathered == expected, "all_gather = {gathered:?}");

    for root in [0, n - 1] {
        let payload: Vec<u8> = (0..10_007).map(|i| (i * 31 + root) as u8).collect();
        let mut bytes = if rank == root {
            payload.clone()
        } else {
            vec![1, 2, 3]
        };
        comm.broadcast_bytes(root, &mut bytes)?;
        ensure!(bytes == payload, "broadcast from {root} differs");
    }
    comm.barrier()?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let comm = match fucina_dist::init() {
        Ok(comm) => comm,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match check(comm.as_ref()) {
        Ok(()) => {
            println!(
                "rank {}/{}: local {}/{}: collectives ok",
                comm.rank(),
                comm.size(),
                comm.local_rank(),
                comm.local_size()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rank {}: {e:#}", comm.rank());
            comm.abort(3)
        }
    }
}
