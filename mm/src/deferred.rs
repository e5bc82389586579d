//! Deferred descriptor init: an allocator that starts by writing only the descriptors of
//! memory something holds (reserved ranges, preserved blocks) and leaves the rest of RAM
//! for later, as Linux defers struct-page init.
//!
//! Owns the chunk bitmaps and the deferred -> free transition. A chunk is `2^CHUNK_ORDER`
//! frames, pfn aligned and cut at section edges: the largest buddy block, so no buddy
//! lookup ever leaves the chunk it starts in and a deferred chunk is never read. A deferred
//! chunk is either all free RAM (it reaches the free lists when an allocation finds them
//! empty, or through `init_deferred`) or all inside one memblock reservation (scratch, the
//! descriptor array itself: written as RESERVED only by `init_deferred`), so that neither
//! the RAM size nor the reservations cost the build anything but their edges.

use crate::addr::Pfn;
use crate::error::MmError;
use crate::frame::{chunks_of, FrameAllocator, Section, CHUNK_ORDER};
use crate::memblock::Memblock;
use crate::page::{Page, PageFlags};
use crate::reserve::{Items, Preserved, PreservedBlock, PreservedSet, Source};

/// What [`FrameAllocator::new_deferred`] needs from its caller, in elements.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DeferredStorage {
    /// Descriptors (`Page`s): one per RAM frame.
    pub descriptors: usize,
    /// Words (`u64`) of the chunk bitmaps: two bits per chunk.
    pub chunk_words: usize,
}

impl DeferredStorage {
    /// The storage for the RAM of `mb`.
    pub fn for_memblock(mb: &Memblock) -> Self {
        let mut frames = 0u64;
        let mut chunks = 0u64;
        for r in mb.memory() {
            let (b, e) = r.inner_pfns();
            if b.0 < e.0 {
                frames += e.0 - b.0;
                chunks += chunks_of(b.0, e.0);
            }
        }
        DeferredStorage {
            descriptors: frames as usize,
            chunk_words: 2 * chunks.div_ceil(64) as usize,
        }
    }

    /// Bytes of both arrays, the descriptors first (the bitmap follows, 8-byte aligned).
    pub fn bytes(&self) -> u64 {
        self.descriptors as u64 * Page::SIZE as u64 + self.chunk_words as u64 * 8
    }
}

impl<'a> FrameAllocator<'a> {
    /// Builds the allocator writing only the descriptors of chunks that hold a reserved
    /// range of `mb` or a `preserved` range; every other frame stays deferred (counted in
    /// `Stats::deferred`) until an allocation needs it or [`Self::init_deferred`] runs.
    ///
    /// `preserved`: a previous image's blocks and metadata ([`Preserved`], or plain
    /// `PhysRange`s), page-aligned RAM, sorted and disjoint; they become RESERVED | NOINIT
    /// frames, as `Memblock::reserve_noinit` ranges would, with no table to hold them, each
    /// written once (a block's first frame PRESERVED with its order and `private`: see
    /// [`Self::claim_reserved`]). `pages` may hold any bytes (every bit pattern is a valid
    /// `Page`): a descriptor is written before it is first read. Cost: O(touched chunks ×
    /// 2^CHUNK_ORDER + items), not O(RAM).
    pub fn new_deferred<I>(
        mb: &Memblock,
        pages: &'a mut [Page],
        chunk_ready: &'a mut [u64],
        max_order: u32,
        preserved: I,
    ) -> Result<Self, MmError>
    where
        I: IntoIterator,
        I::Item: Into<Preserved>,
    {
        Self::build_deferred::<true, I>(mb, pages, chunk_ready, max_order, preserved)
    }

    /// [`Self::new_deferred`] over a [`PreservedSet`]: the same items (its merge), the same
    /// checks and errors; the blocks between two of its ranges are read from its array.
    pub fn new_deferred_set<B: PreservedBlock>(
        mb: &Memblock,
        pages: &'a mut [Page],
        chunk_ready: &'a mut [u64],
        max_order: u32,
        preserved: PreservedSet<'_, B>,
    ) -> Result<Self, MmError> {
        Self::build_from::<true>(mb, pages, chunk_ready, max_order, preserved)
    }

