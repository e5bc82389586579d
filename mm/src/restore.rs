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
    /// Writes `v` to the `private` word of `pfn` if the frame is RESERVED (kho's stash on
    /// each preserved block's first frame), with one descriptor lookup: `Ok(false)`, nothing
    /// written, if it is not RESERVED. The same as `page_flags` then `set_page_private`.
    pub fn stash_reserved(&mut self, pfn: Pfn, v: u64) -> Result<bool, MmError> {
        let idx = self.index(pfn)?;
        if !self.pages[idx].has(PageFlags::RESERVED) {
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
    pub fn claim_reserved(&mut self, pfn: Pfn, order: u32, kind: BlockKind) -> Result<(), MmError> {
        let idx = self.block_index(pfn, order)?;
        let n = 1usize << order;
        // Every frame is checked before any changes; the same pass counts the `private`
        // words (kho's stash) the writes below clear.
        let mut stashed = 0u64;
        for (i, p) in self.pages[idx..idx + n].iter().enumerate() {
            if !p.has(PageFlags::RESERVED) {
                return Err(MmError::NotReserved {
                    pfn: pfn.add(i as u64),
                });
            }
            stashed += u64::from(p.private != 0);
        }
        self.private_set -= stashed;
        self.reserved -= n as u64;
        self.allocated += n as u64;
        // One write of every frame in the tail state of `kind` (no branch per frame: a
        // folio's tails, a SPLIT block's pages, or clean tails), then the first frame.
        let (flags, count, head) = match kind {
            BlockKind::Folio if order > 0 => (PageFlags::TAIL.bits(), 0, idx as u32),
            BlockKind::Split => (PageFlags::SPLIT.bits(), 1, NONE),
            _ => (0, 0, NONE),
        };
        for p in &mut self.pages[idx..idx + n] {
            p.flags = flags;
            p.order = 0;
            p.head = head;
            p.private = 0;
            p.set_count(count);
        }
        let first = &mut self.pages[idx];
        match kind {
            BlockKind::Folio => {
                first.flags = if order > 0 { PageFlags::HEAD.bits() } else { 0 };
                first.order = order as u8;
                first.head = NONE;
                first.set_count(1);
            }
            BlockKind::Contig => {
                first.order = order as u8;
                first.set_count(1);
            }
            BlockKind::Split => {}
        }
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
    /// aligned blocks no larger than `max_order`. Every frame must be RAM and RESERVED.
    pub fn release_reserved(&mut self, pfn: Pfn, nr: u64) -> Result<(), MmError> {
        let end = pfn.0.checked_add(nr).ok_or(MmError::NotRam { pfn })?;
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
