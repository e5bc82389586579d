//! The leaf decoder of validation: a tree's keys, leaf by leaf as the walk reads them, into
//! blocks.
//!
//! Owns the decoding of leaves (a leaf's prefix decoded once, each set bit a block of that
//! type and order): during the walk each leaf's prefix is decoded and its non-zero words
//! kept, with its exact count of blocks; after it, the blocks are written once into a
//! vector of exactly their number, through `merge`. Reads only the leaf copies it is
//! handed; a key that is not well formed is kept and reported after the walk
//! (`docs/abi.md` "Validation").

use alloc::vec::Vec;

use crate::format::AbiVersion;
use crate::key::{decode, decode_typed, BlockType, KeyError};
use crate::merge::{few_outside, Merger, Sorted};
use crate::phys::{next_nonzero_word, PageBuf, GROUP_WORDS};
use crate::validate::{Block, BlockTotals, RestoreError, TreeName};
use mm::PAGE_SHIFT;

/// Calls `f` with every key of the leaf whose key prefix is `prefix`, in increasing order.
pub(crate) fn for_each_key(prefix: u64, leaf: &PageBuf, groups: u64, mut f: impl FnMut(u64)) {
    let mut from = 0;
    while let Some((w, mut word)) = next_nonzero_word(leaf, groups, from) {
        from = w + 1;
        while word != 0 {
            f(prefix | (w as u64 * 64 + u64::from(word.trailing_zeros())));
            word &= word - 1;
        }
    }
}

/// One leaf whose prefix decoded, kept for after the walk: the block of its bit `i` is at
/// `base + (i << (PAGE_SHIFT + order))`.
struct Leaf {
    base: u64,
    order: u32,
    kind: BlockType,
    /// The leaf's non-zero summary: which of its groups are kept.
    groups: u64,
    /// Where its kept groups (`GROUP_WORDS` words each, in order) start in `Decoder::words`.
    at: usize,
    /// Its blocks: the set bits of its words.
    count: usize,
    /// Its last set bit.
    last: u64,
}

/// The tree of every block, decoded leaf by leaf as the walk reads it: each leaf's prefix
/// decoded and its non-zero words kept (memory at most the tree's own size), so that the
/// number of blocks is exact when the walk ends and each block is written once, into a
/// vector of exactly that size. The leaves form one ascending run per (type, order)
/// present (the walk yields each one's keys in address order): the longest is written in
/// order with the others' few blocks inserted, or, if the others hold more than a
/// sixteenth, every block is written and sorted. The first key that is not well formed (in
/// walk order) is kept and reported after the walk, as if every key had been decoded after
/// it.
pub(crate) struct Decoder {
    /// Keys carry the type bit (v2), or not (v1's main tree, `kho-v4`).
    typed: bool,
    leaves: Vec<Leaf>,
    /// The kept groups of every leaf, in the order of `leaves`.
    words: Vec<u64>,
    /// Where each ascending run of `leaves` starts (a run ends where a leaf's first block
    /// sorts before the last block of the leaf before it).
    runs: Vec<usize>,
    /// The last block of the last leaf.
    last: Option<Block>,
    /// Blocks in all leaves.
    len: usize,
    /// Blocks of keys decoded one by one, in a leaf whose prefix does not decode (no tree
    /// has one: if the prefix does not decode, no key of the leaf does).
    loose: Vec<Block>,
    bad: Option<KeyError>,
}

impl Decoder {
    pub(crate) fn new(version: AbiVersion) -> Self {
        Decoder {
            typed: !version.untyped_keys(),
            leaves: Vec::new(),
            words: Vec::new(),
            runs: Vec::new(),
            last: None,
            len: 0,
            loose: Vec::new(),
            bad: None,
        }
    }

    /// `(phys, order, type)` of one key in this tree's encoding.
    pub(crate) fn decode(&self, key: u64) -> Result<(u64, u32, BlockType), KeyError> {
        if self.typed {
            decode_typed(key)
        } else {
            // Untyped keys: every block as it was preserved, CONTIG (a folio, or pages whose
            // head alone holds the reference until split).
            decode(key).map(|(phys, order)| (phys, order, BlockType::Contig))
        }
    }

