//! Deterministic fuzzing for baton's parsers: a seeded generator, byte mutations, and a
//! loop that names the case that failed.
//!
//! Host-only and dependency-free, so every crate's ordinary `#[test]`s can drive their own
//! parser with it (`cargo test` runs with overflow checks on, so a wrap is a failure). The
//! count is small by default (`make test`); `BATON_FUZZ_CASES=N` runs N cases per target
//! and `BATON_FUZZ_SEED=S` runs another seed, `BATON_FUZZ_CASE=I` replays one case
//! (docs/performance.md has the long runs).
//! Never touches anything but the buffers it is given.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// xorshift64*: small, fast, and the same on every host.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (zero is remapped: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A random index into a slice of `len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Values that break arithmetic: edges of every width.
pub const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7f,
    0xff,
    0x1000,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x0000_ffff_ffff_f000,
    0x7fff_ffff_ffff_ffff,
    0xffff_ffff_ffff_f000,
    0xffff_ffff_ffff_ffc0,
    u64::MAX,
];

/// Applies one to `rounds` random edits to `buf`: bit flips, byte sets, an interesting
/// big- or little-endian word, a copied chunk, an inserted or removed run, a truncation.
pub fn mutate(buf: &mut Vec<u8>, rng: &mut Rng, rounds: u32) {
    let n = 1 + rng.below(u64::from(rounds.max(1)));
    for _ in 0..n {
        if buf.is_empty() {
            buf.push(rng.byte());
            continue;
        }
        let len = buf.len();
        let at = rng.index(len);
        match rng.below(9) {
            0 | 1 => buf[at] ^= 1 << rng.below(8),
            2 => buf[at] = rng.byte(),
            3 | 4 => {
                let v = INTERESTING[rng.index(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.index(4)];
                // The word's low `width` bytes, in either byte order.
                let src: Vec<u8> = if rng.one_in(2) {
                    v.to_be_bytes()[8 - width..].to_vec()
                } else {
                    v.to_le_bytes()[..width].to_vec()
                };
                let at = at - at % width;
                for (i, b) in src.into_iter().enumerate() {
                    if let Some(slot) = buf.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            5 => {
                let from = rng.index(len);
                let n = rng.index(len.min(64)) + 1;
                let chunk: Vec<u8> = buf[from..(from + n).min(len)].to_vec();
                for (i, b) in chunk.into_iter().enumerate() {
                    if let Some(slot) = buf.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            6 => {
                let n = rng.index(16) + 1;
                let fill = rng.byte();
                buf.splice(at..at, std::iter::repeat_n(fill, n));
            }
            7 => {
                let n = rng.index(16) + 1;
                buf.drain(at..(at + n).min(len));
            }
            _ => {
                if rng.one_in(4) {
                    buf.truncate(at);
                }
            }
        }
    }
}

/// Cases for a target whose `make test` count is `default` (`BATON_FUZZ_CASES` overrides).
pub fn cases(default: u64) -> u64 {
    std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's seed (`BATON_FUZZ_SEED`, else a fixed one: `make test` is reproducible).
pub fn seed() -> u64 {
    std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6261_746f_6e20)
}

/// What a fuzz loop saw, for the long-run counts in docs/performance.md.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases run.
    pub cases: u64,
    /// Cases the parser accepted.
    pub accepted: u64,
}

/// Runs `cases(default)` cases of `target`: each gets its own generator (seeded from the
/// run seed and the case number, so one case replays alone) and returns whether the parser
/// accepted the input. A panic (overflow, index, unwrap, a failed property) is reported
/// with the target, seed and case, then re-raised. Prints the tally on stderr.
pub fn run(target: &str, default: u64, mut case: impl FnMut(&mut Rng) -> bool) -> Tally {
    let seed = seed();
    let n = cases(default);
    // `BATON_FUZZ_CASE=i` replays case i alone.
    let only: Option<u64> = std::env::var("BATON_FUZZ_CASE")
        .ok()
        .and_then(|v| v.parse().ok());
    let range = match only {
        Some(i) => i..i.saturating_add(1),
        None => 0..n,
    };
    let mut t = Tally::default();
    for i in range {
        let mut rng = Rng::new(seed.wrapping_add(i.wrapping_mul(0x1_0000_0001)));
        match catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            Ok(accepted) => t.accepted += u64::from(accepted),
            Err(e) => {
                eprintln!("fuzz {target}: case {i} of seed {seed} failed (replay: BATON_FUZZ_SEED={seed} BATON_FUZZ_CASE={i})");
                std::panic::resume_unwind(e);
            }
        }
        t.cases += 1;
    }
    eprintln!(
        "fuzz {target}: {} cases, {} accepted, seed {seed}",
        t.cases, t.accepted
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn mutation_changes_or_resizes_the_buffer() {
        let mut rng = Rng::new(1);
        let orig = vec![0u8; 256];
        let changed = (0..100)
            .filter(|_| {
                let mut b = orig.clone();
                mutate(&mut b, &mut rng, 4);
                b != orig
            })
            .count();
        assert!(
            changed > 80,
            "only {changed} of 100 mutations changed anything"
        );
    }
}
