//! Fill patterns and block access: what the workload writes and checks byte for byte.
//!
//! Owns the pattern function (a value per 8-byte word, derived from the chain seed, the
//! generation that filled the block and the block's address) and the running checksum.
//! Touches memory only through kho's safe accessors on `kho::PhysMem` (no `unsafe` here),
//! only inside blocks the caller owns.

use super::alloc::vec::Vec;
use core::fmt;

use kho::PhysMem;

use super::rng::mix64;

/// Multiplier that spreads word indices over the 64-bit space.
const WORD_STRIDE: u64 = 0x9e37_79b9_7f4a_7c15;
/// FNV-1a 64-bit prime, applied per word.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// FNV-1a 64-bit offset basis.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The pattern seed of a block filled by `generation` at `phys` in the chain `seed`.
pub const fn pattern_seed(seed: u64, generation: u32, phys: u64) -> u64 {
    mix64(seed ^ mix64(generation as u64 ^ 0x6261_746f_6e00_0000) ^ phys.rotate_left(17))
}

/// The 8-byte word at word index `i` of a block with pattern seed `pattern`.
#[inline]
pub const fn word(pattern: u64, i: u64) -> u64 {
    let x = pattern ^ i.wrapping_mul(WORD_STRIDE);
    x ^ (x >> 29)
}

#[inline]
fn fold(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(FNV_PRIME)
}

/// Why a block's bytes are not what was written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PatternError {
    /// The block is not RAM according to `PhysMem`.
    NotRam { phys: u64, len: u64 },
    /// The byte at `phys + offset` differs from the pattern.
    Mismatch {
        phys: u64,
        offset: u64,
        expected: u8,
        got: u8,
    },
    /// Every byte matched the pattern but the checksum differs from the recorded one
    /// (the record and the pattern disagree).
    Checksum {
        phys: u64,
        recorded: u64,
        computed: u64,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PatternError::NotRam { phys, len } => write!(f, "block {phys:#x}+{len:#x} is not RAM"),
            PatternError::Mismatch { phys, offset, expected, got } => write!(
                f,
                "byte {:#x} (block {phys:#x} offset {offset:#x}) is {got:#04x}, expected {expected:#04x}",
                phys + offset
            ),
            PatternError::Checksum { phys, recorded, computed } => write!(
                f,
                "block {phys:#x} checksum {computed:#018x} != recorded {recorded:#018x}"
            ),
        }
    }
}

/// Bytes moved through the workload's buffer at a time (a multiple of 8).
const CHUNK: usize = 4096;

/// Checks that `len` bytes at `phys` (8-byte aligned) are RAM; the length as `usize`.
fn span<M: PhysMem + ?Sized>(mem: &M, phys: u64, len: u64) -> Result<usize, PatternError> {
    let bad = PatternError::NotRam { phys, len };
    let n = usize::try_from(len).map_err(|_| bad)?;
    if !phys.is_multiple_of(8) || mem.ptr(phys, n).is_none() {
        return Err(bad);
    }
    Ok(n)
}

/// Copies `len` bytes at `phys` into a new vector (the record blob of the previous image).
///
/// The caller owns the range (it restored the block holding it).
pub fn read_bytes<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    len: u64,
) -> Result<Vec<u8>, PatternError> {
    let n = usize::try_from(len).map_err(|_| PatternError::NotRam { phys, len })?;
    kho::read_bytes(mem, phys, n).ok_or(PatternError::NotRam { phys, len })
}

/// Copies `data` to `phys` (the record blob of this generation, in pages the caller owns).
pub fn write_bytes<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    data: &[u8],
) -> Result<(), PatternError> {
    let len = data.len() as u64;
    if kho::write_bytes(mem, phys, data) {
        Ok(())
    } else {
        Err(PatternError::NotRam { phys, len })
    }
}

