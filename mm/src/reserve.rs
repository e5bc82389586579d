//! Reserving a previous image's preserved memory: the one pass of `new_deferred` over the
//! sorted preserved items, and the O(1) claim of a whole preserved block.
//!
//! Owns the `PRESERVED` / `PRESERVED_TAIL` descriptor states. Each preserved frame is
//! written once here, as a whole descriptor: a block's first frame records the block's
//! order and its owner's `private` word (kho's stash), its other frames link to it. Because
//! the input is sorted and disjoint, a frame marked `PRESERVED` vouches for every frame of
//! its block, so a claim reads one descriptor and writes each frame once. The free memory
//! between two items is freed in the same pass. Never frees or claims part of a block.

use crate::addr::{Pfn, PhysAddr, PhysRange, PAGE_SHIFT, PAGE_SIZE};
use crate::error::MmError;
use crate::frame::{BlockKind, FrameAllocator, Section, CHUNK_ORDER, MAX_BLOCK_ORDER, NR_ORDERS};
use crate::memblock::Memblock;
use crate::page::{Page, PageFlags, NONE};

/// One thing a previous image preserved, as [`FrameAllocator::new_deferred`] takes them
/// (sorted by address, disjoint): a block its owner claims whole, or a plain range (kho's
/// metadata), which is only ever released.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Preserved {
    /// The bytes it covers (page-rounded outward).
    pub range: PhysRange,
    /// For a block: `(order, private)`: the range is `2^order` pages aligned to their size,
    /// and its first frame keeps `private` for its owner until the block is claimed.
    pub block: Option<(u32, u64)>,
}

impl Preserved {
    /// The block of `2^order` pages at `phys` whose first frame keeps `private`.
    pub const fn block(phys: u64, order: u32, private: u64) -> Self {
        Preserved {
            range: PhysRange::new(PhysAddr(phys), PAGE_SIZE << order),
            block: Some((order, private)),
        }
    }

    /// Bytes covered.
    pub const fn size(&self) -> u64 {
        self.range.size()
    }
}

impl From<PhysRange> for Preserved {
    fn from(range: PhysRange) -> Self {
        Preserved { range, block: None }
    }
}

/// A preserved block as its owner keeps it in a sorted array (see [`PreservedSet`]).
pub trait PreservedBlock {
    /// Physical address of its first byte.
    fn phys(&self) -> u64;
    /// log2 of its pages.
    fn order(&self) -> u32;
    /// The `private` word its first frame keeps, for the block at `index` of its array.
    fn private(&self, index: u64) -> u64;
}

/// A previous image's preserved items as two sorted arrays: its blocks and its plain
/// ranges (metadata). Iterates as their merge by start (a block first on a tie), block `i`
/// as [`Preserved::block`] with its `private(i)`; [`FrameAllocator::new_deferred_set`]
/// takes the blocks between two ranges straight from the array.
#[derive(Clone, Debug)]
pub struct PreservedSet<'a, B> {
    blocks: &'a [B],
    /// Index in the whole array of `blocks[0]`.
    index: u64,
    ranges: &'a [PhysRange],
}

impl<'a, B: PreservedBlock> PreservedSet<'a, B> {
    /// The set of `blocks` and `ranges`, each sorted by address.
    pub const fn new(blocks: &'a [B], ranges: &'a [PhysRange]) -> Self {
        PreservedSet {
            blocks,
            index: 0,
            ranges,
        }
    }
}

impl<B: PreservedBlock> Iterator for PreservedSet<'_, B> {
    type Item = Preserved;

    #[inline]
    fn next(&mut self) -> Option<Preserved> {
        match (self.blocks.first(), self.ranges.first()) {
            (Some(b), Some(m)) if m.start.0 < b.phys() => {
                self.ranges = &self.ranges[1..];
                Some(Preserved::from(*m))
            }
            (Some(b), _) => {
                self.blocks = &self.blocks[1..];
                let item = Preserved::block(b.phys(), b.order(), b.private(self.index));
                self.index += 1;
                Some(item)
            }
            (None, Some(m)) => {
                self.ranges = &self.ranges[1..];
                Some(Preserved::from(*m))
            }
            (None, None) => None,
        }
    }
}

/// Where `reserve_preserved` takes its items from: any sorted iterator ([`Items`]), or a
/// [`PreservedSet`], whose runs read the block array.
pub(crate) trait Source {
    /// The next item.
    fn next_item(&mut self) -> Option<Preserved>;
    /// Takes the blocks that follow through `run` ([`Run::blocks`]); returns the first item
    /// it does not take (`None` at the end of the input).
    fn run(&mut self, run: &mut Run, pages: &mut [Page], lists: &mut Lists) -> Option<Preserved>;
}

/// An iterator of items as a [`Source`]: a run takes them one by one.
pub(crate) struct Items<I>(pub(crate) I);

