//! The frame allocator: descriptor storage, RAM sections, queries and statistics.
//!
//! Owns the descriptor array (one `Page` per RAM frame, grouped in per-range sections so
//! holes cost nothing) and the counters. The buddy lists live in `buddy`, the Linux
//! refcount API in `refs`, restore support in `restore`, deferred descriptor init in
//! `deferred`. Never touches frame contents, and never reads the descriptor of a frame
//! whose chunk is still deferred.

use core::fmt;
use core::mem::MaybeUninit;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::error::MmError;
use crate::memblock::{Memblock, MEMBLOCK_CAP};
use crate::page::{Page, PageFlags, NONE};

/// Largest buddy order of this build: 10 (4 MiB blocks), or 8 with feature `max-order-8`.
#[cfg(not(feature = "max-order-8"))]
pub const MAX_ORDER: u32 = 10;
/// Largest buddy order of this build: 10 (4 MiB blocks), or 8 with feature `max-order-8`.
#[cfg(feature = "max-order-8")]
pub const MAX_ORDER: u32 = 8;

/// Largest `max_order` an allocator instance may be built with.
pub(crate) const MAX_ORDER_CAP: u32 = 10;

/// Largest order of a reserved/restored block (from a previous image); such blocks are
/// freed in chunks no larger than the instance's `max_order`.
pub const MAX_BLOCK_ORDER: u32 = 30;

/// Number of free lists an allocator holds (orders `0..=MAX_ORDER_CAP`).
pub const NR_ORDERS: usize = MAX_ORDER_CAP as usize + 1;

const _: () = assert!(MAX_ORDER <= MAX_ORDER_CAP);

/// Order of a deferred-init chunk (`deferred`): the largest order any allocator instance
/// may use, so that no buddy lookup leaves the chunk it starts in.
pub(crate) const CHUNK_ORDER: u32 = MAX_ORDER_CAP;

/// Chunks of a section of frames `[base, end)`.
pub(crate) const fn chunks_of(base: u64, end: u64) -> u64 {
    if base >= end {
        0
    } else {
        ((end - 1) >> CHUNK_ORDER) - (base >> CHUNK_ORDER) + 1
    }
}

/// One RAM range with its descriptors: frames `[base, end)` use descriptors
/// `[first, first + end - base)`.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Section {
    pub(crate) base: u64,
    pub(crate) end: u64,
    pub(crate) first: u32,
    /// Global index of the section's first deferred-init chunk ([`CHUNK_ORDER`]).
    pub(crate) first_chunk: u32,
}

/// What mm knows about an allocated block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// A compound page: head refcount >= 1, tails 0 and linked to the head.
    Folio,
    /// A non-compound block from `alloc_pages` (not split): head refcount >= 1, tails 0.
    Contig,
    /// Every page split out (`split_page`), each with its own refcount >= 1.
    Split,
}

/// Allocator statistics, in frames unless said otherwise.
///
/// Invariant: `free + deferred + reserved + allocated + bad == total`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// RAM frames with a descriptor.
    pub total: u64,
    /// Frames on the buddy free lists.
    pub free: u64,
    /// Free frames whose descriptors are not initialised yet (deferred init): not on the
    /// lists, handed to them chunk by chunk on demand or by `init_deferred`.
    pub deferred: u64,
    /// RESERVED frames (image, FDT, firmware, preserved blocks not yet claimed).
    pub reserved: u64,
    /// Frames handed out (allocated or claimed) and not yet freed.
    pub allocated: u64,
    /// Frames leaked after a failed free-path check.
    pub bad: u64,
    /// Number of bad-page reports (one per failed free).
    pub bad_events: u64,
    /// Largest order of this allocator instance.
    pub max_order: u32,
    /// Free blocks on each order's list (like /proc/buddyinfo); frames = blocks << order.
    pub free_per_order: [u64; NR_ORDERS],
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mm: {} KiB total, {} KiB free, {} KiB deferred, {} KiB reserved, {} KiB allocated, {} bad pages; free blocks by order:",
            self.total * PAGE_SIZE / 1024,
            self.free * PAGE_SIZE / 1024,
            self.deferred * PAGE_SIZE / 1024,
            self.reserved * PAGE_SIZE / 1024,
            self.allocated * PAGE_SIZE / 1024,
            self.bad
        )?;
        for n in &self.free_per_order[..=self.max_order as usize] {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}

