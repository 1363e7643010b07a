//! Joining the parts of a split prepare into one dataset, byte-identical to a single-process
//! prepare of the same inputs: the parts' streams are concatenated in file order and cut into
//! shards again, and the split's corrections, which need every document's hash, are applied here.

use super::meta::{PrepareMeta, SplitMeta, META_FORMAT};
use super::part::{Part, PartMeta, PARTS_DIR, PART_FILE};
use super::sink::SplitSink;
use super::split::SplitStats;
use super::stream::Placed;
use super::{outdir, PrepareSummary};
use crate::progress::bytes_bar;
use crate::shard::{TokenShard, TokenWidth};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Tokens copied at a time.
const CHUNK: usize = 1 << 20;

/// Merges the complete parts under `<out_dir>/parts/` into `out_dir`, then deletes them.
pub fn merge_parts(out_dir: &Path, progress: bool) -> Result<PrepareSummary> {
    let parts = read_parts(out_dir)?;
    let first = &parts[0];
    let stats = parts
        .iter()
        .fold(SplitStats::default(), |s, p| s.merge(p.stats));
    if stats.docs == 0 {
        bail!("the inputs contain no documents (all files are empty)");
    }
    let (to_val, to_train) = stats.corrections(first.val_fraction);
    let moved = |key: Option<u64>, val: bool| -> Result<Option<(usize, Placed)>> {
        let Some(key) = key else { return Ok(None) };
        parts
            .iter()
            .enumerate()
            .find_map(|(i, p)| {
                p.placed
                    .iter()
                    .find(|d| d.key == key && d.val == val)
                    .map(|d| (i, *d))
            })
            .map(Some)
            .context("a part's part.json does not say where its first or last document by hash went; prepare that part again")
    };
    let to_val = moved(to_val, false)?;
    let to_train = moved(to_train, true)?;

    outdir::claim_beside(out_dir, PARTS_DIR)?;
    let total: u64 = parts.iter().map(|p| p.train.tokens + p.val.tokens).sum();
    let bar = bytes_bar(
        total * TokenWidth::for_vocab(first.vocab_size).bytes() as u64,
        progress,
        "merging",
    );
    let sink = |prefix| {
        SplitSink::new(
            out_dir,
            prefix,
            first.vocab_size,
            first.eos_id,
            first.shard_tokens,
        )
    };
    let (mut train, mut val) = (sink("train"), sink("val"));
    for (i, part) in parts.iter().enumerate() {
        let dir = part.part.dir(out_dir);
        let divert = |m: Option<(usize, Placed)>| m.filter(|m| m.0 == i).map(|m| m.1);
        copy_split(
            &dir,
            &part.train,
            divert(to_val),
            &mut train,
            &mut val,
            &bar,
        )?;
        copy_split(
            &dir,
            &part.val,
            divert(to_train),
            &mut val,
            &mut train,
            &bar,
        )?;
    }
    train.finish()?;
    val.finish()?;
    bar.finish_and_clear();
    let moved_docs = |m: Option<(usize, Placed)>| u64::from(m.is_some());
    train.docs =
        parts.iter().map(|p| p.train.docs).sum::<u64>() - moved_docs(to_val) + moved_docs(to_train);
    val.docs = stats.docs - train.docs;

    let meta = PrepareMeta {
        format: META_FORMAT.into(),
        fucina_data_version: first.fucina_data_version.clone(),
        tokenizer_sha256: first.tokenizer_sha256.clone(),
        vocab_size: first.vocab_size,
        eos_id: first.eos_id,
        bytes_per_token: TokenWidth::for_vocab(first.vocab_size).bytes() as u32,
        val_fraction: first.val_fraction,
        shard_tokens: first.shard_tokens,
        inputs: first.inputs.clone(),
        files: first.files.clone(),
        train: train.meta(),
        val: val.meta(),
        chat: None,
    };
    meta.write(out_dir)?;
    let parts_dir = out_dir.join(PARTS_DIR);
    std::fs::remove_dir_all(&parts_dir)
        .with_context(|| format!("merged, but could not remove {}", parts_dir.display()))?;
    Ok(meta.summary())
}