impl<I: Iterator<Item = Preserved>> Source for Items<I> {
    #[inline(always)]
    fn next_item(&mut self) -> Option<Preserved> {
        self.0.next()
    }

    #[inline(always)]
    fn run(&mut self, run: &mut Run, pages: &mut [Page], lists: &mut Lists) -> Option<Preserved> {
        let mut stop = None;
        run.blocks(&mut self.0, pages, lists, &mut stop);
        stop
    }
}

impl<B: PreservedBlock> Source for PreservedSet<'_, B> {
    #[inline(always)]
    fn next_item(&mut self) -> Option<Preserved> {
        self.next()
    }

    /// The run reads the blocks before the next range in place ([`Run::array`]); the one it
    /// stops at, or the range, is the next item of the merge.
    #[inline(always)]
    fn run(&mut self, run: &mut Run, pages: &mut [Page], lists: &mut Lists) -> Option<Preserved> {
        // A block (page-aligned, checked by the run) comes before the range iff it starts
        // by the range's start, i.e. its frame is at most the range's first frame.
        let limit = self
            .ranges
            .first()
            .map_or(u64::MAX, |m| m.start.0 >> PAGE_SHIFT);
        let n = run.array(self.blocks, self.index, limit, pages, lists);
        self.blocks = &self.blocks[n..];
        self.index += n as u64;
        self.next()
    }
}

/// Descriptor words of a preserved frame that is not a block's first one (tails; every
/// frame of a plain range): RESERVED | NOINIT (| PRESERVED_TAIL, linked to `head`).
const fn reserved_words(section: u8, tail: bool, head: u32) -> [u64; 4] {
    let mut flags = PageFlags::RESERVED.union(PageFlags::NOINIT);
    if tail {
        flags = flags.union(PageFlags::PRESERVED_TAIL);
    }
    Page::words(flags.bits(), 0, section, 0, head, 0)
}

/// Frames `[lo, hi)` of section `si`, in a chunk marked initialised, whose descriptors
/// `reserve_preserved` has not written yet (see `ready_chunks_of`).
#[derive(Copy, Clone, Debug)]
struct Unwritten {
    si: usize,
    lo: u64,
    hi: u64,
}

/// A run of [`FrameAllocator::reserve_run`]: where it may write and what it has counted.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Run {
    /// Blocks end by here (the end of the chunk).
    hi: u64,
    /// Blocks start by here: before `hi`, and with the gap before them ending by the end of
    /// the free range it lies in.
    last: u64,
    /// Frame `pfn` has descriptor `pfn + off` (wrapping: a section's `first` may be below
    /// its `base`).
    off: u64,
    /// Where the last block ends.
    end: u64,
    /// One-page gaps go onto order 0's list through this.
    order0: Order0,
    /// Gap frames freed (RESERVED so far) by cuts and by earlier `order0`s; `order0` counts
    /// its own.
    gaps: u64,
    /// Blocks whose stash is not zero.
    private_set: u64,
}

impl Run {
    /// Takes the blocks that follow `end` in the run's chunk, each after a gap in free RAM
    /// (see [`FrameAllocator::reserve_run`]), writing their descriptors in `pages`, pushing
    /// one-page gaps onto order 0 inline and cutting longer ones out of line (`Lists::cut`,
    /// the only call in the loop, so the rest of its state stays in registers). Stops at
    /// the first item it does not take, left in `stop` (`None` at the end of the input).
    #[inline(never)]
    fn blocks(
        &mut self,
        items: &mut impl Iterator<Item = Preserved>,
        pages: &mut [Page],
        lists: &mut Lists,
        stop: &mut Option<Preserved>,
    ) {
        let mut r = *self;
        if !r.in_pages(pages) {
            *stop = items.next();
            return;
        }
        loop {
            let Some(item) = items.next() else {
                *stop = None;
                break;
            };
            let (start, bytes_end) = (item.range.start.0, item.range.end.0);
            let Some((order, private)) = item.block else {
                *stop = Some(item);
                break;
            };
            // The general steps' checks for a block, on the bytes: sorted, 2^order whole
            // pages aligned to their size (`bytes_end` saturates: a wrapped range fails), in
            // this chunk (hence in RAM), after a gap in free RAM. `s <= last` is the whole
            // chunk check for order 0 (`e = s + 1`); a larger block checks its end below.
            if order > MAX_BLOCK_ORDER {
                *stop = Some(item);
                break;
            }
            let size = PAGE_SIZE << order;
            let (s, e) = (start >> PAGE_SHIFT, bytes_end >> PAGE_SHIFT);
            if start & (size - 1) != 0
                || bytes_end.wrapping_sub(start) != size
                || s < r.end
                || s > r.last
                || (order > 0 && e > r.hi)
            {
                *stop = Some(item);
                break;
            }
            r.private_set += u64::from(private != 0);
            // SAFETY: `in_pages` above; `end <= s <= last < hi` and, for a larger block,
            // `e <= hi`.
            unsafe { r.place(pages, lists, s, order, private) };
        }
        *self = r;
    }

