//! Writing validation's blocks sorted: the long ascending run the tree walk yields (one
//! (type, order) covering almost every block), decoded straight into a vector of exactly
//! the blocks' number, with the few blocks of the other runs, sorted, inserted as it goes.
//!
//! Owns `Merger` and the share that chooses it over a sort. Pure: no memory access beyond
//! the vectors it holds; every block is written once.

use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::ops::Range;

use crate::key::BlockType;
use crate::phys::GROUP_WORDS;
use crate::validate::{Block, BlockTotals};
use mm::PAGE_SHIFT;

/// Share of all blocks up to which the runs other than the longest are inserted into it
/// (sorted among themselves, each at its place as the long run is written); above it, the
/// stable sort merges every run.
const SMALL_RUNS_SHARE: usize = 16;

/// A block as two words, as `Block`'s `repr(C)` lays it out: `phys`, then `order` (bytes
/// 8..12), `kind` (byte 12, `repr(u8)`) and three bytes of padding.
const _: () = assert!(
    core::mem::size_of::<Block>() == 16
        && core::mem::align_of::<Block>() == core::mem::align_of::<[u64; 2]>()
        && core::mem::offset_of!(Block, order) == 8
        && core::mem::offset_of!(Block, kind) == 12,
    "Block is written as [phys, order_and_kind]"
);

/// The second word of every block of `order` and `kind` (zero padding).
fn order_and_kind(order: u32, kind: BlockType) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&order.to_ne_bytes());
    bytes[4] = kind as u8;
    u64::from_ne_bytes(bytes)
}

/// Writes the blocks of a leaf's kept groups (`GROUP_WORDS` words each, in order, the
/// groups `groups` marks) into `spare` from its start, bit `i` of the leaf the block at
/// `base + (i << shift)` with `second` its second word; returns how many (at most
/// `spare`'s length). Inlined so that a constant `shift` folds into the address.
#[inline(always)]
fn write_groups(
    spare: &mut [MaybeUninit<Block>],
    kept: &[u64],
    groups: u64,
    base: u64,
    shift: u32,
    second: u64,
) -> usize {
    let mut written = 0;
    let mut left = groups;
    for grp in kept.chunks_exact(GROUP_WORDS) {
        let g = left.trailing_zeros() as u64;
        left &= left.wrapping_sub(1);
        for (j, &w) in (0u64..).zip(grp) {
            let word_base = base + (((g * GROUP_WORDS as u64 + j) * 64) << shift);
            let bits = w.count_ones() as usize;
            let Some(slots) = spare.get_mut(written..written + bits) else {
                return written;
            };
            // A leaf's keys share every bit above its own (`Decoder::leaf`), so a word's
            // blocks differ from `word_base` only in bits it holds clear: `|` is `+`, and
            // keeps `word_base` made once a word (an add would be reassociated into the loop).
            debug_assert_eq!(word_base & ((64u64 << shift) - 1), 0);
            write_bits(slots, w, |i| word_base | (i << shift), second);
            written += bits;
        }
    }
    written
}

/// Writes one block per set bit of `word` into `slots` (one slot per bit), the block of
/// bit `i` at `base + (i << shift)` with `second` its second word. Inlined so that a
/// constant `shift` folds into the address.
#[inline(always)]
fn write_word(slots: &mut [MaybeUninit<Block>], word: u64, base: u64, shift: u32, second: u64) {
    write_bits(slots, word, |i| base + (i << shift), second);
}

/// Writes one block per set bit of `word`, lowest first, into `slots` (one slot per bit:
/// `word.count_ones()` of them), the block of bit `i` at `phys(i)` with `second` its
/// second word. The bits are taken from `word` reversed, each its leading zeros (one
/// instruction, where the lowest set bit takes two) and cleared with one `^`.
#[inline(always)]
fn write_bits(slots: &mut [MaybeUninit<Block>], word: u64, phys: impl Fn(u64) -> u64, second: u64) {
    debug_assert_eq!(slots.len(), word.count_ones() as usize);
    const TOP: u64 = 1 << 63;
    let mut rev = word.reverse_bits();
    // The next bit's index, cleared from `rev` (a shift by 64 once `rev` is empty, past
    // the slots, wraps to a harmless value).
    let mut next = || {
        let i = rev.leading_zeros();
        rev ^= TOP.wrapping_shr(i);
        u64::from(i)
    };
    let write = |slot: &mut MaybeUninit<Block>, at: u64| {
        // SAFETY: `slot` is a block's room, aligned as `[u64; 2]` and as large (the
        // assertion above); `[at, second]` are the bytes of a `Block` in its `repr(C)`
        // layout, `second` from `order_and_kind` (a valid `kind`).
        unsafe { slot.as_mut_ptr().cast::<[u64; 2]>().write([at, second]) };
    };
    for slot in slots {
        write(slot, phys(next()));
    }
}

