//! The workload's deterministic pseudo-random numbers: SplitMix64, seeded per generation.
//!
//! Owns the mixing function that every other workload module derives numbers from (block
//! choices, fill patterns). Pure arithmetic: no state outside the generator value, no I/O.

/// The SplitMix64 finaliser: a bijective 64-bit mix with full avalanche.
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 generator. Same seed and generation, same sequence, on every build.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The generator of generation `generation` of the chain seeded with `seed`.
    pub const fn for_generation(seed: u64, generation: u32) -> Self {
        Rng {
            state: mix64(seed ^ mix64(GAMMA.wrapping_mul(generation as u64 + 1))),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// A number in `[0, n)` (`n > 0`; `n == 0` gives 0). Multiply-shift, no modulo bias
    /// worth caring about at the ranges used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[lo, hi]` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_generation_give_the_same_sequence() {
        let a: [u64; 4] = {
            let mut r = Rng::for_generation(7, 3);
            [r.next_u64(), r.next_u64(), r.next_u64(), r.next_u64()]
        };
        let mut r = Rng::for_generation(7, 3);
        assert_eq!(a, [r.next_u64(), r.next_u64(), r.next_u64(), r.next_u64()]);
        assert_ne!(a[0], Rng::for_generation(7, 4).next_u64());
        assert_ne!(a[0], Rng::for_generation(8, 3).next_u64());
    }

    #[test]
    fn splitmix_reference_value() {
        // SplitMix64 seeded with 0: the first output is mix64(GAMMA).
        assert_eq!(mix64(GAMMA), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::for_generation(1, 0);
        for n in [1u64, 2, 3, 10, 1000] {
            for _ in 0..200 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
        for _ in 0..100 {
            let v = r.range(5, 9);
            assert!((5..=9).contains(&v));
        }
    }
}