/// The buddy frame allocator over the descriptors of every RAM frame.
pub struct FrameAllocator<'a> {
    pub(crate) pages: &'a mut [Page],
    pub(crate) sections: [Section; MEMBLOCK_CAP],
    pub(crate) nsections: usize,
    pub(crate) max_order: u32,
    /// First block of each order's free list (descriptor index), or `NONE`.
    pub(crate) free_head: [u32; NR_ORDERS],
    /// Blocks on each order's free list.
    pub(crate) free_blocks: [u64; NR_ORDERS],
    /// Bit `o` set when order `o`'s list is not empty.
    pub(crate) nonempty: u32,
    pub(crate) total: u64,
    pub(crate) free: u64,
    /// Frames in chunks whose descriptors are not written yet (all of them free RAM).
    pub(crate) deferred: u64,
    /// Two bitmaps of one bit per chunk, each half of the slice: "initialised" (the
    /// descriptors are written), then "reserved" (not initialised, and every frame is
    /// reserved memory nothing manages). Empty (never read) when built eagerly.
    pub(crate) chunk_ready: &'a mut [u64],
    /// Chunks not initialised yet (deferred free or deferred reserved).
    pub(crate) uninit_chunks: u64,
    /// Every chunk below this index is initialised (where on-demand init looks first).
    pub(crate) chunk_cursor: u32,
    pub(crate) reserved: u64,
    pub(crate) allocated: u64,
    pub(crate) bad: u64,
    pub(crate) bad_events: u64,
    pub(crate) checks: bool,
    /// Scan every tail at free even when the bookkeeping below proves them clean.
    pub(crate) full_scan: bool,
    /// Frames whose `private` word is not zero (outside leaked blocks).
    pub(crate) private_set: u64,
    /// `set_page_refcount` was used: a tail may hold a count mm did not give it.
    pub(crate) raw_refcounts: bool,
}

impl fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("sections", &&self.sections[..self.nsections])
            .field("stats", &self.stats())
            .finish()
    }
}

impl<'a> FrameAllocator<'a> {
    /// Number of descriptors (`Page`s) needed to cover the RAM of `mb`.
    pub fn descriptors_needed(mb: &Memblock) -> usize {
        mb.memory().map(|r| (r.size() / PAGE_SIZE) as usize).sum()
    }

    /// Bytes of descriptor storage needed for the RAM of `mb`.
    pub fn descriptor_bytes(mb: &Memblock) -> u64 {
        Self::descriptors_needed(mb) as u64 * Page::SIZE as u64
    }

    /// Builds the allocator: descriptors for every RAM frame of `mb` go in `storage`
    /// (the first `descriptors_needed` entries are used); every free range of `mb` goes to
    /// the buddy lists; reserved ranges become RESERVED frames (with `NOINIT` for
    /// `reserve_noinit` ranges). `max_order` is at most 10.
    pub fn new(
        mb: &Memblock,
        storage: &'a mut [MaybeUninit<Page>],
        max_order: u32,
    ) -> Result<Self, MmError> {
        let (sections, nsections, total) = Self::layout(mb, max_order)?;
        let needed = total as usize;
        if storage.len() < needed {
            return Err(MmError::StorageTooSmall {
                needed,
                got: storage.len(),
            });
        }
        let storage = &mut storage[..needed];
        for (s, sec) in sections[..nsections].iter().enumerate() {
            let span = sec.first as usize..sec.first as usize + (sec.end - sec.base) as usize;
            for slot in &mut storage[span] {
                slot.write(Page::new(s as u8, PageFlags::RESERVED));
            }
        }
        // SAFETY: the sections tile [0, needed) without gaps (each `first` is the running
        // total), so the loop above initialised every element of `storage`; `Page` has no
        // invalid bit patterns beyond what `write` stored, and the borrow keeps lifetime 'a.
        let pages: &'a mut [Page] =
            unsafe { &mut *(storage as *mut [MaybeUninit<Page>] as *mut [Page]) };
        let mut fa = Self::assemble(pages, &mut [], sections, nsections, total, max_order);
        for r in mb.reserved_noinit() {
            let (s, e) = r.outer_pfns();
            fa.for_each_ram_piece(s.0, e.0, |fa, first, n| {
                for p in &mut fa.pages[first..first + n] {
                    p.set(PageFlags::NOINIT);
                }
            });
        }
        for r in mb.free_ranges() {
            let (s, e) = r.inner_pfns();
            fa.for_each_ram_piece(s.0, e.0, |fa, first, n| {
                for p in &mut fa.pages[first..first + n] {
                    p.clear(PageFlags::RESERVED);
                }
                fa.reserved -= n as u64;
                fa.free_range(first, n as u64);
            });
        }
        Ok(fa)
    }