    /// Adds the keys of one leaf. Every key of a leaf shares its prefix (bits 15 and up),
    /// which holds the type and, for any order up to [`crate::MAX_KEY_ORDER`], the order
    /// marker (bit 22 or higher): if the prefix decodes, so does every key of the leaf, to
    /// the prefix's address plus its bit index in blocks of that order; the leaf's non-zero
    /// groups are kept and its blocks counted. If it does not, no key of the leaf does:
    /// each is decoded on its own, and the first error is kept.
    pub(crate) fn leaf(&mut self, prefix: u64, leaf: &PageBuf, groups: u64) {
        if self.bad.is_some() {
            return;
        }
        let Ok((base, order, kind)) = self.decode(prefix) else {
            for_each_key(prefix, leaf, groups, |k| match self.decode(k) {
                Ok((phys, order, kind)) => self.loose.push(Block { phys, order, kind }),
                Err(e) => {
                    self.bad.get_or_insert(e);
                }
            });
            return;
        };
        let at = self.words.len();
        let mut left = groups;
        while left != 0 {
            let g = left.trailing_zeros() as usize;
            left &= left - 1;
            let group = leaf
                .0
                .get(g * GROUP_WORDS..(g + 1) * GROUP_WORDS)
                .unwrap_or(&[]);
            self.words.extend(group.iter().map(|&w| u64::from_le(w)));
        }
        // The first and last set bits, and the count.
        let (mut first, mut last, mut count) = (None, 0, 0);
        let kept = self.words.get(at..).unwrap_or(&[]);
        for (grp, g) in kept.chunks_exact(GROUP_WORDS).zip(set_bits(groups)) {
            for (j, &w) in grp.iter().enumerate() {
                if w != 0 {
                    let bit = (g * GROUP_WORDS + j) as u64 * 64;
                    first.get_or_insert(bit + u64::from(w.trailing_zeros()));
                    last = bit + u64::from(63 - w.leading_zeros());
                    count += w.count_ones() as usize;
                }
            }
        }
        let Some(first) = first else {
            self.words.truncate(at);
            return;
        };
        let shift = PAGE_SHIFT + order;
        let block = |bit: u64| Block {
            phys: base + (bit << shift),
            order,
            kind,
        };
        if self.last.is_none_or(|l| block(first) < l) {
            self.runs.push(self.leaves.len());
        }
        self.last = Some(block(last));
        self.len += count;
        self.leaves.push(Leaf {
            base,
            order,
            kind,
            groups,
            at,
            count,
            last,
        });
    }

    /// Writes the blocks of `leaf` into `m`, in address order.
    fn write_leaf(&self, leaf: &Leaf, m: &mut Merger) {
        m.next_leaf();
        let shift = PAGE_SHIFT + leaf.order;
        let n = GROUP_WORDS * leaf.groups.count_ones() as usize;
        let kept = self.words.get(leaf.at..leaf.at + n).unwrap_or(&[]);
        let last = Block {
            phys: leaf.base + (leaf.last << shift),
            order: leaf.order,
            kind: leaf.kind,
        };
        if m.clear_up_to(&last) {
            m.straight(kept, leaf.groups, leaf.count, leaf.base, shift, last);
            return;
        }
        for (grp, g) in kept.chunks_exact(GROUP_WORDS).zip(set_bits(leaf.groups)) {
            for (j, &w) in grp.iter().enumerate() {
                let bit = (g * GROUP_WORDS + j) as u64 * 64;
                m.word(w, leaf.base + (bit << shift), shift, leaf.order, leaf.kind);
            }
        }
    }

    /// The blocks sorted by address (then order and type), in a vector of exactly their
    /// number, with their uniform stretches; or the first bad key.
    pub(crate) fn finish(self) -> Result<Sorted, RestoreError> {
        if let Some(err) = self.bad {
            return Err(RestoreError::BadKey {
                tree: TreeName::Main,
                err,
            });
        }
        let all = self.len + self.loose.len();
        // Counted a leaf at a time: no pass over the blocks.
        let mut totals = BlockTotals::of(&self.loose);
        for l in &self.leaves {
            totals.add(l.count, l.order, l.kind);
        }
        let run = |r: usize| {
            let end = self.runs.get(r + 1).copied().unwrap_or(self.leaves.len());
            self.runs[r]..end
        };
        let blocks_in = |r: &core::ops::Range<usize>| -> usize {
            self.leaves[r.clone()].iter().map(|l| l.count).sum()
        };
        let long = (0..self.runs.len())
            .map(run)
            .max_by_key(blocks_in)
            .unwrap_or(0..0);
        let long_len = blocks_in(&long);
        if !few_outside(long_len, all) {
            let mut m = Merger::new(all, Vec::new());
            for leaf in &self.leaves {
                self.write_leaf(leaf, &mut m);
            }
            let mut blocks = m.finish();
            blocks.extend_from_slice(&self.loose);
            blocks.sort();
            return Ok(Sorted {
                blocks,
                uniform: Vec::new(),
                totals,
            });
        }
        let mut rest = Merger::new(all - long_len, Vec::new());
        let outside = self.leaves[..long.start]
            .iter()
            .chain(&self.leaves[long.end..]);
        for leaf in outside {
            self.write_leaf(leaf, &mut rest);
        }
        let mut rest = rest.finish();
        rest.extend_from_slice(&self.loose);
        let mut m = Merger::new(all, rest);
        for leaf in &self.leaves[long] {
            self.write_leaf(leaf, &mut m);
        }
        Ok(Sorted {
            totals,
            ..m.finish_uniform()
        })
    }
}

/// The indices of the set bits of `bits`, ascending.
fn set_bits(mut bits: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        let i = bits.trailing_zeros() as usize;
        bits &= bits.wrapping_sub(1);
        (i < 64).then_some(i)
    })
}
