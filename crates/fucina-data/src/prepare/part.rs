//! One part of a prepare split over processes: the I-th of N contiguous runs of the input files,
//! tokenized into `<out>/parts/part_I_of_N/` with a `part.json` that the merge reads.

use super::keyed::count_records;
use super::meta::SplitMeta;
use super::split::{Split, SplitStats};
use super::stream::{write_streams, Placed};
use super::{outdir, stream_eos, PrepareOptions};
use crate::input::collect_files;
use crate::progress::bytes_bar;
use crate::tokenizer::TextTokenizer;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The directory under a prepare output that holds its parts until they are merged.
pub const PARTS_DIR: &str = "parts";
pub const PART_FILE: &str = "part.json";
const PART_FORMAT: &str = "fucina-prepare-part";

/// Part `index` of `count`, 0-based (`--part 0/8` … `--part 7/8`, as `$SLURM_ARRAY_TASK_ID` or
/// `$SLURM_PROCID` count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Part {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let parsed = s.split_once('/').and_then(|(i, n)| {
            Some((
                i.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        });
        let Some((index, count)) = parsed else {
            bail!("--part takes I/N (part I of N, counted from 0), e.g. 0/8; got {s:?}");
        };
        if count == 0 || index >= count {
            bail!("--part {s}: I must be in 0..N (parts are counted from 0, so the last of {count} is {}/{count})", count.max(1) - 1);
        }
        Ok(Part { index, count })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Part {
    /// The files of this part, given every file's size: file `j` belongs to the part its first byte falls in when the
    /// inputs' bytes are cut into `count` equal runs, so parts are contiguous and balanced by
    /// size (a part may get no file when there are fewer files than parts).
    pub fn files(&self, sizes: &[u64]) -> Range<usize> {
        let total: u128 = sizes.iter().map(|&b| b as u128).sum();
        let (mut start, mut first, mut end) = (0u128, sizes.len(), sizes.len());
        for (j, &bytes) in sizes.iter().enumerate() {
            let owner = match (start * self.count as u128).checked_div(total) {
                Some(at) => (at as usize).min(self.count - 1),
                None => j * self.count / sizes.len(),
            };
            if owner == self.index && first == sizes.len() {
                first = j;
            }
            if owner > self.index {
                end = j;
                break;
            }
            start += bytes as u128;
        }
        first.min(end)..end
    }

    pub fn dir(&self, out_dir: &Path) -> PathBuf {
        out_dir
            .join(PARTS_DIR)
            .join(format!("part_{:06}_of_{:06}", self.index, self.count))
    }
}

/// `part.json`: what the merge needs of one part, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartMeta {
    pub format: String,
    pub part: Part,
    pub fucina_data_version: String,
    pub tokenizer_sha256: String,
    pub vocab_size: u32,
    pub eos_id: u32,
    pub val_fraction: f64,
    pub shard_tokens: usize,
    /// The inputs and files of the whole prepare, which every part must agree on.
    pub inputs: Vec<String>,
    pub files: Vec<(String, u64)>,
    /// This part's files: `files[first_file..first_file + file_count]`.
    pub first_file: usize,
    pub file_count: usize,
    pub(crate) stats: SplitStats,
    /// Where this part's candidates for the split's corrections landed.
    pub(crate) placed: Vec<Placed>,
    pub train: SplitMeta,
    pub val: SplitMeta,
}

impl PartMeta {
    pub fn read(dir: &Path) -> Result<Self> {
        crate::fsutil::read_json(&dir.join(PART_FILE), PART_FORMAT, |m: &Self| &m.format)
    }
}

/// Tokenizes part `part` of `inputs` into `part.dir(out_dir)`. Text only: conversations are
/// prepared in one process.
pub fn prepare_part(
    tokenizer: &TextTokenizer,
    inputs: &[PathBuf],
    out_dir: &Path,
    opts: &PrepareOptions,
    part: Part,
) -> Result<PartMeta> {
    super::check_options(opts)?;
    if opts.pack {
        bail!(
            "--pack cannot be used with --part: parts split text for pre-training, which is not \
             packed by prepare (set the run option data.document_mask = true to keep attention \
             within documents); pack conversations in one process, without --part"
        );
    }
    let files = collect_files(inputs, &opts.text_column)?;
    let sizes: Vec<u64> = files.iter().map(|f| f.bytes).collect();
    let range = part.files(&sizes);
    let mine = &files[range.clone()];
    let bar = bytes_bar(
        mine.iter().map(|f| f.bytes).sum(),
        opts.progress,
        "scanning",
    );
    let counted = count_records(mine, &bar)?;
    if let Some(at) = counted.first_chat {
        bail!(
            "{at} is a conversation: --part splits text for pre-training; prepare conversations \
             in one process (without --part)"
        );
    }
    let eos_id = stream_eos(tokenizer)?;
    let stats = counted.stats(range.start, opts.val_fraction)?;
    let track: Vec<u64> = [stats.min, stats.max]
        .iter()
        .flatten()
        .map(|r| r.1)
        .collect();

    let dir = part.dir(out_dir);
    std::fs::create_dir_all(out_dir.join(PARTS_DIR))
        .with_context(|| format!("creating {}", out_dir.join(PARTS_DIR).display()))?;
    outdir::claim(&dir)?;
    bar.reset();
    bar.set_message("tokenizing");
    let split = Split::by_hash(opts.val_fraction);
    let streams = write_streams(
        tokenizer,
        mine,
        range.start,
        &split,
        &track,
        &dir,
        eos_id,
        opts.shard_tokens,
        &bar,
    )?;
    super::check_unchanged(counted.total(), streams.docs())?;
    bar.finish_and_clear();

    let meta = PartMeta {
        format: PART_FORMAT.into(),
        part,
        fucina_data_version: env!("CARGO_PKG_VERSION").into(),
        tokenizer_sha256: tokenizer.sha256().into(),
        vocab_size: tokenizer.vocab_size(),
        eos_id,
        val_fraction: opts.val_fraction,
        shard_tokens: opts.shard_tokens,
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        files: files
            .iter()
            .map(|f| (f.path.display().to_string(), f.bytes))
            .collect(),
        first_file: range.start,
        file_count: range.len(),
        stats,
        placed: streams.placed,
        train: streams.train.meta(),
        val: streams.val.meta(),
    };
    crate::fsutil::write_json(&dir.join(PART_FILE), &meta)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file belongs to exactly one part, parts are contiguous and in order.
    #[test]
    fn parts_cover_the_files_once_in_order() {
        for sizes in [
            vec![],
            vec![5],
            vec![0, 0, 0],
            vec![100, 1, 1, 1, 1],
            vec![1, 1, 1, 1, 100],
            vec![10; 17],
            vec![3, 0, 7, 1, 0, 0, 9, 2],
        ] {
            for count in 1..=10 {
                let mut next = 0;
                for index in 0..count {
                    let r = Part { index, count }.files(&sizes);
                    assert_eq!(r.start, next, "{sizes:?} {index}/{count}");
                    next = r.end;
                }
                assert_eq!(next, sizes.len(), "{sizes:?} /{count}");
            }
        }
    }

    #[test]
    fn parts_balance_bytes() {
        for index in 0..4 {
            assert_eq!(Part { index, count: 4 }.files(&[10; 100]).len(), 25);
        }
    }

    #[test]
    fn part_syntax() {
        assert_eq!("3/8".parse::<Part>().unwrap(), Part { index: 3, count: 8 });
        for bad in ["8/8", "1/0", "3", "a/b", "-1/4"] {
            assert!(bad.parse::<Part>().is_err(), "{bad}");
        }
    }
}