/// Fills `[phys, phys + len)` with the pattern `pattern`; returns its checksum.
///
/// `phys` must be page aligned and the range owned by the caller (a block it allocated).
/// Writes through `kho::write_bytes`, a chunk at a time.
pub fn fill<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    len: u64,
    pattern: u64,
) -> Result<u64, PatternError> {
    let n = span(mem, phys, len)?;
    let mut h = FNV_BASIS;
    let mut buf = [0u8; CHUNK];
    let mut off = 0;
    while off < n {
        let chunk = &mut buf[..(n - off).min(CHUNK)];
        let first = (off / 8) as u64;
        let (words, tail) = chunk.as_chunks_mut::<8>();
        for (j, w) in words.iter_mut().enumerate() {
            let v = word(pattern, first + j as u64);
            *w = v.to_le_bytes();
            h = fold(h, v);
        }
        // The tail (last chunk only): the first bytes of the next word, folded one by one.
        let last = word(pattern, first + words.len() as u64).to_le_bytes();
        for (b, v) in tail.iter_mut().zip(last) {
            *b = v;
            h = fold(h, u64::from(v));
        }
        if !kho::write_bytes(mem, phys + off as u64, chunk) {
            return Err(PatternError::NotRam { phys, len });
        }
        off += chunk.len();
    }
    Ok(h)
}

/// Checks every byte of `[phys, phys + len)` against the pattern and the checksum
/// `recorded`; returns the checksum. Reads the whole words in place (`kho::with_words`, no
/// copy), the tail bytes through `kho::read_bytes`.
pub fn verify<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    len: u64,
    pattern: u64,
    recorded: u64,
) -> Result<u64, PatternError> {
    let n = span(mem, phys, len)?;
    let not_ram = PatternError::NotRam { phys, len };
    let words = n / 8;
    let (h, bad) =
        kho::with_words(mem, phys, words, |ws| check_words(ws, pattern)).ok_or(not_ram)?;
    if let Some(i) = bad {
        let got = kho::read_u64(mem, phys + 8 * i as u64).ok_or(not_ram)?;
        let want = word(pattern, i as u64);
        let byte = ((got ^ want).trailing_zeros() / 8) as usize;
        return Err(PatternError::Mismatch {
            phys,
            offset: i as u64 * 8 + byte as u64,
            expected: want.to_le_bytes()[byte],
            got: got.to_le_bytes()[byte],
        });
    }
    let mut h = h;
    // The tail: the first bytes of the next word, folded one by one.
    let tail_at = phys + 8 * words as u64;
    let tail = if n > 8 * words {
        kho::read_bytes(mem, tail_at, n - 8 * words).ok_or(not_ram)?
    } else {
        Vec::new()
    };
    let last = word(pattern, words as u64).to_le_bytes();
    for (k, (&b, want)) in tail.iter().zip(last).enumerate() {
        if b != want {
            return Err(PatternError::Mismatch {
                phys,
                offset: words as u64 * 8 + k as u64,
                expected: want,
                got: b,
            });
        }
        h = fold(h, u64::from(b));
    }
    if h != recorded {
        return Err(PatternError::Checksum {
            phys,
            recorded,
            computed: h,
        });
    }
    Ok(h)
}

/// Words checked per group: one branch per group.
const GROUP: usize = 8;

/// Checks the words `ws` (as stored, little-endian) against the pattern from word 0 and folds
/// them into the checksum: `(checksum, index of the first word that differs)`.
fn check_words(ws: &[u64], pattern: u64) -> (u64, Option<usize>) {
    let (groups, rest) = ws.as_chunks::<GROUP>();
    let (mut h, same) = check_groups(groups, pattern, FNV_BASIS);
    if !same {
        return (h, first_mismatch(ws, pattern));
    }
    let first = groups.len() * GROUP;
    for (k, &w) in rest.iter().enumerate() {
        let got = u64::from_le(w);
        if got != word(pattern, (first + k) as u64) {
            return (h, Some(first + k));
        }
        h = fold(h, got);
    }
    (h, None)
}

