//! A keyed pseudo-random permutation of `0..n` in O(1) memory.
//!
//! A Feistel network is a bijection on `bits`-bit integers for any round
//! function, so it permutes `0..2^bits` with `2^bits` the next power of two
//! ≥ n. Cycle-walking (re-applying it until the value lands below `n`)
//! restricts that to a bijection of `0..n`: following a cycle from a point
//! below `n` must reach another point below `n`, at worst the start itself.
//! Since `2^bits < 2n`, fewer than two applications are needed on average.
//!
//! The halves may differ in width by one bit (an unbalanced Feistel): each
//! round maps `(L: a bits, R: b bits)` to `(R: b bits, L ⊕ F(R) mod 2^a)`,
//! which stays invertible, and the widths swap for the next round.

const ROUNDS: usize = 6;

/// SplitMix64 (Steele, Lea & Flood 2014): a cheap, well-mixed 64-bit hash
/// used for keys and round functions.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A bijection of `0..n` chosen by `(seed, epoch)`.
#[derive(Debug, Clone)]
pub struct Permutation {
    n: u64,
    left_bits: u32,
    right_bits: u32,
    keys: [u64; ROUNDS],
}

impl Permutation {
    pub fn new(n: u64, seed: u64, epoch: u64) -> Self {
        assert!(n > 0, "cannot permute an empty range");
        assert!(n <= 1 << 62, "permutation domain {n} too large");
        let bits = 64 - (n - 1).leading_zeros();
        let base = splitmix64(splitmix64(seed) ^ epoch);
        let keys = std::array::from_fn(|r| splitmix64(base ^ splitmix64(r as u64)));
        Self {
            n,
            left_bits: bits / 2,
            right_bits: bits - bits / 2,
            keys,
        }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The image of `i`; `i` must be below `len()`.
    pub fn apply(&self, i: u64) -> u64 {
        assert!(i < self.n, "index {i} outside permutation of {}", self.n);
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.n {
                return x;
            }
        }
    }

    fn feistel(&self, mut x: u64) -> u64 {
        let (mut a, mut b) = (self.left_bits, self.right_bits);
        for key in self.keys {
            let (l, r) = (x >> b, x & mask(b));
            let f = splitmix64(r ^ key) & mask(a);
            x = (r << a) | (l ^ f);
            std::mem::swap(&mut a, &mut b);
        }
        x
    }
}

fn mask(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        u64::MAX >> (64 - bits)
    }
}
