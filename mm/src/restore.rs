//! Restore support: turning RESERVED frames (kho's preserved blocks) into allocated
//! blocks with the right refcount pattern, or giving them to the buddy allocator.
//!
//! Owns the RESERVED -> allocated and RESERVED -> free transitions. Every frame is checked
//! before any descriptor changes, so a refused call leaves no trace.

use crate::addr::Pfn;
use crate::error::MmError;
use crate::frame::{BlockKind, FrameAllocator};
use crate::page::{PageFlags, NONE};

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
