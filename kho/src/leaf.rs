//! The leaf decoder of validation: a tree's keys, leaf by leaf as the walk reads them, into
//! blocks.
//!
//! Owns the decoding of one leaf (its prefix decoded once, each set bit a block of that type
//! and order) and the bookkeeping of the ascending runs the walk yields, one per (type,
//! order); sorting them is `merge`'s. Reads only the leaf copies it is handed; a key that is
//! not well formed is kept and reported after the walk (`docs/abi.md` "Validation").

use alloc::vec::Vec;

use crate::format::AbiVersion;
use crate::key::{decode, decode_typed, BlockType, KeyError};
use crate::merge::merge_runs;
use crate::phys::{next_nonzero_word, PageBuf};
use crate::validate::{Block, RestoreError, TreeName};
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

/// The tree of every block, decoded leaf by leaf as the walk reads it, into blocks in walk
/// order: one ascending run per (type, order) present (the walk yields each one's keys in
/// address order), so a merge of a few runs sorts them. The first key that is not well
/// formed (in walk order) is kept and reported after the walk, as if every key had been
/// decoded after it.
pub(crate) struct Decoder {
    /// Keys carry the type bit (v2), or not (v1's main tree, `kho-v4`).
    typed: bool,
    blocks: Vec<Block>,
    /// Where each ascending run of `blocks` starts (a run ends where a block sorts before
    /// the one before it).
    runs: Vec<usize>,
    bad: Option<KeyError>,
}

impl Decoder {
    pub(crate) fn new(version: AbiVersion) -> Self {
        Decoder {
            typed: !version.untyped_keys(),
            blocks: Vec::new(),
            runs: Vec::new(),
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
    /// the prefix's address plus its bit index in blocks of that order. If it does not,
    /// no key of the leaf does: each is decoded on its own, and the first error is kept.
    pub(crate) fn leaf(&mut self, prefix: u64, leaf: &PageBuf, groups: u64) {
        if self.bad.is_some() {
            return;
        }
        let Ok((base, order, kind)) = self.decode(prefix) else {
            for_each_key(prefix, leaf, groups, |k| match self.decode(k) {
                Ok((phys, order, kind)) => self.push(Block { phys, order, kind }),
                Err(e) => {
                    self.bad.get_or_insert(e);
                }
            });
            return;
        };
        let shift = PAGE_SHIFT + order;
        let Some((w, _)) = next_nonzero_word(leaf, groups, 0) else {
            return;
        };
        let first = (w as u64 * 64) << shift;
        // The run goes on if the leaf's first block sorts after the last block so far.
        let at = Block {
            phys: base + first,
            order,
            kind,
        };
        if self.blocks.last().is_none_or(|last| at < *last) {
            self.runs.push(self.blocks.len());
        }
        // Room for every key of the leaf first, then each block written straight into it:
        // no length or capacity update per block.
        let mut count = 0;
        let mut from = w;
        while let Some((w, word)) = next_nonzero_word(leaf, groups, from) {
            from = w + 1;
            count += word.count_ones() as usize;
        }
        self.blocks.reserve(count);
        let spare = &mut self.blocks.spare_capacity_mut()[..count];
        let mut written = 0;
        let mut from = w;
        while let Some((w, mut word)) = next_nonzero_word(leaf, groups, from) {
            from = w + 1;
            let word_base = base + ((w as u64 * 64) << shift);
            // One slot per set bit: the loop runs exactly that often, no test of its own.
            let bits = word.count_ones() as usize;
            let Some(slots) = spare.get_mut(written..written + bits) else {
                break;
            };
            for slot in slots {
                let b = u64::from(word.trailing_zeros());
                slot.write(Block {
                    phys: word_base + (b << shift),
                    order,
                    kind,
                });
                word &= word - 1;
            }
            written += bits;
        }
        let len = self.blocks.len();
        // SAFETY: the first `written` slots of the spare capacity (which `reserve(count)`
        // guaranteed, written <= count) were just initialised through `spare`.
        unsafe { self.blocks.set_len(len + written) };
    }

    fn push(&mut self, b: Block) {
        if self.blocks.last().is_none_or(|last| b < *last) {
            self.runs.push(self.blocks.len());
        }
        self.blocks.push(b);
    }

    /// The blocks sorted by address (then order and type), or the first bad key.
    pub(crate) fn finish(self) -> Result<Vec<Block>, RestoreError> {
        if let Some(err) = self.bad {
            return Err(RestoreError::BadKey {
                tree: TreeName::Main,
                err,
            });
        }
        Ok(merge_runs(self.blocks, &self.runs))
    }
}
