//! Restore support: turning RESERVED frames (kho's preserved blocks) into allocated
//! blocks with the right refcount pattern, or giving them to the buddy allocator.
//!
//! Owns the RESERVED -> allocated and RESERVED -> free transitions. Every frame is checked
//! before any descriptor changes, so a refused call leaves no trace. A batch claim of many
//! blocks (`claim_reserved_batch`) makes the same checks per block as `claim_reserved`.

use crate::addr::Pfn;
use crate::error::MmError;
use crate::frame::{BlockKind, FrameAllocator, CHUNK_ORDER};
use crate::page::{Page, PageFlags, NONE};
use crate::reserve::PRESERVED_HEAD;

/// The place of `kind` in a table of claimed words by kind.
#[inline(always)]
const fn kind_slot(kind: BlockKind) -> usize {
    match kind {
        BlockKind::Folio => 0,
        BlockKind::Contig => 1,
        BlockKind::Split => 2,
    }
}

/// Frames `[lo, lo + len)`: RAM of section `section` in chunks whose descriptors are
/// written, so `index` of any of them is `first + (pfn - lo)` with nothing left to check.
/// Empty (`len` 0) until a first lookup.
#[derive(Copy, Clone, Debug, Default)]
struct Window {
    lo: u64,
    len: u64,
    first: usize,
    section: u8,
}

impl Window {
    /// The window's descriptor indices, or an empty range when they do not all lie inside
    /// an array of `pages` descriptors (no block is then claimed through the window).
    fn room(&self, pages: usize) -> core::ops::Range<usize> {
        let end = self.first.saturating_add(self.len as usize);
        if end <= pages {
            self.first..end
        } else {
            0..0
        }
    }
}

// A batch claim indexes a window's descriptors by the frame's offset cast to `usize`.
const _: () = assert!(usize::BITS == u64::BITS, "a frame offset must fit a usize");