    /// An allocator over `pages` (not written here) with every frame counted reserved and
    /// no free block: the common start of `new` and `new_deferred`.
    pub(crate) fn empty(
        mb: &Memblock,
        pages: &'a mut [Page],
        chunk_ready: &'a mut [u64],
        max_order: u32,
    ) -> Result<Self, MmError> {
        let (sections, nsections, total) = Self::layout(mb, max_order)?;
        if pages.len() < total as usize {
            return Err(MmError::StorageTooSmall {
                needed: total as usize,
                got: pages.len(),
            });
        }
        Ok(Self::assemble(
            pages,
            chunk_ready,
            sections,
            nsections,
            total,
            max_order,
        ))
    }

    /// The RAM sections of `mb` (descriptor and chunk offsets) and the frame total.
    fn layout(
        mb: &Memblock,
        max_order: u32,
    ) -> Result<([Section; MEMBLOCK_CAP], usize, u64), MmError> {
        if max_order > MAX_ORDER_CAP {
            return Err(MmError::OrderTooLarge {
                order: max_order,
                max: MAX_ORDER_CAP,
            });
        }
        let mut sections = [Section::default(); MEMBLOCK_CAP];
        let mut nsections = 0;
        let mut total: u64 = 0;
        let mut chunks: u64 = 0;
        for r in mb.memory() {
            let (base, end) = r.inner_pfns();
            if base.0 >= end.0 {
                continue;
            }
            let frames = end.0 - base.0;
            // Descriptor indices are u32 with u32::MAX meaning "none".
            if total + frames >= u64::from(NONE) || nsections >= sections.len() {
                return Err(MmError::TooManyFrames {
                    frames: total + frames,
                });
            }
            sections[nsections] = Section {
                base: base.0,
                end: end.0,
                first: total as u32,
                first_chunk: chunks as u32,
            };
            nsections += 1;
            total += frames;
            chunks += chunks_of(base.0, end.0);
        }
        Ok((sections, nsections, total))
    }

    fn assemble(
        pages: &'a mut [Page],
        chunk_ready: &'a mut [u64],
        sections: [Section; MEMBLOCK_CAP],
        nsections: usize,
        total: u64,
        max_order: u32,
    ) -> Self {
        FrameAllocator {
            pages,
            sections,
            nsections,
            max_order,
            free_head: [NONE; NR_ORDERS],
            free_blocks: [0; NR_ORDERS],
            nonempty: 0,
            total,
            free: 0,
            deferred: 0,
            chunk_ready,
            uninit_chunks: 0,
            chunk_cursor: 0,
            reserved: total,
            allocated: 0,
            bad: 0,
            bad_events: 0,
            checks: true,
            full_scan: false,
            private_set: 0,
            raw_refcounts: false,
        }
    }

    /// Calls `f(self, first_index, count)` for each part of frames `[start, end)` that is
    /// RAM, one section at a time.
    pub(crate) fn for_each_ram_piece(
        &mut self,
        start: u64,
        end: u64,
        mut f: impl FnMut(&mut Self, usize, usize),
    ) {
        for s in 0..self.nsections {
            let sec = self.sections[s];
            let lo = start.max(sec.base);
            let hi = end.min(sec.end);
            if lo < hi {
                f(
                    self,
                    (sec.first as u64 + lo - sec.base) as usize,
                    (hi - lo) as usize,
                );
            }
        }
    }

    /// Largest order of this instance.
    pub fn max_order(&self) -> u32 {
        self.max_order
    }