/// The hot loop of the workload's check of every restored byte (57 instructions per 64
/// bytes on the target): each group is loaded in pairs, compared with its pattern words (an
/// OR of the differences, which compiles to a chain of conditional compares and one branch
/// per group) and folded into the checksum `h`. False at the first group that differs
/// (the caller finds the word). Not inlined: inlined into a caller with more exits, the
/// compiler splits the chain back into a branch per word.
#[inline(never)]
fn check_groups(groups: &[[u64; GROUP]], pattern: u64, mut h: u64) -> (u64, bool) {
    for (g, grp) in groups.iter().enumerate() {
        let first = (g * GROUP) as u64;
        let w = grp.map(u64::from_le);
        let mut diff = [0u64; GROUP];
        for (k, d) in diff.iter_mut().enumerate() {
            *d = w[k] ^ word(pattern, first + k as u64);
        }
        if (diff[0] | diff[1]) | (diff[2] | diff[3]) | (diff[4] | diff[5]) | (diff[6] | diff[7])
            != 0
        {
            return (h, false);
        }
        for &got in &w {
            h = fold(h, got);
        }
    }
    (h, true)
}

/// Index of the first word of `ws` that is not the pattern's.
#[cold]
fn first_mismatch(ws: &[u64], pattern: u64) -> Option<usize> {
    ws.iter()
        .enumerate()
        .position(|(i, &w)| u64::from_le(w) != word(pattern, i as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kho::Arena;

    const BASE: u64 = 0x4000_0000;

    #[test]
    fn filled_block_verifies_and_a_flipped_bit_is_named() {
        let a = Arena::new(BASE, 4 * 4096);
        let len = 3 * 4096 + 13;
        let p = pattern_seed(1, 2, BASE);
        let sum = fill(&a, BASE, len, p).unwrap();
        assert_eq!(verify(&a, BASE, len, p, sum), Ok(sum));
        a.flip_bit(BASE + 4096 + 5, 3);
        let err = verify(&a, BASE, len, p, sum).unwrap_err();
        let good = word(p, 512).to_le_bytes()[5];
        assert_eq!(
            err,
            PatternError::Mismatch {
                phys: BASE,
                offset: 4096 + 5,
                expected: good,
                got: good ^ 8
            }
        );
    }

    #[test]
    fn every_flipped_byte_is_named_at_its_offset() {
        // Lengths cover groups of eight words, the words after the last group and the tail.
        let a = Arena::new(BASE, 4096);
        for len in [8u64, 64, 72, 100, 135, 256] {
            let p = pattern_seed(3, 1, BASE);
            let sum = fill(&a, BASE, len, p).unwrap();
            assert_eq!(verify(&a, BASE, len, p, sum), Ok(sum));
            for off in 0..len {
                a.flip_bit(BASE + off, (off % 8) as u32);
                let want = word(p, off / 8).to_le_bytes()[(off % 8) as usize];
                assert_eq!(
                    verify(&a, BASE, len, p, sum),
                    Err(PatternError::Mismatch {
                        phys: BASE,
                        offset: off,
                        expected: want,
                        got: want ^ (1 << (off % 8))
                    }),
                    "len {len} offset {off}"
                );
                a.flip_bit(BASE + off, (off % 8) as u32);
            }
        }
    }

    #[test]
    fn tail_bytes_are_checked() {
        let a = Arena::new(BASE, 4096);
        let p = pattern_seed(9, 0, BASE);
        let sum = fill(&a, BASE, 21, p).unwrap();
        a.flip_bit(BASE + 20, 0);
        assert!(matches!(
            verify(&a, BASE, 21, p, sum),
            Err(PatternError::Mismatch { offset: 20, .. })
        ));
    }

    #[test]
    fn another_generations_pattern_does_not_verify() {
        let a = Arena::new(BASE, 4096);
        let sum = fill(&a, BASE, 4096, pattern_seed(1, 5, BASE)).unwrap();
        assert!(matches!(
            verify(&a, BASE, 4096, pattern_seed(1, 6, BASE), sum),
            Err(PatternError::Mismatch { offset: 0, .. })
        ));
        assert!(matches!(
            verify(&a, BASE, 4096, pattern_seed(1, 5, BASE), sum ^ 1),
            Err(PatternError::Checksum { .. })
        ));
        assert_eq!(
            fill(&a, BASE + 4096, 8, 0),
            Err(PatternError::NotRam {
                phys: BASE + 4096,
                len: 8
            })
        );
    }
}
