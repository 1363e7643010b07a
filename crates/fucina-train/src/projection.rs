//! `fucina bench project`: the exposed communication a run would see at a given scale, from a
//! measured compute time per step, the run's bucket plan and a stated network, before anyone
//! books the cluster. A ring all-reduce per bucket (NCCL's and most MPIs' choice for large
//! messages): 2(n−1) latencies plus 2(n−1)/n of the bucket over the slowest link.

use fucina_model::LlamaConfig;

/// The network a projection assumes.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Injection bandwidth of one node, Gb/s (4 × 200 Gb/s NICs = 800).
    pub node_gbps: f64,
    pub gpus_per_node: usize,
    /// Between the GPUs of one node (NVLink, Infinity Fabric), Gb/s per GPU.
    pub intra_gbps: f64,
    /// One message's latency, microseconds.
    pub latency_us: f64,
}

impl Network {
    /// Bytes per second a ring of `n` GPUs moves on its slowest link, per GPU.
    fn ring_bytes_per_second(&self, n: usize) -> f64 {
        let gbps = match n <= self.gpus_per_node {
            true => self.intra_gbps,
            false => self.node_gbps / self.gpus_per_node as f64,
        };
        gbps * 1e9 / 8.0
    }

    /// Seconds of a ring all-reduce of `bytes` over `n` GPUs.
    pub fn all_reduce_seconds(&self, bytes: f64, n: usize) -> f64 {
        if n < 2 {
            return 0.0;
        }
        let steps = 2.0 * (n as f64 - 1.0);
        steps * self.latency_us * 1e-6 + steps / n as f64 * bytes / self.ring_bytes_per_second(n)
    }
}

/// The trainable tensors' sizes in the order the backward produces their gradients (LM head
/// first, embedding last), as `GradSync` buckets them.
pub fn backward_order_sizes(config: &LlamaConfig) -> Vec<usize> {
    let h = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.kv_heads() * config.head_dim();
    let ff = config.intermediate_size;
    let v = config.vocab_size;
    let mut sizes = Vec::new();
    if !config.tie_word_embeddings {
        sizes.push(v * h);
    }
    sizes.push(h);
    for _ in 0..config.num_hidden_layers {
        sizes.extend([ff * h, ff * h, h * ff, h, q * h, h * kv, h * kv, h * q, h]);
    }
    sizes.push(v * h);
    sizes
}

/// Bucket sizes (values) for tensors of `sizes` taken in order, as `GradSync` plans them on a
/// GPU (packed on the device).
pub fn plan(sizes: &[usize], max_values: usize) -> Vec<usize> {
    crate::grads::bucket_sizes(sizes, max_values, crate::grads::Packing::Device)
}

/// One scale's projection.
#[derive(Debug, Clone, Copy)]
pub struct Projected {
    pub gpus: usize,
    /// All buckets one after another.
    pub comm_seconds: f64,
    /// Exposed when every bucket is reduced after the backward (`[dist] overlap = false`).
    pub exposed_after: f64,
    /// Exposed when each bucket starts as its last gradient exists during the backward, the
    /// backward taking `backward_share` of the compute (the default, as DDP, torchtitan and
    /// llm.c do).
    pub exposed_overlapped: f64,
}

/// Projects `compute_seconds` per step with `buckets` of f32 values (the reduction is in f32)
/// onto `gpus` GPUs.
pub fn project(
    compute_seconds: f64,
    backward_share: f64,
    buckets: &[usize],
    network: &Network,
    gpus: usize,
) -> Projected {
    let times: Vec<f64> = buckets
        .iter()
        .map(|&n| network.all_reduce_seconds(n as f64 * 4.0, gpus))
        .collect();
    let comm: f64 = times.iter().sum();
    let total: f64 = buckets.iter().sum::<usize>().max(1) as f64;
    let backward = compute_seconds * backward_share;
    let backward_start = compute_seconds - backward;
    // Gradients appear at a steady rate through the backward; a bucket is ready when its last one is.
    let (mut done, mut filled) = (backward_start, 0usize);
    for (&n, &t) in buckets.iter().zip(&times) {
        filled += n;
        let ready = backward_start + backward * filled as f64 / total;
        done = done.max(ready) + t;
    }
    let overlapped = (done - compute_seconds).max(0.0);
    Projected {
        gpus,
        comm_seconds: comm,
        exposed_after: comm / (compute_seconds + comm),
        exposed_overlapped: overlapped / (compute_seconds + overlapped),
    }
}

