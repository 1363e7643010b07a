//! Checks that the ranks of a job agree: same run config at start, same weights afterwards.

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use fucina_dist::{CollectiveError, Communicator};
use std::collections::BTreeMap;

/// Fails on every rank, naming the first differing rank and key, when any rank's resolved
/// config differs from rank 0's (a different file, `--set` or environment on one node).
pub fn check_same_config(config_toml: &str, comm: &dyn Communicator) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut root = config_toml.as_bytes().to_vec();
    comm.broadcast_bytes(0, &mut root)?;
    let differs = root != config_toml.as_bytes();
    let mut flags = vec![0.0f32; comm.size()];
    flags[comm.rank()] = differs as u8 as f32;
    comm.all_reduce_sum(&mut flags)?;
    let Some(first) = flags.iter().position(|&f| f > 0.0) else {
        return Ok(());
    };
    let count = flags.iter().filter(|&&f| f > 0.0).count();
    // The first differing rank explains itself to everyone.
    let mut detail = if comm.rank() == first {
        describe_difference(&String::from_utf8_lossy(&root), config_toml, first).into_bytes()
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(first, &mut detail)?;
    let others = if count > 1 {
        format!(" ({} more ranks differ)", count - 1)
    } else {
        String::new()
    };
    let message = format!("{}{others}", String::from_utf8_lossy(&detail));
    Err(CollectiveError(message).into())
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// "rank 2: run config differs from rank 0 at train.lr (rank 0: 0.001, rank 2: 0.002)".
pub fn describe_difference(root: &str, mine: &str, rank: usize) -> String {
    let parse = |text: &str| {
        let mut out = BTreeMap::new();
        if let Ok(value) = text.parse::<toml::Table>() {
            flatten("", &toml::Value::Table(value), &mut out);
        }
        out
    };
    let (a, b) = (parse(root), parse(mine));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            format!(
                "{k} (rank 0: {}, rank {rank}: {})",
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect();
    if diffs.is_empty() {
        format!("rank {rank}: run config differs from rank 0")
    } else {
        format!(
            "rank {rank}: run config differs from rank 0 at {}",
            diffs.join(", ")
        )
    }
}

/// FNV-1a over the bits of every float parameter, in visit order.
pub fn parameter_hash<B: Backend, M: Module<B>>(model: &M) -> u64 {
    struct Hasher(u64);
    impl<B: Backend> ModuleVisitor<B> for Hasher {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            for v in data.as_slice::<f32>().unwrap_or(&[]) {
                for byte in v.to_bits().to_le_bytes() {
                    self.0 = (self.0 ^ byte as u64).wrapping_mul(0x100000001b3);
                }
            }
        }
    }
    let mut hasher = Hasher(0xcbf29ce484222325);
    model.visit(&mut hasher);
    hasher.0
}

/// Errors on every rank when any replica's weights differ from rank 0's.
pub fn check_replicas<B: Backend, M: Module<B>>(
    model: &M,
    step: u64,
    comm: &dyn Communicator,
) -> Result<u64> {
    let hash = parameter_hash::<B, M>(model);
    if comm.size() == 1 {
        return Ok(hash);
    }
    let mut root = hash.to_le_bytes().to_vec();
    comm.broadcast_bytes(0, &mut root)?;
    let mut flags = vec![0.0f32; comm.size()];
    flags[comm.rank()] = (root != hash.to_le_bytes()) as u8 as f32;
    comm.all_reduce_sum(&mut flags)?;
    let differing: Vec<usize> = (0..comm.size()).filter(|&r| flags[r] > 0.0).collect();
    if !differing.is_empty() {
        let message = format!("replicas diverged at step {step}: the weights of ranks {differing:?} differ from rank 0's");
        return Err(CollectiveError(message).into());
    }
    Ok(hash)
}