/// True if `all - long` blocks (those outside the longest run, of `long`) are few enough to
/// be inserted into it rather than sorted with it.
pub(crate) fn few_outside(long: usize, all: usize) -> bool {
    all.saturating_sub(long).saturating_mul(SMALL_RUNS_SHARE) <= all
}

/// A vector of exactly the blocks to come, filled with ascending words of blocks (a leaf
/// word: bit `i` the block at `base + (i << shift)`) and every block of `rest` inserted
/// before the first written block it sorts below.
pub(crate) struct Merger {
    out: Vec<Block>,
    /// Sorted.
    rest: Vec<Block>,
    /// The first block of `rest` not yet written.
    next: usize,
    /// Uniform stretches of `out`, in order.
    uniform: Vec<Range<usize>>,
    /// The last of `uniform` ends at the end of `out` and may grow: the words since it
    /// began are one leaf's, written with nothing inserted.
    open: bool,
}

/// The blocks sorted, and their uniform stretches: ranges of indices, in order, each of
/// blocks of one order and type at strictly increasing addresses (one leaf's, with nothing
/// inserted between them). Such blocks are aligned to one size, so each starts at or after
/// the end of the one before: none overlaps another.
pub(crate) struct Sorted {
    pub(crate) blocks: Vec<Block>,
    pub(crate) uniform: Vec<Range<usize>>,
    /// Pages of every block and how many are SPLIT, counted by the caller (the decoder's
    /// leaves know them) so that nothing folds over `blocks` again.
    pub(crate) totals: BlockTotals,
}

impl Merger {
    /// Room for exactly `len` blocks (`rest` among them).
    pub(crate) fn new(len: usize, mut rest: Vec<Block>) -> Self {
        rest.sort_unstable();
        Merger {
            out: Vec::with_capacity(len),
            rest,
            next: 0,
            uniform: Vec::new(),
            open: false,
        }
    }

    /// True if no block of `rest` still to come sorts below `last`: the blocks up to it can
    /// be written [`Merger::straight`].
    pub(crate) fn clear_up_to(&self, last: &Block) -> bool {
        self.rest.get(self.next).is_none_or(|b| *b >= *last)
    }

    /// Appends the `count` blocks of one leaf as one uniform stretch, with no test per block
    /// or word: `kept` holds the leaf's groups `groups` marks (`GROUP_WORDS` words each, in
    /// order), bit `i` of the leaf the block at `base + (i << shift)`, of `last`'s order and
    /// type. Every block must sort after those written before and, up to `last` (the
    /// leaf's last block), below what is left of `rest` ([`Merger::clear_up_to`]).
    pub(crate) fn straight(
        &mut self,
        kept: &[u64],
        groups: u64,
        count: usize,
        base: u64,
        shift: u32,
        last: Block,
    ) {
        self.open = false;
        self.out.reserve(count);
        let len = self.out.len();
        let Some(spare) = self.out.spare_capacity_mut().get_mut(..count) else {
            return;
        };
        let second = order_and_kind(last.order, last.kind);
        // Order 0 (the bulk of a large set) with its shift a constant: one add a block for
        // its address. Chosen once a leaf.
        let written = if shift == PAGE_SHIFT {
            write_groups(spare, kept, groups, base, PAGE_SHIFT, second)
        } else {
            write_groups(spare, kept, groups, base, shift, second)
        };
        // SAFETY: the first `written` slots after the length (room `reserve(count)`
        // guaranteed, written <= count) were just initialised.
        unsafe { self.out.set_len(len + written) };
        if written > 0 {
            self.uniform.push(len..len + written);
        }
    }

    /// The words that follow are another leaf's: they start a uniform stretch of their own.
    pub(crate) fn next_leaf(&mut self) {
        self.open = false;
    }