    /// [`Run::blocks`] over `blocks[i]`, the block at `index + i` of its array, reading
    /// each in place; also stops before a block whose first frame is past `limit`. Returns
    /// how many it took. The checks are those of `blocks` on a range that is `2^order`
    /// pages by construction (its end is computed, so only the start is checked).
    #[inline(never)]
    fn array<B: PreservedBlock>(
        &mut self,
        blocks: &[B],
        index: u64,
        limit: u64,
        pages: &mut [Page],
        lists: &mut Lists,
    ) -> usize {
        let mut r = *self;
        if !r.in_pages(pages) {
            return 0;
        }
        r.last = r.last.min(limit);
        let mut i = index;
        // Blocks whose stash is zero (a stash the caller's type makes non-zero folds this
        // count away).
        let mut zeros = 0;
        let mut rest = blocks.iter();
        while let Some(b) = rest.next() {
            let (start, order) = (b.phys(), b.order());
            let s = start >> PAGE_SHIFT;
            if order == 0 {
                // One page: aligned when page-aligned, in the chunk when `s <= last`.
                if start & (PAGE_SIZE - 1) != 0 || s < r.end || s > r.last {
                    break;
                }
                let private = b.private(i);
                zeros += u64::from(private == 0);
                i += 1;
                // SAFETY: `in_pages` above; `end <= s <= last < hi`.
                let pushed = unsafe { r.place(pages, lists, s, 0, private) };
                // The gap was just pushed and the scatter shape follows: worth the call.
                if pushed && two_pairs_follow(rest.as_slice(), r.end) {
                    // SAFETY: `in_pages` above.
                    let (n, z);
                    (r, n, z) = unsafe { r.pairs(rest.as_slice(), i, pages) };
                    zeros += z;
                    i += n;
                    rest = rest.as_slice()[n as usize..].iter();
                }
            } else {
                // `s <= last < hi`, so `s + 2^order` does not wrap.
                if order > MAX_BLOCK_ORDER
                    || start & ((PAGE_SIZE << order) - 1) != 0
                    || s < r.end
                    || s > r.last
                    || s + (1 << order) > r.hi
                {
                    break;
                }
                let private = b.private(i);
                zeros += u64::from(private == 0);
                i += 1;
                // SAFETY: `in_pages` above; `end <= s <= last < hi` and `s + 2^order <= hi`.
                unsafe { r.place(pages, lists, s, order, private) };
            }
        }
        r.private_set += i - index - zeros;
        *self = r;
        (i - index) as usize
    }

    /// The common stretch of [`Run::array`]: order-0 blocks each one page after the last
    /// block's end, from `blocks[0]` (the block at `index`), once the last block followed
    /// a one-page gap that this run pushed (the frame pushed last is `end - 2`). Takes each
    /// exactly as `array` and [`Run::place`] take it, in a loop with no call, so that its
    /// state and constants stay in registers: the checks are theirs (a start of exactly
    /// `end + 1` pages is page-aligned and at least `end`; a bound on the count keeps it by
    /// `last`), each gap is pushed as [`Order0::push`] pushes it with `pushed > 0` known,
    /// and the frame pushed last is always the one two pages before the block, so every
    /// address and link follows from the block's. Out of line (entered about once per
    /// chunk of that shape), with the run by value, so that neither loop's state and
    /// constants crowd the other's registers. Returns the run, how many blocks it took and
    /// how many of those have a zero stash.
    ///
    /// # Safety
    ///
    /// [`Run::in_pages`] held when the run started.
    #[inline(never)]
    unsafe fn pairs<B: PreservedBlock>(
        mut self,
        blocks: &[B],
        index: u64,
        pages: &mut [Page],
    ) -> (Self, u64, u64) {
        let mut zeros = 0;
        let (end, off) = (self.end, self.off);
        // The frame pushed last is the gap two frames before `end` (or the loop is not
        // for this run's state).
        let pushed_last = end.wrapping_sub(2).wrapping_add(off);
        if self.order0.pushed == 0 || u64::from(self.order0.head) != pushed_last {
            return (self, 0, 0);
        }
        // The `k`-th block taken starts at frame `end + 1 + 2k`, which must be at most
        // `last`: a bound on the count replaces the `s <= last` test.
        let room = if self.last > end {
            (self.last - end - 1) / 2 + 1
        } else {
            0
        };
        let blocks = &blocks[..blocks.len().min(room as usize)];
        // The next block's start in bytes (one compare is the alignment test and
        // `s == end + 1`), its descriptor `idx`; its gap is `idx - 1`, and the frame
        // pushed last `idx - 3`, linked to the list's `next` for the first block, then to
        // the gap before the block taken before, `idx - 5`.
        let mut expect = (end + 1) << PAGE_SHIFT;
        let idx0 = (end + 1).wrapping_add(off) as usize;
        let mut idx = idx0;
        let mut n = 0u64;
        let mut take = |b: &B, idx: usize, next: u32| {
            let private = b.private(index + n);
            zeros += u64::from(private == 0);
            let words = Page::words(PRESERVED_HEAD, 0, 0, 0, NONE, private);
            // SAFETY: `end < s <= last < hi`: a frame of the run (the caller's).
            Page::store(unsafe { pages.get_unchecked_mut(idx) }, words);
            // The frame pushed last, written now that its `prev` (this gap) is known.
            // SAFETY: `idx - 3` is the frame pushed last (checked above for the first
            // block, then the gap before the block taken last), a frame of the run.
            let last_pushed = unsafe { pages.get_unchecked_mut(idx - 3) };
            Page::store(last_pushed, free_words(0, next, idx as u32 - 1));
            n += 1;
        };
        let fits = |b: &B, expect: u64| b.order() == 0 && b.phys() == expect;
        let mut rest = blocks.iter();
        if let Some(b) = rest.next().filter(|b| fits(b, expect)) {
            take(b, idx, self.order0.next);
            for b in rest {
                expect += 2 << PAGE_SHIFT;
                idx += 2;
                if !fits(b, expect) {
                    break;
                }
                take(b, idx, (idx - 5) as u32);
            }
        }
        if n > 0 {
            // The last block taken is at `idx0 + 2(n - 1)`: its gap is the list's head,
            // linked to the frame two before it (the frame pushed last on entry, for the
            // first block; else the gap before the block taken before).
            let last = idx0 + 2 * (n as usize - 1);
            self.end = end + 2 * n;
            self.order0.head = (last - 1) as u32;
            self.order0.next = (last - 3) as u32;
            self.order0.pushed += n;
        }
        (self, n, zeros)
    }

