//! The scaled preserved set: `baton.preserve=<size>` of memory in many blocks, kept across
//! every handover on top of the recorded entries, in one of three shapes.
//!
//! Owns the shapes (`scatter`: order-0 pages at every other frame; `dense`: contiguous
//! order-0 pages; `mixed`: orders 0..=max with about a third SPLIT), the self-describing
//! block layout (a 16-byte header holding the filling generation and the checksum of the
//! rest, then the pattern) and the totals the record carries instead of one entry per
//! block. Touches bytes only inside blocks it holds; page state only through `mm` and `kho`.

use super::alloc::format;
use super::alloc::string::String;
use super::alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use kho::{BlockType, Incoming, Kho, PhysMem};
use mm::{FrameAllocator, PageFlags, Pfn, PAGE_SHIFT, PAGE_SIZE};

use super::pattern::{self, pattern_seed};
use super::report::Check;
use super::rng::{mix64, Rng};
use super::state::{mm_failure, Problem};

/// `baton.preserve=`: bytes of the scaled set (K/M/G suffixes), 0 or absent: none.
pub const KEY_PRESERVE: &str = "baton.preserve=";
/// `baton.shape=`: `scatter`, `dense` (default) or `mixed`.
pub const KEY_SHAPE: &str = "baton.shape=";
/// Percent of the set freed (and replaced by new blocks) each generation.
pub const CHURN_PERCENT: u64 = 10;
/// Header word 0: this tag in the high half, the filling generation in the low half.
const TAG: u64 = 0x4255_4c4b << 32; // "BULK"
/// Header bytes at the start of every block (tag + generation, checksum).
const HEADER: u64 = 16;

/// How the scaled set is laid out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Order-0 pages at every other frame: the most runs for the bytes.
    Scatter,
    /// Contiguous order-0 pages, each its own block.
    Dense,
    /// Random orders 0..=max, about a third split.
    Mixed,
}

impl Shape {
    /// The shape named `s`.
    pub fn from_name(s: &str) -> Option<Shape> {
        match s {
            "scatter" => Some(Shape::Scatter),
            "dense" => Some(Shape::Dense),
            "mixed" => Some(Shape::Mixed),
            _ => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Scatter => "scatter",
            Shape::Dense => "dense",
            Shape::Mixed => "mixed",
        })
    }
}

/// `baton.preserve=` and `baton.shape=` together.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Bytes to keep preserved (whole pages).
    pub bytes: u64,
    /// Their layout.
    pub shape: Shape,
}

impl Spec {
    /// Blocks the set will hold at most (for sizing the heap up front).
    pub fn max_blocks(&self) -> u64 {
        self.bytes.div_ceil(PAGE_SIZE)
    }
}

/// One block of the set.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// First byte.
    pub phys: u64,
    /// log2 pages.
    pub order: u32,
    /// Every page holds its own reference (kho type SPLIT).
    pub split: bool,
    /// The generation that filled it (read back from its header after a handover).
    pub fill_gen: u32,
    /// Checksum of the bytes after the header (ditto).
    pub checksum: u64,
}

impl Block {
    /// Pages of the block.
    pub fn pages(&self) -> u64 {
        1 << self.order
    }

    fn head(&self) -> Pfn {
        Pfn(self.phys >> PAGE_SHIFT)
    }

    /// What the totals add up for this block: its place, size, type and contents.
    fn id(&self) -> u64 {
        mix64(
            self.phys
                ^ (u64::from(self.order) << 52)
                ^ (u64::from(self.split) << 51)
                ^ mix64(u64::from(self.fill_gen) ^ self.checksum),
        )
    }
}

/// Blocks per chunk of a [`BlockList`] (1 MiB of `Block`s).
const LIST_CHUNK: usize = 32 * 1024;

/// The set's blocks, in chunks of 1 MiB: while the workload holds the frame allocator the
/// heap cannot grow, and no piece it grew by beforehand is larger than the buddy
/// allocator's largest block, so a list of a million blocks cannot be one vector.
#[derive(Debug, Default)]
pub struct BlockList {
    chunks: Vec<Vec<Block>>,
    len: usize,
}