    /// [`Self::new_deferred`], with `RUNS` false taking every preserved item through the
    /// general steps of `reserve_preserved` (the tests pin the runs against them).
    pub(crate) fn build_deferred<const RUNS: bool, I>(
        mb: &Memblock,
        pages: &'a mut [Page],
        chunk_ready: &'a mut [u64],
        max_order: u32,
        preserved: I,
    ) -> Result<Self, MmError>
    where
        I: IntoIterator,
        I::Item: Into<Preserved>,
    {
        let items = Items(preserved.into_iter().map(Into::into));
        Self::build_from::<RUNS>(mb, pages, chunk_ready, max_order, items)
    }

    /// Steps 1 to 3 of [`Self::new_deferred`], the items taken from `preserved`.
    pub(crate) fn build_from<const RUNS: bool>(
        mb: &Memblock,
        pages: &'a mut [Page],
        chunk_ready: &'a mut [u64],
        max_order: u32,
        preserved: impl Source,
    ) -> Result<Self, MmError> {
        let need = DeferredStorage::for_memblock(mb);
        let (pages, chunk_ready) = Self::deferred_storage(need, pages, chunk_ready)?;
        let mut fa = Self::empty(mb, pages, chunk_ready, max_order)?;
        fa.deferred = fa.total;
        fa.reserved = 0;
        fa.uninit_chunks = fa.nchunks();
        fa.write_reservation_edges(mb);
        fa.reserve_preserved::<RUNS>(mb, preserved)?;
        Ok(fa)
    }