    /// Appends the blocks of one leaf word, each of `order` and `kind` at `base + (i <<
    /// shift)` for every set bit `i` of `word`, with the blocks of `rest` that sort below
    /// them. Every block of the word must sort after every block appended before.
    #[inline]
    pub(crate) fn word(
        &mut self,
        mut word: u64,
        base: u64,
        shift: u32,
        order: u32,
        kind: BlockType,
    ) {
        if word == 0 {
            return;
        }
        let top = u64::from(63 - word.leading_zeros());
        let last = Block {
            phys: base + (top << shift),
            order,
            kind,
        };
        let bits = word.count_ones() as usize;
        if self.rest.get(self.next).is_some_and(|b| *b < last) {
            // A block of `rest` goes among this word's: one comparison per block, and no
            // uniform stretch across it.
            self.open = false;
            while word != 0 {
                let x = Block {
                    phys: base + (u64::from(word.trailing_zeros()) << shift),
                    order,
                    kind,
                };
                while let Some(b) = self.rest.get(self.next).filter(|b| **b < x) {
                    self.out.push(*b);
                    self.next += 1;
                }
                self.out.push(x);
                word &= word - 1;
            }
            return;
        }
        // No test per block: one slot per set bit, written straight. The vector was made
        // for every block, so `reserve` only compares.
        self.out.reserve(bits);
        let len = self.out.len();
        let Some(slots) = self.out.spare_capacity_mut().get_mut(..bits) else {
            return;
        };
        let second = order_and_kind(order, kind);
        // Order 0 with its shift a constant, as in `straight`.
        if shift == PAGE_SHIFT {
            write_word(slots, word, base, PAGE_SHIFT, second);
        } else {
            write_word(slots, word, base, shift, second);
        }
        // SAFETY: the `bits` slots after the length (room `reserve(bits)` guaranteed) were
        // just initialised through `slots`.
        unsafe { self.out.set_len(len + bits) };
        match self.uniform.last_mut() {
            Some(u) if self.open => u.end = len + bits,
            _ => self.uniform.push(len..len + bits),
        }
        self.open = true;
    }

    /// The blocks written, then the blocks of `rest` above them all.
    pub(crate) fn finish(self) -> Vec<Block> {
        self.finish_uniform().blocks
    }

    /// [`Merger::finish`], with the uniform stretches.
    pub(crate) fn finish_uniform(mut self) -> Sorted {
        let rest = self.rest.get(self.next..).unwrap_or(&[]);
        self.out.extend_from_slice(rest);
        Sorted {
            blocks: self.out,
            uniform: self.uniform,
            totals: BlockTotals::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merging_into_the_long_run_sorts_like_a_sort(
            long in proptest::collection::vec(any::<u64>(), 0..64),
            sparse in 0u32..3,
            rest in proptest::collection::vec((0u64..1 << 12, 0u32..4, any::<bool>()), 0..40),
        ) {
            // The long run: order-0 CONTIG blocks, bit i of word w at page 64w + i; the rest
            // of other orders or SPLIT (never equal to a block of the long run), any order.
            let page = |p: u64| p << 12;
            let mut want = Vec::new();
            let mut m_rest = Vec::new();
            for &(p, order, split) in &rest {
                let kind = if split || order == 0 { BlockType::Split } else { BlockType::Contig };
                let b = Block { phys: page(p & !((1 << order) - 1)), order, kind };
                if !m_rest.contains(&b) {
                    m_rest.push(b);
                    want.push(b);
                }
            }
            let words: Vec<u64> = long.iter().map(|w| (0..sparse).fold(*w, |a, _| a & (a >> 7))).collect();
            for (w, &word) in words.iter().enumerate() {
                for i in 0..64 {
                    if word >> i & 1 != 0 {
                        want.push(Block { phys: page(64 * w as u64 + i), order: 0, kind: BlockType::Contig });
                    }
                }
            }
            let mut m = Merger::new(want.len(), m_rest);
            for (w, &word) in words.iter().enumerate() {
                m.word(word, page(64 * w as u64), 12, 0, BlockType::Contig);
            }
            want.sort();
            let got = m.finish();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_block_written_as_words_is_the_block() {
        for (order, kind) in [
            (0, BlockType::Contig),
            (30, BlockType::Split),
            (7, BlockType::Split),
        ] {
            let mut m = Merger::new(2, Vec::new());
            m.word(0b101, 1 << 40, 12 + order, order, kind);
            let got = m.finish();
            let want = [0, 2].map(|i| Block {
                phys: (1 << 40) + (i << (12 + order)),
                order,
                kind,
            });
            assert_eq!(got, want);
        }
    }

    proptest! {
        /// `write_bits` writes the set bits' blocks in ascending order, each once.
        #[test]
        fn write_bits_writes_each_set_bit_lowest_first(
            word in prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX), Just(1 << 63), Just(1)],
        ) {
            let second = order_and_kind(3, BlockType::Split);
            let n = word.count_ones() as usize;
            let mut v: Vec<Block> = Vec::with_capacity(n);
            write_bits(&mut v.spare_capacity_mut()[..n], word, |i| 0x1000 * (i + 1), second);
            // SAFETY: `write_bits` initialised the first `n` slots.
            unsafe { v.set_len(n) };
            let want: Vec<Block> = (0..64u64)
                .filter(|i| word >> i & 1 != 0)
                .map(|i| Block { phys: 0x1000 * (i + 1), order: 3, kind: BlockType::Split })
                .collect();
            prop_assert_eq!(v, want);
        }
    }

    #[test]
    fn few_outside_is_a_sixteenth() {
        assert!(few_outside(15, 16));
        assert!(!few_outside(14, 16));
        assert!(few_outside(0, 0));
    }
}