impl BlockList {
    /// An empty list with room for the chunk vector of `n` blocks (the chunks themselves
    /// are taken as they fill).
    pub fn with_capacity(n: usize) -> BlockList {
        BlockList {
            chunks: Vec::with_capacity(n.div_ceil(LIST_CHUNK)),
            len: 0,
        }
    }

    /// Appends `f` of every item of `src`, in order: one copy loop per chunk it fills.
    pub fn extend_map<T>(&mut self, mut src: &[T], f: impl Fn(&T) -> Block) {
        while !src.is_empty() {
            if self.chunks.last().is_none_or(|c| c.len() == LIST_CHUNK) {
                self.chunks.push(Vec::with_capacity(LIST_CHUNK));
            }
            let Some(c) = self.chunks.last_mut() else {
                return;
            };
            let (now, rest) = src.split_at((LIST_CHUNK - c.len()).min(src.len()));
            c.extend(now.iter().map(&f));
            self.len += now.len();
            src = rest;
        }
    }

    /// Appends `b`.
    #[inline]
    pub fn push(&mut self, b: Block) {
        if self.chunks.last().is_none_or(|c| c.len() == LIST_CHUNK) {
            self.chunks.push(Vec::with_capacity(LIST_CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(b);
        }
        self.len += 1;
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every block, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = &Block> + '_ {
        self.chunks.iter().flatten()
    }

    /// Every block, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Block> + '_ {
        self.chunks.iter_mut().flatten()
    }

    /// Every block, by value, emptying the list.
    pub fn drain(self) -> impl Iterator<Item = Block> {
        self.chunks.into_iter().flatten()
    }

    /// Pages of every block.
    pub fn pages(&self) -> u64 {
        self.iter().map(Block::pages).sum()
    }
}

/// What the record says of the set: the next image checks the blocks it finds against it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Blocks.
    pub blocks: u64,
    /// Pages.
    pub pages: u64,
    /// Wrapping sum of every block's id.
    pub sum: u64,
}

impl Totals {
    /// The totals of `blocks`.
    pub fn of(blocks: &BlockList) -> Totals {
        blocks.iter().fold(Totals::default(), |t, b| Totals {
            blocks: t.blocks + 1,
            pages: t.pages + b.pages(),
            sum: t.sum.wrapping_add(b.id()),
        })
    }
}

/// Restores every block the previous image handed over that `inc` still holds (what is
/// left after the recorded entries), with the refcounts of its recorded type. Returns them
/// as runs of indices into [`Incoming::blocks`] (nothing copied per block during the
/// blackout: [`held`] makes the list after it) and their pages.
pub fn restore(
    inc: &mut Incoming,
    fa: &mut FrameAllocator<'_>,
) -> Result<(Vec<Range<usize>>, u64), Problem> {
    // Runs break only at claimed blocks: at most one more run than those (room taken now,
    // the heap does not grow while the restore holds the frame allocator).
    let claimed = inc.blocks().len() - inc.unclaimed();
    let mut runs = Vec::with_capacity(claimed + 1);
    let pages = inc
        .restore_unclaimed_runs(fa, |lo, run| runs.push(lo..lo + run.len()))
        .map_err(|e| (Check::Restore, format!("bulk set: {e}")))?;
    Ok((runs, pages))
}

/// The blocks of `runs` (what [`restore`] returned) as the set's list, in order (contents
/// not yet read: `fill_gen` and `checksum` are 0).
pub fn held(inc: &Incoming, runs: &[Range<usize>]) -> BlockList {
    let all = inc.blocks();
    let mut out = BlockList::with_capacity(runs.iter().map(|r| r.len()).sum());
    for r in runs {
        out.extend_map(all.get(r.clone()).unwrap_or(&[]), |b| Block {
            phys: b.phys,
            order: b.order,
            split: b.kind == BlockType::Split,
            fill_gen: 0,
            checksum: 0,
        });
    }
    out
}