    /// Whether `pfn` is a RAM frame managed by this allocator (its descriptor may still be
    /// deferred).
    pub fn contains(&self, pfn: Pfn) -> bool {
        self.is_ram(pfn)
    }

    /// The RAM ranges covered by descriptors, as frame ranges `[start, end)`.
    pub fn ram(&self) -> impl Iterator<Item = (Pfn, Pfn)> + '_ {
        self.sections[..self.nsections]
            .iter()
            .map(|s| (Pfn(s.base), Pfn(s.end)))
    }

    /// Turns the free-path checks on (the default) or off (faster frees, no bad-page
    /// detection beyond the head's state).
    pub fn set_checks(&mut self, on: bool) {
        self.checks = on;
    }

    /// With checks on, scan every frame of every freed block (the default scans tails
    /// only when some frame could be off its expected state: a `private` word is set
    /// somewhere, or `set_page_refcount` was used; see docs/mm.md). Full scans also catch
    /// stray writes into descriptors, at O(2^order) per free.
    pub fn set_full_scan(&mut self, on: bool) {
        self.full_scan = on;
    }

    /// Whether freeing a non-compound block must look at its tails.
    #[inline]
    pub(crate) fn tails_may_be_dirty(&self) -> bool {
        self.full_scan || self.raw_refcounts || self.private_set > 0
    }

    /// Sets `private` of descriptor `idx`, keeping `private_set` exact.
    #[inline]
    pub(crate) fn write_private(&mut self, idx: usize, v: u64) {
        let old = self.pages[idx].private;
        if old == 0 && v != 0 {
            self.private_set += 1;
        } else if old != 0 && v == 0 {
            self.private_set -= 1;
        }
        self.pages[idx].private = v;
    }

    /// Descriptor index of `pfn`.
    #[inline(always)]
    pub(crate) fn index(&self, pfn: Pfn) -> Result<usize, MmError> {
        let secs = &self.sections[..self.nsections];
        let s = if secs.len() == 1 {
            0
        } else {
            secs.partition_point(|s| s.end <= pfn.0)
        };
        match secs.get(s) {
            Some(sec) if sec.base <= pfn.0 && pfn.0 < sec.end => {
                if self.uninit_chunks != 0 && !self.chunk_is_ready(sec, pfn.0) {
                    return Err(MmError::Deferred { pfn });
                }
                Ok((sec.first as u64 + pfn.0 - sec.base) as usize)
            }
            _ => Err(MmError::NotRam { pfn }),
        }
    }

    /// Descriptor index of `pfn`, checking that the block `[pfn, pfn + 2^order)` is
    /// aligned and lies in one RAM section.
    pub(crate) fn block_index(&self, pfn: Pfn, order: u32) -> Result<usize, MmError> {
        if order > MAX_BLOCK_ORDER {
            return Err(MmError::OrderTooLarge {
                order,
                max: MAX_BLOCK_ORDER,
            });
        }
        if !pfn.is_aligned(order) {
            return Err(MmError::Misaligned { pfn, order });
        }
        let idx = self.index(pfn)?;
        let sec = &self.sections[self.pages[idx].section as usize];
        let end = pfn.0 + (1u64 << order);
        if end > sec.end {
            return Err(MmError::NotRam { pfn: Pfn(sec.end) });
        }
        // A block larger than a chunk spans several: each must be initialised (the first
        // one is, `index` checked it).
        if self.uninit_chunks != 0 && order > CHUNK_ORDER {
            if let Some(c) = self.first_deferred_in(sec, pfn.0, end) {
                return Err(MmError::Deferred { pfn: Pfn(c) });
            }
        }
        Ok(idx)
    }

    /// Frame number of descriptor `idx`.
    #[inline(always)]
    pub(crate) fn pfn_of(&self, idx: usize) -> Pfn {
        let sec = &self.sections[self.pages[idx].section as usize];
        Pfn(sec.base + (idx as u64 - sec.first as u64))
    }

    /// The flags of `pfn`.
    pub fn page_flags(&self, pfn: Pfn) -> Result<PageFlags, MmError> {
        Ok(self.pages[self.index(pfn)?].flags())
    }

    /// The refcount of the page's folio, like Linux's `page_count`: a folio tail reports
    /// its head's count; any other frame its own.
    pub fn page_count(&self, pfn: Pfn) -> Result<u32, MmError> {
        let idx = self.index(pfn)?;
        Ok(self.pages[self.folio_index(idx)].count())
    }

    /// The frame's own refcount (0 on every tail), like Linux's `page_ref_count`.
    pub fn page_ref_count(&self, pfn: Pfn) -> Result<u32, MmError> {
        Ok(self.pages[self.index(pfn)?].count())
    }

    /// The order of the folio headed by `head`: its compound order, or 0 for any page
    /// that is not compound (as Linux's `folio_order` on a small folio). A tail is refused.
    pub fn folio_order(&self, head: Pfn) -> Result<u32, MmError> {
        let p = &self.pages[self.index(head)?];
        if p.has(PageFlags::TAIL) {
            Err(MmError::NotHead { pfn: head })
        } else if p.has(PageFlags::HEAD) {
            Ok(u32::from(p.order))
        } else {
            Ok(0)
        }
    }

    /// The order recorded on the first frame of an allocated non-compound block (the
    /// `alloc_pages` order), of a folio, or of a free block; 0 elsewhere.
    pub fn page_order(&self, pfn: Pfn) -> Result<u32, MmError> {
        Ok(u32::from(self.pages[self.index(pfn)?].order))
    }

    /// The compound head of `pfn`, or `pfn` itself when it is not a folio tail.
    pub fn page_folio(&self, pfn: Pfn) -> Result<Pfn, MmError> {
        let idx = self.index(pfn)?;
        let h = self.folio_index(idx);
        Ok(if h == idx { pfn } else { self.pfn_of(h) })
    }

    /// Descriptor index of the folio holding descriptor `idx`.
    #[inline]
    pub(crate) fn folio_index(&self, idx: usize) -> usize {
        let p = &self.pages[idx];
        if p.has(PageFlags::TAIL) && (p.head as usize) < self.pages.len() {
            p.head as usize
        } else {
            idx
        }
    }

    /// The `private` word of `pfn`.
    pub fn page_private(&self, pfn: Pfn) -> Result<u64, MmError> {
        Ok(self.pages[self.index(pfn)?].private)
    }

    /// Sets the `private` word of `pfn` (any frame, including RESERVED ones: kho stashes
    /// restore data there). It must be 0 again before the frame is freed. A preserved
    /// block's tail is refused (`PreservedTail`): its block's word is on its first frame.
    pub fn set_page_private(&mut self, pfn: Pfn, v: u64) -> Result<(), MmError> {
        let idx = self.index(pfn)?;
        if self.pages[idx].has(PageFlags::PRESERVED_TAIL) {
            return Err(MmError::PreservedTail { pfn });
        }
        self.write_private(idx, v);
        Ok(())
    }

    /// Sets a frame's own refcount with no check at all, like Linux's `set_page_count`.
    /// For restore code and tests that reproduce a broken state; normal code never needs
    /// it. Refused on free frames (it would corrupt the buddy lists' accounting).
    pub fn set_page_refcount(&mut self, pfn: Pfn, count: u32) -> Result<(), MmError> {
        let idx = self.index(pfn)?;
        if self.pages[idx].has(PageFlags::FREE) {
            return Err(MmError::AlreadyFree { pfn });
        }
        self.raw_refcounts = true;
        self.pages[idx].set_count(count);
        Ok(())
    }

    /// Current statistics.
    pub fn stats(&self) -> Stats {
        Stats {
            total: self.total,
            free: self.free,
            deferred: self.deferred,
            reserved: self.reserved,
            allocated: self.allocated,
            bad: self.bad,
            bad_events: self.bad_events,
            max_order: self.max_order,
            free_per_order: self.free_blocks,
        }
    }

    /// Every block on the free lists as `(first frame, order)`, by order then list order.
    pub fn free_blocks(&self) -> impl Iterator<Item = (Pfn, u32)> + '_ {
        let mut order = 0u32;
        let mut cur = self.free_head[0];
        core::iter::from_fn(move || loop {
            if cur != NONE {
                let idx = cur as usize;
                cur = self.pages[idx].next;
                return Some((self.pfn_of(idx), order));
            }
            order += 1;
            if order as usize >= NR_ORDERS {
                return None;
            }
            cur = self.free_head[order as usize];
        })
    }
}
