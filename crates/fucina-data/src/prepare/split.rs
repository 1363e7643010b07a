//! Deterministic train/validation assignment of documents.
//!
//! Every document has a key (for text, its file's index in the input list and its index within
//! that file, see `doc_key`; for conversations, its index among all records). Document `k` goes to
//! validation when `hash(k) < val_fraction × 2⁶⁴`. Hashing the key (not the text) keeps the split
//! independent of content and identical on every rerun, and a key known without reading earlier
//! files lets `prepare --part` split any subset of the files exactly as one process would.
//!
//! Two corrections, decided from the hashes alone (`SplitStats::corrections`): if
//! `val_fraction > 0`, there are ≥ 2 documents and none was picked, the document with the
//! smallest hash goes to validation; if every document was picked, the one with the largest hash
//! goes back to training. Stats of disjoint sets of documents combine (`SplitStats::merge`), so
//! the parts of a split prepare reach the same corrections as one process.

use crate::loader::splitmix64;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Keeps document hashes unrelated to the loader's use of the same mixer.
const SALT: u64 = 0x7661_6c5f_7370_6c74;

/// Bits of a text document's key that hold its index within its file.
const DOC_BITS: u32 = 40;

fn doc_hash(key: u64) -> u64 {
    splitmix64(key ^ SALT)
}

/// The key of document `doc` (0-based) of input file `file` (its index in the whole input list).
pub(crate) fn doc_key(file: usize, doc: u64) -> Result<u64> {
    if file as u64 >= 1 << (64 - DOC_BITS) || doc >= 1 << DOC_BITS {
        bail!(
            "too many inputs to key documents: file {file} of at most {}, document {doc} of at most {} per file",
            1u64 << (64 - DOC_BITS),
            1u64 << DOC_BITS
        );
    }
    Ok((file as u64) << DOC_BITS | doc)
}

fn threshold(val_fraction: f64) -> u64 {
    // `as` saturates, so a fraction near 1 cannot wrap around.
    (val_fraction * 2f64.powi(64)) as u64
}

/// A document's place in the hash order: `(hash, key)`, a total order even if hashes collide.
pub(crate) type Ranked = (u64, u64);

/// What the corrections need to know about a set of documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SplitStats {
    pub docs: u64,
    /// Documents whose hash alone sends them to validation.
    pub picked: u64,
    pub min: Option<Ranked>,
    pub max: Option<Ranked>,
}

impl SplitStats {
    pub fn observe(&mut self, key: u64, val_fraction: f64) {
        let ranked = (doc_hash(key), key);
        self.docs += 1;
        self.picked += u64::from(ranked.0 < threshold(val_fraction));
        self.min = Some(self.min.map_or(ranked, |m| m.min(ranked)));
        self.max = Some(self.max.map_or(ranked, |m| m.max(ranked)));
    }

    pub fn merge(self, other: Self) -> Self {
        let pick =
            |a: Option<Ranked>, b: Option<Ranked>, f: fn(Ranked, Ranked) -> Ranked| match (a, b) {
                (Some(a), Some(b)) => Some(f(a, b)),
                (a, b) => a.or(b),
            };
        Self {
            docs: self.docs + other.docs,
            picked: self.picked + other.picked,
            min: pick(self.min, other.min, Ord::min),
            max: pick(self.max, other.max, Ord::max),
        }
    }

    /// The keys moved against their hash: `(to validation, to training)`.
    pub fn corrections(&self, val_fraction: f64) -> (Option<u64>, Option<u64>) {
        if self.docs == 0 || threshold(val_fraction) == 0 {
            return (None, None);
        }
        let to_val = (self.picked == 0 && self.docs >= 2)
            .then_some(self.min)
            .flatten();
        let to_train = (self.picked == self.docs).then_some(self.max).flatten();
        (to_val.map(|r| r.1), to_train.map(|r| r.1))
    }
}

pub(crate) struct Split {
    threshold: u64,
    force_val: Option<u64>,
    force_train: Option<u64>,
}

impl Split {
    /// The split of a set of documents whose `stats` are complete.
    pub fn new(stats: &SplitStats, val_fraction: f64) -> Self {
        let (force_val, force_train) = stats.corrections(val_fraction);
        Self {
            threshold: threshold(val_fraction),
            force_val,
            force_train,
        }
    }

    /// The split by hash alone, for one part of the documents: the corrections are the merge's.
    pub fn by_hash(val_fraction: f64) -> Self {
        Self {
            threshold: threshold(val_fraction),
            force_val: None,
            force_train: None,
        }
    }

    pub fn is_val(&self, key: u64) -> bool {
        if self.force_val == Some(key) {
            return true;
        }
        if self.force_train == Some(key) {
            return false;
        }
        doc_hash(key) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_of(keys: impl Iterator<Item = u64> + Clone, fraction: f64) -> Split {
        let mut stats = SplitStats::default();
        keys.for_each(|k| stats.observe(k, fraction));
        Split::new(&stats, fraction)
    }

    #[test]
    fn at_least_one_val_and_one_train() {
        for n in 2..50 {
            let s = split_of(0..n, 1e-9);
            assert_eq!((0..n).filter(|&i| s.is_val(i)).count(), 1, "n={n}");
            let s = split_of(0..n, 0.999_999);
            assert_eq!((0..n).filter(|&i| !s.is_val(i)).count(), 1, "n={n}");
        }
        assert!(!split_of(0..1, 0.01).is_val(0));
        assert!((0..100).all(|i| !split_of(0..100, 0.0).is_val(i)));
    }

    #[test]
    fn fraction_is_roughly_respected() {
        let s = split_of(0..100_000, 0.1);
        let val = (0..100_000).filter(|&i| s.is_val(i)).count();
        assert!((9_000..11_000).contains(&val), "{val}");
    }

    /// Stats gathered in parts and merged in any grouping equal the stats of the whole.
    #[test]
    fn stats_of_parts_merge_to_the_whole() {
        let keys: Vec<u64> = (0..7)
            .flat_map(|f| (0..5).map(move |d| doc_key(f, d).unwrap()))
            .collect();
        for fraction in [0.0, 1e-9, 0.3, 0.999_999] {
            let mut whole = SplitStats::default();
            keys.iter().for_each(|&k| whole.observe(k, fraction));
            for cut in [0, 1, 13, 34, 35] {
                let (mut a, mut b) = (SplitStats::default(), SplitStats::default());
                keys[..cut].iter().for_each(|&k| a.observe(k, fraction));
                keys[cut..].iter().for_each(|&k| b.observe(k, fraction));
                assert_eq!(b.merge(a), whole, "fraction {fraction}, cut {cut}");
            }
        }
    }

    #[test]
    fn keys_are_distinct_and_bounded() {
        assert_ne!(doc_key(0, 1).unwrap(), doc_key(1, 0).unwrap());
        assert!(doc_key(0, 1 << 40).is_err());
        assert!(doc_key(1 << 24, 0).is_err());
    }
}