    /// Whether the run's frames, `[end, hi)`, are descriptors `[end + off, hi + off)` of
    /// `pages` (always, for a run of [`FrameAllocator::run_end`]): checked once per run, so
    /// that [`Run::place`] stores a block's head and a one-page gap with no bounds check.
    /// Also leaves `last` below `hi`, as `run_end` sets it.
    #[inline(always)]
    fn in_pages(&mut self, pages: &[Page]) -> bool {
        let (lo, hi) = (
            self.end.wrapping_add(self.off),
            self.hi.wrapping_add(self.off),
        );
        self.last = self.last.min(self.hi.wrapping_sub(1));
        self.end < self.hi && lo <= hi && hi <= pages.len() as u64
    }

    /// Writes the checked block of `2^order` frames at frame `s` (after `end`, in the
    /// chunk) and frees the gap before it (`private_set` is the caller's to count).
    /// Returns whether the gap was one page (pushed onto order 0 through `order0`).
    ///
    /// # Safety
    ///
    /// [`Run::in_pages`] held when the run started (its `end` is at most this `end`), and
    /// `s` is in `[end, hi)`: then descriptor `s + off`, those of the gap before it and
    /// those of the frames `order0` pushed are in `pages` (a larger block's tails are
    /// bounds-checked).
    #[inline(always)]
    unsafe fn place(
        &mut self,
        pages: &mut [Page],
        lists: &mut Lists,
        s: u64,
        order: u32,
        private: u64,
    ) -> bool {
        let idx = s.wrapping_add(self.off) as usize;
        if order > 0 {
            // Tails over the whole block, then the head (see `write_claimed`).
            Page::fill(
                &mut pages[idx..idx + (1usize << order)],
                reserved_words(0, true, idx as u32),
            );
        }
        let head = Page::words(PRESERVED_HEAD, order as u8, 0, 0, NONE, private);
        // SAFETY: `s` is a frame of the run (the caller's).
        Page::store(unsafe { pages.get_unchecked_mut(idx) }, head);
        let (pfn, n) = (self.end, s - self.end);
        self.end = s + (1 << order);
        if n == 1 {
            // SAFETY: `s - 1` is the gap, a frame of the run; the frames pushed before it
            // are too (the caller's).
            unsafe { self.order0.push(pages, idx as u32 - 1) };
            return true;
        } else if n > 1 {
            // A longer gap is cut as the general steps cut it.
            self.gaps += self.order0.pushed + n;
            self.order0 = lists.cut(
                pages,
                self.order0,
                pfn.wrapping_add(self.off) as usize,
                pfn,
                n,
            );
        }
        false
    }
}

/// Whether `blocks` starts with two order-0 blocks, at frames `end + 1` and `end + 3`.
#[inline(always)]
fn two_pairs_follow<B: PreservedBlock>(blocks: &[B], end: u64) -> bool {
    let at = |b: &B, pfn: u64| b.order() == 0 && b.phys() == pfn << PAGE_SHIFT;
    matches!(blocks, [a, b, ..] if at(a, end + 1) && at(b, end + 3))
}