/// Checks one restored block's refcounts (CONTIG: head 1, tails 0; SPLIT: 1 on every page)
/// and every byte; fills in `fill_gen` and `checksum` from its header.
pub fn verify<M: PhysMem + ?Sized>(
    fa: &FrameAllocator<'_>,
    mem: &M,
    seed: u64,
    generation: u32,
    b: &mut Block,
) -> Result<(), Problem> {
    for i in 0..b.pages() {
        let want = u32::from(i == 0 || b.split);
        let got = fa
            .page_ref_count(b.head().add(i))
            .map_err(|e| mm_failure(Check::Refcount, "bulk block refcount", e))?;
        if got != want {
            return Err((
                Check::Refcount,
                format!(
                    "bulk block {:#x} order {} ({}): page {i} has refcount {got}, expected {want}",
                    b.phys,
                    b.order,
                    if b.split { "SPLIT" } else { "CONTIG" }
                ),
            ));
        }
    }
    // The two header words, read in place (no buffer per block).
    let header_word = |i: u64| {
        kho::read_u64(mem, b.phys + 8 * i).ok_or_else(|| {
            (
                Check::Verify,
                format!(
                    "bulk block header: {}",
                    pattern::PatternError::NotRam {
                        phys: b.phys,
                        len: HEADER
                    }
                ),
            )
        })
    };
    let (tag, sum) = (header_word(0)?, header_word(1)?);
    let fill_gen = (tag & 0xffff_ffff) as u32;
    if tag & !0xffff_ffff != TAG || fill_gen >= generation {
        return Err((
            Check::Verify,
            format!(
                "bulk block {:#x}: header {tag:#018x} is not one of this chain's",
                b.phys
            ),
        ));
    }
    let len = (PAGE_SIZE << b.order) - HEADER;
    pattern::verify(
        mem,
        b.phys + HEADER,
        len,
        pattern_seed(seed, fill_gen, b.phys),
        sum,
    )
    .map_err(|e| {
        (
            Check::Verify,
            format!("bulk block of generation {fill_gen}: {e}"),
        )
    })?;
    b.fill_gen = fill_gen;
    b.checksum = sum;
    Ok(())
}

/// Frees a held block as its type is freed (`put_page` per page when split, else
/// `free_pages`); returns its pages.
pub fn free(fa: &mut FrameAllocator<'_>, b: &Block) -> Result<u64, Problem> {
    let head = b.head();
    let split = b.split
        || fa
            .page_flags(head)
            .is_ok_and(|f| f.contains(PageFlags::SPLIT));
    let r = if split {
        (0..b.pages()).try_for_each(|i| fa.put_page(head.add(i)))
    } else {
        fa.free_pages(head, b.order)
    };
    r.map_err(|e| mm_failure(Check::Free, &format!("freeing bulk block {:#x}", b.phys), e))?;
    Ok(b.pages())
}

/// Frames taken from and given back to the allocator while growing the set.
#[derive(Copy, Clone, Debug, Default)]
pub struct Moves {
    /// Pages allocated.
    pub allocated: u64,
    /// Pages freed again (the unused halves of scatter pairs).
    pub freed: u64,
}

/// Allocates, fills and appends new blocks of `spec.shape` until `held` holds
/// `spec.bytes`. The generation's blocks carry `generation` in their header.
#[allow(clippy::too_many_arguments)]
pub fn grow<M: PhysMem + ?Sized>(
    fa: &mut FrameAllocator<'_>,
    mem: &M,
    rng: &mut Rng,
    spec: &Spec,
    seed: u64,
    generation: u32,
    max_order: u32,
    held: &mut BlockList,
) -> Result<Moves, Problem> {
    let mut have: u64 = held.pages() * PAGE_SIZE;
    let mut moves = Moves::default();
    let oom = |e| mm_failure(Check::Alloc, "bulk block", e);
    while have < spec.bytes {
        let room = (spec.bytes - have) / PAGE_SIZE;
        let mut add = |phys: u64, order: u32, split: bool| -> Result<(), Problem> {
            let mut b = Block {
                phys,
                order,
                split,
                fill_gen: generation,
                checksum: 0,
            };
            fill(mem, seed, &mut b)?;
            have += b.pages() * PAGE_SIZE;
            held.push(b);
            Ok(())
        };
        match spec.shape {
            Shape::Scatter => {
                // A pair, split, its upper page given back: kept pages end up a frame apart.
                let p = fa.alloc_pages(1).map_err(oom)?;
                fa.split_page(p, 1)
                    .map_err(|e| mm_failure(Check::Split, "bulk pair", e))?;
                fa.put_page(p.add(1))
                    .map_err(|e| mm_failure(Check::Free, "bulk pair half", e))?;
                moves.allocated += 2;
                moves.freed += 1;
                // Out of split_page: kho records it SPLIT.
                add(p.phys().0, 0, true)?;
            }
            Shape::Dense => {
                let order = max_order.min(order_within(room));
                let p = fa.alloc_pages(order).map_err(oom)?;
                fa.split_page(p, order)
                    .map_err(|e| mm_failure(Check::Split, "bulk run", e))?;
                moves.allocated += 1 << order;
                for i in 0..1u64 << order {
                    add(p.add(i).phys().0, 0, true)?;
                }
            }
            Shape::Mixed => {
                let order = (rng.below(u64::from(max_order) + 1) as u32).min(order_within(room));
                let p = fa.alloc_pages(order).map_err(oom)?;
                moves.allocated += 1 << order;
                let split = order > 0 && rng.chance(33);
                if split {
                    fa.split_page(p, order)
                        .map_err(|e| mm_failure(Check::Split, "bulk block", e))?;
                }
                add(p.phys().0, order, split)?;
            }
        }
    }
    Ok(moves)
}