    /// Step 1 of [`Self::new_deferred`]: the caller's arrays, checked against `need` and cut
    /// to it; the chunk bitmaps start all "deferred".
    fn deferred_storage<'s>(
        need: DeferredStorage,
        pages: &'s mut [Page],
        chunk_ready: &'s mut [u64],
    ) -> Result<(&'s mut [Page], &'s mut [u64]), MmError> {
        if pages.len() < need.descriptors {
            return Err(MmError::StorageTooSmall {
                needed: need.descriptors,
                got: pages.len(),
            });
        }
        if chunk_ready.len() < need.chunk_words {
            return Err(MmError::StorageTooSmall {
                needed: need.chunk_words,
                got: chunk_ready.len(),
            });
        }
        let chunk_ready = &mut chunk_ready[..need.chunk_words];
        chunk_ready.fill(0);
        Ok((&mut pages[..need.descriptors], chunk_ready))
    }

    /// Step 2: chunks wholly inside a reservation stay deferred (as reserved); its edges are
    /// written now. `reserve_noinit` ranges are written whole, RESERVED | NOINIT.
    fn write_reservation_edges(&mut self, mb: &Memblock) {
        for r in mb.reserved() {
            let (s, e) = r.outer_pfns();
            self.reserve_chunks(s.0, e.0);
        }
        for r in mb.reserved_noinit() {
            let (s, e) = r.outer_pfns();
            self.ready_chunks(s.0, e.0);
            self.mark_noinit(s.0, e.0);
        }
    }

    /// Free frames whose descriptors are not initialised yet.
    pub fn deferred_frames(&self) -> u64 {
        self.deferred
    }

    /// Initialises up to `max_chunks` deferred chunks (lowest first) and puts their frames
    /// on the free lists. Returns the frames initialised; 0 once nothing is deferred.
    pub fn init_deferred(&mut self, max_chunks: usize) -> u64 {
        let before = self.deferred;
        for _ in 0..max_chunks {
            if !self.init_next_deferred() {
                break;
            }
        }
        before - self.deferred
    }

    /// Initialises the lowest deferred chunk: free memory to the free lists, a reserved
    /// chunk as RESERVED descriptors. False if there is none.
    pub(crate) fn init_next_deferred(&mut self) -> bool {
        if self.uninit_chunks == 0 {
            return false;
        }
        let n = self.nchunks();
        let mut c = self.chunk_cursor as u64;
        while c < n {
            let w = self.chunk_ready[(c / 64) as usize] | ((1u64 << (c % 64)) - 1);
            if w != u64::MAX {
                c = (c & !63) + u64::from((!w).trailing_zeros());
                break;
            }
            c = (c & !63) + 64;
        }
        if c >= n {
            return false;
        }
        self.chunk_cursor = c as u32;
        let (si, lo, hi) = self.chunk_span(c);
        let sec = self.sections[si];
        let first = (u64::from(sec.first) + lo - sec.base) as usize;
        let count = (hi - lo) as usize;
        if self.is_reserved_chunk(c) {
            Page::fill(
                &mut self.pages[first..first + count],
                Page::blank(si as u8, PageFlags::RESERVED),
            );
            self.clear_reserved_chunk(c);
            self.set_ready(c);
            return true;
        }
        Page::fill(
            &mut self.pages[first..first + count],
            Page::blank(si as u8, PageFlags::empty()),
        );
        self.set_ready(c);
        self.deferred -= count as u64;
        self.free_range(first, count as u64);
        true
    }

    /// Words of one of the two bitmaps.
    fn bitmap_words(&self) -> usize {
        self.chunk_ready.len() / 2
    }

    fn is_reserved_chunk(&self, c: u64) -> bool {
        self.chunk_ready[self.bitmap_words() + (c / 64) as usize] & (1u64 << (c % 64)) != 0
    }

    fn clear_reserved_chunk(&mut self, c: u64) {
        let w = self.bitmap_words();
        self.chunk_ready[w + (c / 64) as usize] &= !(1u64 << (c % 64));
    }

    /// Counts the frames of `[start, end)` reserved: chunks wholly inside stay deferred
    /// (marked reserved), the others are initialised as RESERVED frames.
    fn reserve_chunks(&mut self, start: u64, end: u64) {
        // One chunk at a time: the loop body changes the bitmaps the walk reads.
        let mut c = self.chunks_in(start, end).map(|(_, c)| c).next();
        while let Some(cur) = c {
            let (_, clo, chi) = self.chunk_span(cur);
            let untouched = !self.is_ready(cur) && !self.is_reserved_chunk(cur);
            if untouched && start <= clo && chi <= end {
                let w = self.bitmap_words();
                self.chunk_ready[w + (cur / 64) as usize] |= 1u64 << (cur % 64);
                self.deferred -= chi - clo;
                self.reserved += chi - clo;
            } else {
                self.ready_chunks(clo.max(start), chi.min(end));
            }
            c = self.chunks_in(chi, end).map(|(_, c)| c).next();
        }
    }

    /// Number of chunks over all sections.
    fn nchunks(&self) -> u64 {
        match self.sections[..self.nsections].last() {
            Some(s) => u64::from(s.first_chunk) + chunks_of(s.base, s.end),
            None => 0,
        }
    }

    /// Global chunk index of frame `pfn` of section `sec`.
    #[inline(always)]
    pub(crate) fn chunk_of(sec: &Section, pfn: u64) -> u64 {
        u64::from(sec.first_chunk) + (pfn >> CHUNK_ORDER) - (sec.base >> CHUNK_ORDER)
    }

    /// Whether the chunk holding `pfn` (a frame of `sec`) has its descriptors written.
    #[inline(always)]
    pub(crate) fn chunk_is_ready(&self, sec: &Section, pfn: u64) -> bool {
        self.is_ready(Self::chunk_of(sec, pfn))
    }

    /// Whether chunk `c` has its descriptors written.
    #[inline(always)]
    pub(crate) fn is_ready(&self, c: u64) -> bool {
        self.chunk_ready[(c / 64) as usize] & (1u64 << (c % 64)) != 0
    }

    /// Every chunk holding a RAM frame of `[start, end)`, as (section index, chunk).
    fn chunks_in(&self, start: u64, end: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.sections[..self.nsections]
            .iter()
            .enumerate()
            .filter_map(move |(si, sec)| {
                let (lo, hi) = (start.max(sec.base), end.min(sec.end));
                (lo < hi).then(|| (si, Self::chunk_of(sec, lo)..=Self::chunk_of(sec, hi - 1)))
            })
            .flat_map(|(si, cs)| cs.map(move |c| (si, c)))
    }

    fn set_ready(&mut self, c: u64) {
        self.chunk_ready[(c / 64) as usize] |= 1u64 << (c % 64);
        self.uninit_chunks -= 1;
    }

    /// The section and frames `[lo, hi)` of chunk `c`.
    fn chunk_span(&self, c: u64) -> (usize, u64, u64) {
        let secs = &self.sections[..self.nsections];
        let si = secs.partition_point(|s| u64::from(s.first_chunk) <= c) - 1;
        let sec = secs[si];
        let start = ((sec.base >> CHUNK_ORDER) + (c - u64::from(sec.first_chunk))) << CHUNK_ORDER;
        (
            si,
            start.max(sec.base),
            (start + (1u64 << CHUNK_ORDER)).min(sec.end),
        )
    }

    /// First frame of a deferred chunk in `[start, end)` of `sec`, if any.
    pub(crate) fn first_deferred_in(&self, sec: &Section, start: u64, end: u64) -> Option<u64> {
        let mut f = start.max(sec.base);
        let end = end.min(sec.end);
        while f < end {
            if !self.chunk_is_ready(sec, f) {
                return Some(f);
            }
            f = ((f >> CHUNK_ORDER) + 1) << CHUNK_ORDER;
        }
        None
    }

    /// Initialises every deferred chunk that holds a frame of `[start, end)` as RESERVED
    /// frames (the caller frees what is free).
    pub(crate) fn ready_chunks(&mut self, start: u64, end: u64) {
        self.ready_chunks_around(start, end, start);
    }

    /// [`Self::ready_chunks`] writing no descriptor of `[start, skip_end)`: the caller
    /// writes those right after, before anything reads them (a preserved item).
    pub(crate) fn ready_chunks_around(&mut self, start: u64, end: u64, skip_end: u64) {
        let mut c = self.chunks_in(start, end).next();
        while let Some((si, cur)) = c {
            let (_, clo, chi) = self.chunk_span(cur);
            if !self.is_ready(cur) {
                let sec = self.sections[si];
                let first = (u64::from(sec.first) + clo - sec.base) as usize;
                let n = (chi - clo) as usize;
                let words = Page::blank(si as u8, PageFlags::RESERVED);
                let skip_lo = (start.clamp(clo, chi) - clo) as usize;
                let skip_hi = (skip_end.clamp(clo, chi) - clo) as usize;
                Page::fill(&mut self.pages[first..first + skip_lo], words);
                Page::fill(&mut self.pages[first + skip_hi..first + n], words);
                if self.is_reserved_chunk(cur) {
                    // Counted reserved already.
                    self.clear_reserved_chunk(cur);
                } else {
                    self.deferred -= n as u64;
                    self.reserved += n as u64;
                }
                self.set_ready(cur);
            }
            c = self.chunks_in(chi, end).next();
        }
    }

    /// Sets NOINIT on the (initialised, RESERVED) RAM frames of `[start, end)`.
    fn mark_noinit(&mut self, start: u64, end: u64) {
        self.for_each_ram_piece(start, end, |fa, first, n| {
            for p in &mut fa.pages[first..first + n] {
                p.set(PageFlags::NOINIT);
            }
        });
    }

    /// Frees `[start, end)`, free RAM of `sec` whose (initialised) descriptors say
    /// RESERVED so far.
    fn free_reserved_piece(&mut self, sec: &Section, start: u64, end: u64) {
        let first = (u64::from(sec.first) + start - sec.base) as usize;
        let n = (end - start) as usize;
        for p in &mut self.pages[first..first + n] {
            p.clear(PageFlags::RESERVED);
        }
        self.reserved -= n as u64;
        self.free_range(first, n as u64);
    }

    /// Frees the frames of `[start, end)` (free RAM, RESERVED so far) that lie in
    /// initialised chunks; frames in deferred chunks stay deferred.
    pub(crate) fn free_in_ready_chunks(&mut self, start: u64, end: u64) {
        // The common case between preserved blocks: one gap inside one initialised chunk.
        if self.nsections == 1 {
            let sec = self.sections[0];
            if sec.base <= start
                && end <= sec.end
                && start < end
                && start >> CHUNK_ORDER == (end - 1) >> CHUNK_ORDER
                && self.chunk_is_ready(&sec, start)
            {
                self.free_reserved_piece(&sec, start, end);
                return;
            }
        }
        for si in 0..self.nsections {
            let sec = self.sections[si];
            let mut f = start.max(sec.base);
            let hi = end.min(sec.end);
            while f < hi {
                let chunk_end = (((f >> CHUNK_ORDER) + 1) << CHUNK_ORDER).min(hi);
                if self.chunk_is_ready(&sec, f) {
                    self.free_reserved_piece(&sec, f, chunk_end);
                    f = chunk_end;
                } else {
                    // Skip whole words of deferred chunks at once.
                    let c = Self::chunk_of(&sec, f);
                    let w = self.chunk_ready[(c / 64) as usize] >> (c % 64);
                    let skip = if w == 0 { 64 - c % 64 } else { 1 };
                    f = (((f >> CHUNK_ORDER) + skip) << CHUNK_ORDER).min(hi);
                }
            }
        }
    }

    /// Whether `pfn` is RAM covered by a section (initialised or deferred).
    pub(crate) fn is_ram(&self, pfn: Pfn) -> bool {
        let secs = &self.sections[..self.nsections];
        let s = secs.partition_point(|s| s.end <= pfn.0);
        secs.get(s).is_some_and(|s| s.base <= pfn.0)
    }
}