/// Order 0's free list while a run pushes one-page gaps onto it. The last frame pushed
/// (`head`) has its descriptor written only when the next push gives its `prev` (or when
/// the run closes), so each frame takes one whole store and no other descriptor is read or
/// written, except the list's old head once (its `prev`). The lists end as
/// `push_free_head` would leave them.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Order0 {
    /// The list's first block (descriptor index), or `NONE`.
    head: u32,
    /// `head`'s `next`, once `head` is a frame this run pushed (`pushed > 0`).
    next: u32,
    /// Frames pushed by this run.
    pushed: u64,
}

impl Order0 {
    /// Pushes start on the list whose first block is `head`.
    #[inline(always)]
    fn new(head: u32) -> Self {
        Order0 {
            head,
            next: NONE,
            pushed: 0,
        }
    }

    /// Puts free frame `idx` first: the frame pushed before it written now, its `prev` now
    /// known; the list's old head relinked on the run's first push.
    ///
    /// # Safety
    ///
    /// The frames this `Order0` pushed are descriptors of `pages` (`idx` is one the next
    /// push or `Lists::close` writes; the list's old head is bounds-checked).
    #[inline(always)]
    unsafe fn push(&mut self, pages: &mut [Page], idx: u32) {
        if self.pushed > 0 {
            // SAFETY: `head` is the frame pushed last (the caller's).
            let head = unsafe { pages.get_unchecked_mut(self.head as usize) };
            Page::store(head, free_words(0, self.next, idx));
        } else if self.head != NONE {
            pages[self.head as usize].prev = idx;
        }
        self.next = self.head;
        self.head = idx;
        self.pushed += 1;
    }
}

/// Descriptor words of the first frame of a free block of order `o` (section 0) linked
/// between `prev` and `next`: what `push_free_head` leaves once the next push sets `prev`.
#[inline(always)]
const fn free_words(o: u32, next: u32, prev: u32) -> [u64; 4] {
    let w = Page::words(PageFlags::FREE.bits(), o as u8, 0, 0, NONE, 0);
    [
        w[0],
        w[1] & u32::MAX as u64 | (next as u64) << 32,
        prev as u64,
        w[3],
    ]
}

/// The free lists of a [`FrameAllocator`], borrowed apart from its other fields (the
/// descriptors are passed beside them): a run keeps them in registers while it counts the
/// rest in locals.
pub(crate) struct Lists<'l> {
    head: &'l mut [u32; NR_ORDERS],
    blocks: &'l mut [u64; NR_ORDERS],
    nonempty: &'l mut u32,
    free: &'l mut u64,
    max_order: u32,
}

impl Lists<'_> {
    /// Ends a run's pushes onto order 0's list: the last one's descriptor written, the
    /// list's head and counters brought up to date.
    #[inline(always)]
    fn close(&mut self, pages: &mut [Page], order0: Order0) {
        if order0.pushed > 0 {
            Page::store(
                &mut pages[order0.head as usize],
                free_words(0, order0.next, NONE),
            );
            self.head[0] = order0.head;
            self.blocks[0] += order0.pushed;
            *self.free += order0.pushed;
            *self.nonempty |= 1;
        }
    }

    /// Cuts a gap of `n` frames at descriptor `idx` (frame `pfn`) while a run pushes onto
    /// order 0 through `order0`: the list closed, the gap pushed, a new `Order0` returned.
    #[inline(never)]
    fn cut(&mut self, pages: &mut [Page], order0: Order0, idx: usize, pfn: u64, n: u64) -> Order0 {
        self.close(pages, order0);
        self.push_gap(pages, idx, pfn, n);
        Order0::new(self.head[0])
    }

    /// Puts the `n` frames at descriptor `idx` (frame `pfn`, one initialised chunk of
    /// section 0) on the free lists as maximal aligned blocks, each descriptor written
    /// whole once, no buddy read. No block can merge: the frames just outside the piece
    /// are not free (a preserved item, a reservation or no RAM: memblock's free ranges are
    /// maximal and the items disjoint), a block of a greedy cut is the largest aligned one
    /// that fits, so its buddy either holds one of those frames or is cut itself, and
    /// buddies never leave the chunk. The property test against the eager build (which
    /// merges) pins it.
    fn push_gap(&mut self, pages: &mut [Page], mut idx: usize, mut pfn: u64, mut n: u64) {
        let tail = Page::blank(0, PageFlags::empty());
        *self.free += n;
        while n > 0 {
            // One page (the common gap between two order-0 blocks) needs no cut.
            let o = if n == 1 {
                0
            } else {
                pfn.trailing_zeros()
                    .min(63 - n.leading_zeros())
                    .min(self.max_order)
            };
            let size = 1usize << o;
            // Tails over the whole block, then its head (see `write_claimed`).
            if size > 1 {
                Page::fill(&mut pages[idx..idx + size], tail);
            }
            self.push_free_head(pages, idx, o);
            pfn += size as u64;
            idx += size;
            n -= size as u64;
        }
    }

    /// Writes descriptor `idx` whole as the head of a free block of order `o` and puts it
    /// first on that order's list (the block's tails are written already; `free` is the
    /// caller's to count).
    #[inline(always)]
    fn push_free_head(&mut self, pages: &mut [Page], idx: usize, o: u32) {
        let old = self.head[o as usize];
        let head = Page::words(PageFlags::FREE.bits(), o as u8, 0, 0, NONE, 0);
        // `next` is the high half of the second word (see `Page::words`).
        let head = [
            head[0],
            head[1] & u64::from(u32::MAX) | u64::from(old) << 32,
            head[2],
            head[3],
        ];
        Page::store(&mut pages[idx], head);
        if old != NONE {
            pages[old as usize].prev = idx as u32;
        }
        self.head[o as usize] = idx as u32;
        self.blocks[o as usize] += 1;
        *self.nonempty |= 1 << o;
    }
}