impl FrameAllocator<'_> {
    /// Writes `v` to the `private` word of `pfn` if the frame is RESERVED (an owner's stash
    /// on a reserved block's first frame), with one descriptor lookup: `Ok(false)`, nothing
    /// written, if it is not RESERVED. The same as `page_flags` then `set_page_private`.
    /// A preserved block's tail is refused (`PreservedTail`).
    pub fn stash_reserved(&mut self, pfn: Pfn, v: u64) -> Result<bool, MmError> {
        let idx = self.index(pfn)?;
        let p = &self.pages[idx];
        if p.has(PageFlags::PRESERVED_TAIL) {
            return Err(MmError::PreservedTail { pfn });
        }
        if !p.has(PageFlags::RESERVED) {
            return Ok(false);
        }
        self.write_private(idx, v);
        Ok(true)
    }

    /// Turns the RESERVED block `[pfn, pfn + 2^order)` into an allocated one with the
    /// refcount pattern of `kind`: Folio — compound head (refcount 1) and tails (0);
    /// Contig — first frame refcount 1 with `order` recorded, the rest 0; Split — every
    /// frame refcount 1 with SPLIT. `order <= MAX_BLOCK_ORDER` (above `max_order` is fine;
    /// the free path chunks it). RESERVED, NOINIT and `private` are cleared on every frame:
    /// read `private` before claiming.
    ///
    /// A block `new_deferred` reserved as one preserved block is checked on its first frame
    /// alone (PRESERVED with this order: `OrderMismatch` otherwise; a second claim finds it
    /// no longer RESERVED: `NotReserved`); a tail of one is refused (`PreservedTail`).
    /// Any other RESERVED memory is checked frame by frame, and may hold no part of a
    /// preserved block. Nothing changes on a refusal.
    #[inline]
    pub fn claim_reserved(&mut self, pfn: Pfn, order: u32, kind: BlockKind) -> Result<(), MmError> {
        // A preserved block's first frame vouches for the block's shape (aligned, in one
        // section, every chunk initialised: `new_deferred` checked and wrote all of it).
        // Inline so that a caller's loop over many blocks pays no call for the common case.
        let idx = self.index(pfn)?;
        if self.claim_preserved(idx, pfn, order, kind)?.is_some() {
            return Ok(());
        }
        self.claim_reserved_frames(pfn, order, kind)
    }

    /// [`Self::claim_reserved`] of every `(pfn, order, kind)` of `blocks` in turn: the
    /// same checks per block, the same errors, the same descriptors and counters after.
    /// Stops at the first refusal: `Err((k, e))` with the first `k` blocks claimed, block
    /// `k` refused with `e` and unchanged, none after it touched. `Ok` holds the frames
    /// claimed.
    ///
    /// For a run of blocks (kho's sorted list) it costs less per block: the section and
    /// chunk of a lookup are kept for the next blocks' frames (their descriptors as one
    /// slice: the offset in it is the only bound test), an order-0 block's first frame is
    /// tested with one compare (its flags, both orders, section and refcount) and written
    /// in the loop, a larger one by `write_claimed` out of line, and the counters are added
    /// once. Anything else takes `claim_reserved`.
    #[inline]
    pub fn claim_reserved_batch<I>(&mut self, blocks: I) -> Result<u64, (usize, MmError)>
    where
        I: IntoIterator<Item = (Pfn, u32, BlockKind)>,
    {
        let mut blocks = blocks.into_iter();
        let mut w = Window::default();
        // Order-0 blocks the loop claimed, frames of the larger ones claimed here: the
        // counters owe them until the end, with the stashes cleared (no underflow
        // meanwhile: `reserved` and `private_set` still count these frames while
        // `claim_reserved` takes its own).
        let (mut small, mut large, mut stashed) = (0u64, 0u64, 0u64);
        // Frames `claim_reserved` claimed and counted; blocks claimed outside the loop.
        let (mut counted, mut others) = (0u64, 0usize);
        let mut res = Ok(());
        loop {
            // Order-0 preserved blocks in the window, with the window's descriptors in hand
            // (so an offset in the window is the one bound test) and the claimed first
            // frame's words (`write_claimed` of order 0) made once.
            let room = w.room(self.pages.len());
            let win: &mut [Page] = &mut self.pages[room];
            let contig = Page::words(0, 0, w.section, 1, NONE, 0);
            let split = Page::words(PageFlags::SPLIT.bits(), 0, w.section, 1, NONE, 0);
            // The first word by kind, as `kind_slot` numbers them (an order-0 folio is a
            // plain page); the other three are the same for every kind.
            let first = [contig[0], contig[0], split[0]];
            let [_, w1, w2, w3] = contig;
            debug_assert_eq!(contig[1..], split[1..]);
            // The first word of an unclaimed order-0 preserved head in this window, as
            // `reserve` writes it (refcount 0): one compare tests flags, both orders (the
            // block's must be 0 too), section and refcount. Anything else takes the path
            // below, which makes `claim_reserved`'s checks.
            let head0 = Page::words(PRESERVED_HEAD, 0, w.section, 0, NONE, 0)[0];
            let next = loop {
                let Some((pfn, order, kind)) = blocks.next() else {
                    break None;
                };
                let off = pfn.0.wrapping_sub(w.lo);
                // A frame offset is a `usize` unchanged (asserted below `Window`).
                if let Some(p) = win.get_mut(off as usize) {
                    if (Page::first_word(p) ^ head0) | u64::from(order) == 0 {
                        stashed += u64::from(p.private != 0);
                        small += 1;
                        Page::store(p, [first[kind_slot(kind)], w1, w2, w3]);
                        continue;
                    }
                }
                break Some((pfn, order, kind));
            };
            let Some((pfn, order, kind)) = next else {
                break;
            };
            // A larger block, the first of a window, or not an unclaimed preserved block.
            if pfn.0.wrapping_sub(w.lo) >= w.len {
                w = self.window(pfn);
            }
            let off = pfn.0.wrapping_sub(w.lo);
            let head = (off < w.len).then(|| w.first + off as usize).filter(|&i| {
                self.pages
                    .get(i)
                    .is_some_and(|p| p.flags == PRESERVED_HEAD && u32::from(p.order) == order)
            });
            if let Some(idx) = head {
                stashed += u64::from(self.pages[idx].private != 0);
                large += 1u64 << order;
                self.write_claimed_block(idx, order, kind);
            } else if let Err(e) = self.claim_reserved(pfn, order, kind) {
                res = Err((small as usize + others, e));
                break;
            } else {
                counted += 1u64 << order;
            }
            others += 1;
        }
        let frames = small + large;
        self.private_set -= stashed;
        self.reserved -= frames;
        self.allocated += frames;
        res.map(|()| frames + counted)
    }

    /// [`Self::claim_reserved_batch`] of `(pfn, order, kind)` for every `pfn` of `pfns`:
    /// one order and one kind for the whole batch, the same checks per block, the same
    /// errors, descriptors, counters and result.
    ///
    /// For order 0 (kho's scattered pages) the loop reads nothing but the frame number and
    /// the first frame's words: the claimed first word is picked once per window, and a
    /// frame the one compare misses (a window's first, or not an unclaimed order-0
    /// preserved head) is claimed by `claim_reserved_batch` alone. Larger orders take
    /// `claim_reserved_batch`.
    #[inline]
    pub fn claim_reserved_batch_of<I>(
        &mut self,
        pfns: I,
        order: u32,
        kind: BlockKind,
    ) -> Result<u64, (usize, MmError)>
    where
        I: IntoIterator<Item = Pfn>,
    {
        if order != 0 {
            return self.claim_reserved_batch(pfns.into_iter().map(|p| (p, order, kind)));
        }
        let mut pfns = pfns.into_iter();
        let mut w = Window::default();
        // Blocks the loop claimed (owed to the counters until the end, as in
        // `claim_reserved_batch`), and those `claim_reserved_batch` claimed and counted.
        let (mut small, mut stashed) = (0u64, 0u64);
        let (mut counted, mut others) = (0u64, 0usize);
        let mut res = Ok(());
        loop {
            let room = w.room(self.pages.len());
            let win: &mut [Page] = &mut self.pages[room];
            let flags = match kind {
                BlockKind::Split => PageFlags::SPLIT.bits(),
                BlockKind::Folio | BlockKind::Contig => 0,
            };
            let claimed = Page::words(flags, 0, w.section, 1, NONE, 0);
            let head0 = Page::words(PRESERVED_HEAD, 0, w.section, 0, NONE, 0)[0];
            let next = loop {
                let Some(pfn) = pfns.next() else {
                    break None;
                };
                // A frame offset is a `usize` unchanged (asserted below `Window`).
                if let Some(p) = win.get_mut(pfn.0.wrapping_sub(w.lo) as usize) {
                    if Page::first_word(p) == head0 {
                        stashed += u64::from(p.private != 0);
                        small += 1;
                        Page::store(p, claimed);
                        continue;
                    }
                }
                break Some(pfn);
            };
            let Some(pfn) = next else {
                break;
            };
            match self.claim_reserved_batch([(pfn, 0, kind)]) {
                Ok(n) => counted += n,
                Err((_, e)) => {
                    res = Err((small as usize + others, e));
                    break;
                }
            }
            others += 1;
            w = self.window(pfn);
        }
        self.private_set -= stashed;
        self.reserved -= small;
        self.allocated += small;
        res.map(|()| small + counted)
    }

    /// `write_claimed` out of line: a batch claim's loop keeps its registers for order 0.
    #[inline(never)]
    fn write_claimed_block(&mut self, idx: usize, order: u32, kind: BlockKind) {
        self.write_claimed(idx, order, kind);
    }

    /// The [`Window`] holding `pfn` (a RAM frame in a written chunk; empty otherwise): its
    /// whole section or, while some chunks are deferred, `pfn`'s chunk and the written
    /// chunks right after it in the same word of the ready bitmap.
    #[inline(never)]
    fn window(&self, pfn: Pfn) -> Window {
        let Ok(idx) = self.index(pfn) else {
            return Window::default();
        };
        let section = self.pages[idx].section;
        let sec = self.sections[usize::from(section)];
        let (mut lo, mut hi) = (sec.base, sec.end);
        if self.uninit_chunks != 0 {
            let c = Self::chunk_of(&sec, pfn.0);
            // Chunk `c` is written (`index` checked): count it and the written ones after.
            let ready = self.chunk_ready[(c / 64) as usize] >> (c % 64);
            let chunks = u64::from((!ready).trailing_zeros());
            let start = pfn.0 & !((1u64 << CHUNK_ORDER) - 1);
            lo = lo.max(start);
            hi = hi.min(start + (chunks << CHUNK_ORDER));
        }
        Window {
            lo,
            len: hi - lo,
            first: idx - (pfn.0 - lo) as usize,
            section,
        }
    }

    /// [`Self::claim_reserved`] of memory that is not an unclaimed preserved block: every
    /// frame checked before any changes.
    #[inline(never)]
    fn claim_reserved_frames(
        &mut self,
        pfn: Pfn,
        order: u32,
        kind: BlockKind,
    ) -> Result<(), MmError> {
        let idx = self.block_index(pfn, order)?;
        let n = 1usize << order;
        // Every frame is checked before any changes; the same pass counts the `private`
        // words (an owner's stash) the writes below clear.
        let mut stashed = 0u64;
        for (i, p) in self.pages[idx..idx + n].iter().enumerate() {
            let pfn = pfn.add(i as u64);
            if !p.has(PageFlags::RESERVED) {
                return Err(MmError::NotReserved { pfn });
            }
            if p.has(PageFlags::PRESERVED | PageFlags::PRESERVED_TAIL) {
                return Err(MmError::PreservedTail { pfn });
            }
            stashed += u64::from(p.private != 0);
        }
        self.private_set -= stashed;
        self.reserved -= n as u64;
        self.allocated += n as u64;
        self.write_claimed(idx, order, kind);
        Ok(())
    }

    /// Resets descriptors `[idx, idx + n)` to the clean allocated-tail state.
    pub(crate) fn clean_frames(&mut self, idx: usize, n: usize) {
        for i in idx..idx + n {
            self.write_private(i, 0);
            let p = &mut self.pages[i];
            p.flags = 0;
            p.order = 0;
            p.head = NONE;
            p.set_count(0);
        }
    }

    /// Gives the RESERVED frames `[pfn, pfn + nr)` to the buddy allocator, cut into
    /// aligned blocks no larger than `max_order`. Every frame must be RAM and RESERVED, and
    /// the range must hold preserved blocks whole (`PreservedTail` at its first frame or
    /// at `pfn + nr` otherwise).
    pub fn release_reserved(&mut self, pfn: Pfn, nr: u64) -> Result<(), MmError> {
        let end = pfn.0.checked_add(nr).ok_or(MmError::NotRam { pfn })?;
        // A preserved block cut at either edge: its tail starts or follows the range.
        for edge in [pfn, Pfn(end)] {
            let tail = self
                .index(edge)
                .is_ok_and(|i| self.pages[i].has(PageFlags::PRESERVED_TAIL));
            if tail && nr > 0 {
                return Err(MmError::PreservedTail { pfn: edge });
            }
        }
        // Check everything first.
        let mut f = pfn.0;
        while f < end {
            let idx = self.index(Pfn(f))?;
            let sec = self.sections[self.pages[idx].section as usize];
            let hi = end.min(sec.end);
            let span = (hi - f) as usize;
            if let Some(i) = self.pages[idx..idx + span]
                .iter()
                .position(|p| !p.has(PageFlags::RESERVED))
            {
                return Err(MmError::NotReserved {
                    pfn: Pfn(f + i as u64),
                });
            }
            f = hi;
        }
        self.for_each_ram_piece(pfn.0, end, |fa, first, n| {
            fa.clean_frames(first, n);
            fa.reserved -= n as u64;
            fa.free_range(first, n as u64);
        });
        Ok(())
    }
}
