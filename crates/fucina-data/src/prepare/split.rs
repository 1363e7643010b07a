//! Deterministic train/validation assignment of documents.
//!
//! Document `i` goes to validation when `hash(i) < val_fraction × 2⁶⁴`.
//! Hashing the index (not the text) keeps the split independent of content
//! and identical on every rerun. Two corrections, decided from the hashes
//! alone: if `val_fraction > 0`, there are ≥ 2 documents and none was
//! picked, the document with the smallest hash goes to validation; if every
//! document was picked, the one with the largest hash goes back to training.

use crate::loader::splitmix64;

/// Keeps document hashes unrelated to the loader's use of the same mixer.
const SALT: u64 = 0x7661_6c5f_7370_6c74;

pub(crate) struct Split {
    threshold: u64,
    force_val: Option<u64>,
    force_train: Option<u64>,
}

fn doc_hash(i: u64) -> u64 {
    splitmix64(i ^ SALT)
}

impl Split {
    pub fn new(n_docs: u64, val_fraction: f64) -> Self {
        // `as` saturates, so a fraction near 1 cannot wrap around.
        let threshold = (val_fraction * 2f64.powi(64)) as u64;
        let mut split = Self {
            threshold,
            force_val: None,
            force_train: None,
        };
        if n_docs == 0 || threshold == 0 {
            return split;
        }
        let (mut picked, mut min, mut max) = (0u64, (u64::MAX, 0), (0, 0));
        for i in 0..n_docs {
            let h = doc_hash(i);
            picked += u64::from(h < threshold);
            if h < min.0 {
                min = (h, i);
            }
            if h >= max.0 {
                max = (h, i);
            }
        }
        if picked == 0 && n_docs >= 2 {
            split.force_val = Some(min.1);
        }
        if picked == n_docs {
            split.force_train = Some(max.1);
        }
        split
    }

    pub fn is_val(&self, i: u64) -> bool {
        if self.force_val == Some(i) {
            return true;
        }
        if self.force_train == Some(i) {
            return false;
        }
        doc_hash(i) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_one_val_and_one_train() {
        for n in 2..50 {
            let s = Split::new(n, 1e-9);
            assert_eq!((0..n).filter(|&i| s.is_val(i)).count(), 1, "n={n}");
            let s = Split::new(n, 0.999_999);
            assert_eq!((0..n).filter(|&i| !s.is_val(i)).count(), 1, "n={n}");
        }
        assert!(!Split::new(1, 0.01).is_val(0));
        assert!((0..100).all(|i| !Split::new(100, 0.0).is_val(i)));
    }

    #[test]
    fn fraction_is_roughly_respected() {
        let s = Split::new(100_000, 0.1);
        let val = (0..100_000).filter(|&i| s.is_val(i)).count();
        assert!((9_000..11_000).contains(&val), "{val}");
    }
}