/// Flags of an unclaimed preserved block's first frame, exactly, as the reserve pass
/// writes them: a batch claim takes its short path on exactly these (any other state goes
/// through `claim_reserved`, whose checks decide).
pub(crate) const PRESERVED_HEAD: u16 = PageFlags::RESERVED
    .union(PageFlags::NOINIT)
    .union(PageFlags::PRESERVED)
    .bits();

impl FrameAllocator<'_> {
    /// Step 3 of `new_deferred`, one pass over `preserved`: each item's chunks initialised
    /// (as RESERVED), its frames written once in their preserved state, then the free RAM
    /// between the previous item and this one freed. Refuses an item out of order, empty,
    /// not inside one RAM section, or a block that is not `2^order` aligned pages. After
    /// each item, the blocks that follow it in its chunk go through [`Self::reserve_run`].
    pub(crate) fn reserve_preserved<const RUNS: bool>(
        &mut self,
        mb: &Memblock,
        mut preserved: impl Source,
    ) -> Result<(), MmError> {
        let mut free = mb.free_ranges().map(|r| {
            let (s, e) = r.inner_pfns();
            (s.0, e.0)
        });
        let mut cur_free = free.next();
        let mut prev_end = 0u64;
        // Runs need one section (and may be turned off, for the tests).
        let runs = RUNS && self.nsections == 1;
        // The section cursor and a copy of its section (no field reload per item).
        let (mut si, mut sec) = self.section_from(0, 0);
        // The rest of the chunk the last item readied, not written yet: always starts at
        // `prev_end`, so the next item and its gap write it once when they fit in it.
        let mut unwritten: Option<Unwritten> = None;
        let mut next = preserved.next_item();
        while let Some(item) = next {
            let (s, e) = item.range.outer_pfns();
            let (s, e) = (s.0, e.0);
            // Sorted input keeps the section cursor moving forward; one section must hold
            // the whole item (sections are apart: an item over two would cover a hole).
            if sec.end <= s {
                (si, sec) = self.section_from(si, s);
            }
            let in_ram = sec.base <= s && e <= sec.end;
            let shape_ok = item.block.is_none_or(|(order, _)| {
                order <= MAX_BLOCK_ORDER && e - s == 1u64 << order && Pfn(s).is_aligned(order)
            });
            if s < prev_end || s >= e || !in_ram || !shape_ok {
                return Err(MmError::BadPreservedRange { pfn: Pfn(s) });
            }
            self.settle(unwritten.take());
            unwritten = self.ready_chunks_of(si, s, e);
            self.write_preserved(si, &sec, s, e, item.block);
            self.free_gap(&mut free, &mut cur_free, prev_end, s);
            prev_end = e;
            match self.run_end(runs, &sec, prev_end, cur_free) {
                Some(run) => {
                    (prev_end, next) = self.reserve_run(&mut preserved, run);
                    // The run wrote up to `prev_end`, in the chunk of `unwritten`.
                    unwritten = unwritten
                        .map(|u| Unwritten { lo: prev_end, ..u })
                        .filter(|u| prev_end < u.hi);
                }
                None => next = preserved.next_item(),
            }
        }
        self.settle(unwritten);
        self.free_gap(&mut free, &mut cur_free, prev_end, u64::MAX);
        Ok(())
    }

    /// The first section from `si` on that ends after `pfn`, and its index; past the last
    /// one, `nsections` and a section at `u64::MAX` that holds no frame.
    fn section_from(&self, mut si: usize, pfn: u64) -> (usize, Section) {
        while si < self.nsections && self.sections[si].end <= pfn {
            si += 1;
        }
        let none = Section {
            base: u64::MAX,
            end: u64::MAX,
            first: 0,
            first_chunk: 0,
        };
        (
            si,
            self.sections[..self.nsections]
                .get(si)
                .copied()
                .unwrap_or(none),
        )
    }

    /// Writes the frames `reserve_preserved` left unwritten in an initialised chunk as
    /// RESERVED, what `ready_chunks` would have written there.
    #[inline]
    fn settle(&mut self, unwritten: Option<Unwritten>) {
        if let Some(u) = unwritten {
            let sec = self.sections[u.si];
            let first = (u64::from(sec.first) + u.lo - sec.base) as usize;
            let n = (u.hi - u.lo) as usize;
            Page::fill(
                &mut self.pages[first..first + n],
                Page::blank(u.si as u8, PageFlags::RESERVED),
            );
        }
    }

    /// A run from `prev_end` (see [`Self::reserve_run`]), if one may start there: one
    /// section, `prev_end` inside it and its chunk initialised. Its blocks end by the
    /// chunk's end, its gaps by the end of `free` (the free range the gap after `prev_end`
    /// starts in; `prev_end` when it starts in none).
    #[inline(always)]
    fn run_end(
        &self,
        runs: bool,
        sec: &Section,
        prev_end: u64,
        free: Option<(u64, u64)>,
    ) -> Option<Run> {
        let fits = runs
            && sec.base <= prev_end
            && prev_end < sec.end
            && self.chunk_is_ready(sec, prev_end);
        let free_end = match free {
            Some((fs, fe)) if fs <= prev_end => fe,
            _ => prev_end,
        };
        // Read only when `fits`: then `hi > prev_end`, so `hi - 1` does not wrap.
        let hi = sec.end.min(((prev_end >> CHUNK_ORDER) + 1) << CHUNK_ORDER);
        fits.then(|| Run {
            hi,
            last: free_end.min(hi - 1),
            off: u64::from(sec.first).wrapping_sub(sec.base),
            end: prev_end,
            order0: Order0::new(NONE),
            gaps: 0,
            private_set: 0,
        })
    }

    /// The common items, taken from `items` with no section, chunk or free-range walk:
    /// blocks that follow `run.end` in its chunk (of the only section, initialised: see
    /// [`Self::run_end`]), each after a gap that lies in free RAM. Each block is written as
    /// [`Self::write_preserved`] writes it, each gap freed as `push_gap` frees it; the
    /// counters and the order-0 list head stay in locals until the run ends. Returns where
    /// the last block ends and the first item that is not such a block (`None`: the input
    /// ended), for the general steps (which check it again).
    #[inline(always)]
    fn reserve_run(&mut self, items: &mut impl Source, mut run: Run) -> (u64, Option<Preserved>) {
        let (pages, mut lists) = self.lists();
        run.order0 = Order0::new(lists.head[0]);
        let stop = items.run(&mut run, pages, &mut lists);
        lists.close(pages, run.order0);
        self.reserved -= run.gaps + run.order0.pushed;
        self.private_set += run.private_set;
        (run.end, stop)
    }

    /// The descriptors and the free lists, borrowed apart from the rest of `self`.
    #[inline(always)]
    fn lists(&mut self) -> (&mut [Page], Lists<'_>) {
        let lists = Lists {
            head: &mut self.free_head,
            blocks: &mut self.free_blocks,
            nonempty: &mut self.nonempty,
            free: &mut self.free,
            max_order: self.max_order,
        };
        (self.pages, lists)
    }

    /// Initialises the deferred chunks of `[s, e)` (frames of section `si`) as RESERVED,
    /// except `[s, e)` itself, which [`Self::write_preserved`] writes next. An item in one
    /// chunk it readies leaves the chunk's frames after it unwritten too, and returns them:
    /// the items that follow in the chunk and their gaps write most of them once (a
    /// preserved frame would otherwise be written RESERVED here, then again as preserved);
    /// the caller settles the rest.
    #[inline]
    fn ready_chunks_of(&mut self, si: usize, s: u64, e: u64) -> Option<Unwritten> {
        let sec = self.sections[si];
        let (c0, c1) = (Self::chunk_of(&sec, s), Self::chunk_of(&sec, e - 1));
        if c0 != c1 {
            self.ready_chunks_around(s, e, e);
            return None;
        }
        if self.is_ready(c0) {
            return None;
        }
        let hi = sec.end.min(((s >> CHUNK_ORDER) + 1) << CHUNK_ORDER);
        self.ready_chunks_around(s, e, hi);
        (e < hi).then_some(Unwritten { si, lo: e, hi })
    }

    /// Writes the descriptors of `[s, e)` (of `sec`, section `si`; initialised chunks) once
    /// each: a block's first frame PRESERVED with its order and `private`, the rest tails
    /// linked to it; a plain range RESERVED | NOINIT.
    #[inline]
    fn write_preserved(
        &mut self,
        si: usize,
        sec: &Section,
        s: u64,
        e: u64,
        block: Option<(u32, u64)>,
    ) {
        let first = (u64::from(sec.first) + s - sec.base) as usize;
        let n = (e - s) as usize;
        let pages = &mut self.pages[first..first + n];
        match block {
            Some((order, private)) => {
                let head = Page::words(PRESERVED_HEAD, order as u8, si as u8, 0, NONE, private);
                // Every frame as a tail, then the head over the first: a power-of-two
                // count leaves the fill loop no remainder (see `write_claimed`).
                if order > 0 {
                    Page::fill(pages, reserved_words(si as u8, true, first as u32));
                }
                Page::store(&mut pages[0], head);
                self.private_set += u64::from(private != 0);
            }
            None => Page::fill(pages, reserved_words(si as u8, false, NONE)),
        }
    }

    /// Frees the free RAM of `[lo, hi)` (memblock's free ranges, walked by `cur`/`rest`)
    /// that lies in initialised chunks.
    #[inline]
    fn free_gap(
        &mut self,
        rest: &mut impl Iterator<Item = (u64, u64)>,
        cur: &mut Option<(u64, u64)>,
        lo: u64,
        hi: u64,
    ) {
        while let Some((fs, fe)) = *cur {
            if fe <= lo {
                *cur = rest.next();
                continue;
            }
            if fs >= hi {
                return;
            }
            let (a, b) = (fs.max(lo), fe.min(hi));
            if a < b {
                self.free_gap_piece(a, b);
            }
            if fe > hi {
                return;
            }
            *cur = rest.next();
        }
    }

    /// Frees `[a, b)`, free RAM whose descriptors in initialised chunks say RESERVED so
    /// far. The common piece between two preserved items, inside one initialised chunk of
    /// one section, is written straight into the free lists (below); anything else goes
    /// through the general path.
    #[inline]
    fn free_gap_piece(&mut self, a: u64, b: u64) {
        let sec = self.sections[0];
        let one_chunk = self.nsections == 1
            && sec.base <= a
            && b <= sec.end
            && a >> CHUNK_ORDER == (b - 1) >> CHUNK_ORDER
            && self.chunk_is_ready(&sec, a);
        if !one_chunk {
            self.free_in_ready_chunks(a, b);
            return;
        }
        let first = (u64::from(sec.first) + a - sec.base) as usize;
        self.reserved -= b - a;
        let (pages, mut lists) = self.lists();
        lists.push_gap(pages, first, a, b - a);
    }

    /// Claims the unclaimed preserved block `[pfn, pfn + 2^order)` (reserved by
    /// `new_deferred` as one block of that order), reading only its first frame: the
    /// frame must be PRESERVED with this order. `Ok(None)` if `pfn` heads no preserved block
    /// (the caller checks frame by frame); `Err` if it is a tail of one or the order
    /// differs. Then writes every frame once in the state of `kind`.
    #[inline(always)]
    pub(crate) fn claim_preserved(
        &mut self,
        idx: usize,
        pfn: Pfn,
        order: u32,
        kind: BlockKind,
    ) -> Result<Option<()>, MmError> {
        let p = &self.pages[idx];
        if p.has(PageFlags::PRESERVED_TAIL) {
            return Err(MmError::PreservedTail { pfn });
        }
        if p.flags != PRESERVED_HEAD {
            return Ok(None);
        }
        if u32::from(p.order) != order {
            return Err(MmError::OrderMismatch {
                pfn,
                expected: u32::from(p.order),
                got: order,
            });
        }
        self.private_set -= u64::from(p.private != 0);
        let n = 1usize << order;
        self.reserved -= n as u64;
        self.allocated += n as u64;
        self.write_claimed(idx, order, kind);
        Ok(Some(()))
    }

    /// Writes the claimed block at `idx` in the state of `kind`: the first frame, then one
    /// whole-descriptor store per other frame (no read, no branch per frame).
    #[inline]
    pub(crate) fn write_claimed(&mut self, idx: usize, order: u32, kind: BlockKind) {
        let n = 1usize << order;
        let pages = &mut self.pages[idx..idx + n];
        let section = pages[0].section;
        let (head, tail) = match kind {
            BlockKind::Folio if order > 0 => (
                Page::words(PageFlags::HEAD.bits(), order as u8, section, 1, NONE, 0),
                Page::words(PageFlags::TAIL.bits(), 0, section, 0, idx as u32, 0),
            ),
            BlockKind::Folio | BlockKind::Contig => (
                Page::words(0, order as u8, section, 1, NONE, 0),
                Page::words(0, 0, section, 0, NONE, 0),
            ),
            BlockKind::Split => {
                let w = Page::words(PageFlags::SPLIT.bits(), 0, section, 1, NONE, 0);
                (w, w)
            }
        };
        // The tails' store over all `2^order` frames, then the head's over the first: the
        // fill loop stores four descriptors a trip, so `2^order - 1` tails would leave it
        // three single stores (and their setup) on every block of order 2 and more.
        if order > 0 {
            Page::fill(pages, tail);
        }
        Page::store(&mut pages[0], head);
    }
}