/// Appends one split of a part to `to`, except the document `divert`, which goes to `other`.
fn copy_split(
    dir: &Path,
    split: &SplitMeta,
    divert: Option<Placed>,
    to: &mut SplitSink,
    other: &mut SplitSink,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let (skip_from, skip_to) =
        divert.map_or((u64::MAX, u64::MAX), |d| (d.offset, d.offset + d.len));
    let mut pos = 0u64;
    let mut buf = vec![0u32; CHUNK];
    for name in &split.shards {
        let shard = TokenShard::open(dir.join(name))?;
        let mut start = 0;
        while start < shard.len() {
            // Chunks end where the diverted document starts and ends, so it moves whole.
            let mut n = (shard.len() - start).min(CHUNK) as u64;
            for edge in [skip_from, skip_to] {
                if edge > pos {
                    n = n.min(edge - pos);
                }
            }
            let chunk = &mut buf[..n as usize];
            shard.read(start, chunk);
            if (skip_from..skip_to).contains(&pos) {
                other.push(chunk)?;
            } else {
                to.push(chunk)?;
            }
            bar.inc(n * shard.width().bytes() as u64);
            start += n as usize;
            pos += n;
        }
    }
    if pos != split.tokens {
        bail!(
            "{}: its shards hold {pos} tokens, its part.json says {}; prepare that part again",
            dir.display(),
            split.tokens
        );
    }
    Ok(())
}

/// Reads every part's `part.json`, checking that all N parts of one prepare are there and agree.
fn read_parts(out_dir: &Path) -> Result<Vec<PartMeta>> {
    let parts_dir = out_dir.join(PARTS_DIR);
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&parts_dir).with_context(|| {
        format!(
            "no parts to merge in {} (run `fucina prepare --part I/N --out {}` for every part first)",
            parts_dir.display(),
            out_dir.display()
        )
    })?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", parts_dir.display()))?;
        if entry.path().join(PART_FILE).is_file() {
            found.push(PartMeta::read(&entry.path())?);
        }
    }
    let Some(count) = found.first().map(|p| p.part.count) else {
        bail!(
            "no complete part in {} (a part is complete when its part.json is written)",
            parts_dir.display()
        );
    };
    if let Some(other) = found.iter().find(|p| p.part.count != count) {
        bail!(
            "{} holds parts of {count} and of {} parts; remove the parts of the prepare you do not want",
            parts_dir.display(),
            other.part.count
        );
    }
    found.sort_by_key(|p| p.part.index);
    let missing: Vec<String> = (0..count)
        .filter(|&i| found.binary_search_by_key(&i, |p| p.part.index).is_err())
        .map(|i| Part { index: i, count }.to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "parts {} are missing or unfinished (no part.json) in {}; run `fucina prepare --part` for them",
            missing.join(", "),
            parts_dir.display()
        );
    }
    let first = &found[0];
    let mut next_file = 0;
    for p in &found {
        let same = p.tokenizer_sha256 == first.tokenizer_sha256
            && p.val_fraction == first.val_fraction
            && p.shard_tokens == first.shard_tokens
            && p.inputs == first.inputs
            && p.files == first.files
            && p.fucina_data_version == first.fucina_data_version;
        if !same {
            bail!(
                "part {} was prepared with other inputs, tokenizer or options than part {}; \
                 every part must be run with the same arguments but --part",
                p.part,
                first.part
            );
        }
        if p.first_file != next_file {
            bail!(
                "part {} does not start where the part before it ends",
                p.part
            );
        }
        next_file += p.file_count;
    }
    if next_file != first.files.len() {
        bail!(
            "the parts cover {next_file} of the {} input files",
            first.files.len()
        );
    }
    Ok(found)
}