/// Largest order whose block fits in `pages` (at least 0).
fn order_within(pages: u64) -> u32 {
    63 - pages.max(1).leading_zeros()
}

/// Writes the header and pattern of `b` (its `fill_gen` set), recording its checksum.
fn fill<M: PhysMem + ?Sized>(mem: &M, seed: u64, b: &mut Block) -> Result<(), Problem> {
    let len = (PAGE_SIZE << b.order) - HEADER;
    let sum = pattern::fill(
        mem,
        b.phys + HEADER,
        len,
        pattern_seed(seed, b.fill_gen, b.phys),
    )
    .map_err(|e| (Check::Alloc, format!("filling bulk block: {e}")))?;
    let mut hdr = [0u8; HEADER as usize];
    hdr[..8].copy_from_slice(&(TAG | u64::from(b.fill_gen)).to_le_bytes());
    hdr[8..].copy_from_slice(&sum.to_le_bytes());
    pattern::write_bytes(mem, b.phys, &hdr)
        .map_err(|e| (Check::Alloc, format!("writing bulk header: {e}")))?;
    b.checksum = sum;
    Ok(())
}

/// Preserves `b` in `out` (one block: order-0 pages each on their own).
pub fn preserve<K: PhysMem>(
    out: &mut Kho<K>,
    fa: &mut FrameAllocator<'_>,
    b: &Block,
) -> Result<(), Problem> {
    out.preserve_pages(fa, b.head(), b.pages()).map_err(|e| {
        (
            Check::Preserve,
            format!("bulk block {:#x} order {}: {e}", b.phys, b.order),
        )
    })
}

/// The error text for totals that differ.
pub fn mismatch(found: &Totals, recorded: &Totals) -> String {
    format!(
        "bulk set: found {} blocks / {} pages / sum {:#x}, the record says {} / {} / {:#x}",
        found.blocks, found.pages, found.sum, recorded.blocks, recorded.pages, recorded.sum
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(i: u64) -> Block {
        Block {
            phys: i << PAGE_SHIFT,
            order: (i % 3) as u32,
            split: i.is_multiple_of(2),
            fill_gen: 0,
            checksum: 0,
        }
    }

    /// `extend_map` in pieces of any size gives the list `push` gives, chunks never past
    /// `LIST_CHUNK`, across chunk edges.
    #[test]
    fn extend_map_fills_chunks_like_push() {
        let n = 2 * LIST_CHUNK as u64 + 5;
        let ids: Vec<u64> = (0..n).collect();
        let mut pushed = BlockList::default();
        ids.iter().for_each(|&i| pushed.push(block(i)));
        for piece in [1, 7, LIST_CHUNK - 1, LIST_CHUNK, LIST_CHUNK + 3] {
            let mut list = BlockList::with_capacity(ids.len());
            for part in ids.chunks(piece) {
                list.extend_map(part, |&i| block(i));
            }
            assert_eq!(list.len(), pushed.len());
            assert!(list.iter().eq(pushed.iter()), "pieces of {piece}");
            assert!(list.chunks.iter().all(|c| c.len() <= LIST_CHUNK));
            assert_eq!(list.chunks.len(), pushed.chunks.len());
        }
    }
}