/// Median compute seconds per step (step time less synchronisation) of a run's metrics.jsonl.
pub fn measured_compute_seconds(metrics: &std::path::Path) -> anyhow::Result<f64> {
    use anyhow::Context;
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut compute: Vec<f64> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| {
            let step = event.get("step_seconds")?.as_f64()?;
            let sync = event.get("sync_seconds")?.as_f64()?;
            Some(step - sync)
        })
        .collect();
    // The first step pays for kernel compilation and allocation.
    if compute.len() > 1 {
        compute.remove(0);
    }
    anyhow::ensure!(
        !compute.is_empty(),
        "{} holds no training steps (lines with step_seconds and sync_seconds)",
        metrics.display()
    );
    Ok(crate::bench::median(compute))
}

/// Prints the projection table.
pub fn print(
    model: &str,
    compute_seconds: f64,
    backward_share: f64,
    bucket_mb: f64,
    network: &Network,
    gpus: &[usize],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        compute_seconds > 0.0 && bucket_mb > 0.0 && (0.0..=1.0).contains(&backward_share),
        "compute seconds and bucket MB must be positive, the backward share within 0..1"
    );
    anyhow::ensure!(
        network.node_gbps > 0.0 && network.intra_gbps > 0.0 && network.gpus_per_node > 0,
        "bandwidths and GPUs per node must be positive"
    );
    let config = crate::config::model_config(model)?;
    let buckets = plan(
        &backward_order_sizes(&config),
        (bucket_mb * 1e6 / 4.0) as usize,
    );
    println!(
        "projection for {model}: {:.1}M parameters in {} buckets of ≤ {bucket_mb} MB (f32), {compute_seconds:.3} s of compute per step, backward {:.0} % of it",
        config.num_parameters() as f64 / 1e6,
        buckets.len(),
        backward_share * 100.0
    );
    println!(
        "network: {} Gb/s per node of {} GPUs ({:.0} Gb/s per GPU between nodes), {} Gb/s within a node, {} µs per message; ring all-reduce",
        network.node_gbps,
        network.gpus_per_node,
        network.node_gbps / network.gpus_per_node as f64,
        network.intra_gbps,
        network.latency_us
    );
    println!(
        "{:>6} {:>10} {:>22} {:>26}",
        "GPUs", "comm ms", "exposed, after backward", "exposed, during backward"
    );
    for &n in gpus {
        let p = project(compute_seconds, backward_share, &buckets, network, n);
        println!(
            "{:>6} {:>10.1} {:>21.1} % {:>25.1} %",
            n,
            p.comm_seconds * 1e3,
            p.exposed_after * 100.0,
            p.exposed_overlapped * 100.0
        );
    }
    println!("first column: [dist] overlap = false (reduce after the backward); second: the default overlap, each bucket reduced as the backward completes it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Network = Network {
        node_gbps: 800.0,
        gpus_per_node: 4,
        intra_gbps: 3600.0,
        latency_us: 0.0,
    };

    #[test]
    fn ring_time_is_the_textbook_one() {
        // 8 GPUs over 2 nodes: 200 Gb/s = 25 GB/s each; 2·7/8 of 1 GB.
        let t = NET.all_reduce_seconds(1e9, 8);
        assert!((t - 1.75 / 25.0).abs() < 1e-12, "{t}");
        assert_eq!(NET.all_reduce_seconds(1e9, 1), 0.0);
    }

    #[test]
    fn overlap_hides_all_but_the_last_bucket() {
        // 10 equal buckets of 0.1 s each at 8 GPUs inside a 10 s step: all hidden but the last.
        let per = (0.1 * 25e9 / 1.75 / 4.0) as usize;
        let p = project(10.0, 0.6, &[per; 10], &NET, 8);
        assert!((p.comm_seconds - 1.0).abs() < 1e-6);
        let last = 0.1 / 10.1;
        assert!((p.exposed_overlapped - last).abs() < 1e-6, "{p:?}");
        assert!((p.exposed_after - 1.0 / 11.0).abs() < 1e-9);
    }

    #[test]
    fn buckets_follow_the_parameter_count() {
        let config = crate::config::model_config("small").unwrap();
        let sizes = backward_order_sizes(&config);
        assert_eq!(sizes.iter().sum::<usize>(), config.num_parameters());
        let buckets = plan(&sizes, 1 << 20);
        assert_eq!(buckets.iter().sum::<usize>(), config.num_parameters());
    }
}
