//! Linux page semantics: allocation, compound pages, `split_page`, refcounts and the
//! free-path checks.
//!
//! Owns every refcount and compound marker transition of allocated frames. Anything that
//! would corrupt the free lists is refused with an `MmError` before a descriptor changes;
//! a block that fails the free-path checks is leaked (marked BAD, counted), never freed.

use crate::addr::Pfn;
use crate::error::{BadPage, BadPageReason, MmError};
use crate::frame::{BlockKind, FrameAllocator};
use crate::page::{PageFlags, NONE};

/// How a block being freed was laid out.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A compound page: the first frame has HEAD, the others TAIL + head link.
    Folio,
    /// A non-compound block: only the first frame may hold state (SPLIT on an order-0 page).
    Plain,
}

impl FrameAllocator<'_> {
    /// Allocates a non-compound block of `2^order` frames, like Linux's `alloc_pages`
    /// without `__GFP_COMP`: the first frame has refcount 1 and records `order`; the
    /// others have refcount 0 and no state.
    #[inline]
    pub fn alloc_pages(&mut self, order: u32) -> Result<Pfn, MmError> {
        if order > self.max_order {
            return Err(MmError::OrderTooLarge {
                order,
                max: self.max_order,
            });
        }
        let idx = self.take_block(order)?;
        let p = &mut self.pages[idx];
        p.order = order as u8;
        p.set_count(1);
        self.allocated += 1u64 << order;
        Ok(self.pfn_of(idx))
    }

    /// Allocates a compound page (folio) of `2^order` frames: head with HEAD, order and
    /// refcount 1; each tail with TAIL, a link to the head and refcount 0. An order-0
    /// folio is a plain page (Linux: a small folio has no compound markers).
    pub fn alloc_folio(&mut self, order: u32) -> Result<Pfn, MmError> {
        let pfn = self.alloc_pages(order)?;
        if order > 0 {
            // alloc_pages succeeded, so the index exists.
            let idx = self.index(pfn)?;
            self.make_folio(idx, order);
        }
        Ok(pfn)
    }

    /// Writes compound markers on the clean block at `idx` (head refcount untouched).
    pub(crate) fn make_folio(&mut self, idx: usize, order: u32) {
        let n = 1usize << order;
        self.pages[idx].set(PageFlags::HEAD);
        self.pages[idx].order = order as u8;
        for t in &mut self.pages[idx + 1..idx + n] {
            t.flags = PageFlags::TAIL.bits();
            t.head = idx as u32;
        }
    }

    /// Checks that descriptor `idx` is a page someone holds as a whole: not a folio tail,
    /// not free, reserved, leaked or at refcount 0.
    fn check_held(&self, idx: usize, pfn: Pfn) -> Result<(), MmError> {
        let p = &self.pages[idx];
        if p.has(PageFlags::TAIL) {
            Err(MmError::NotHead { pfn })
        } else if p.has(PageFlags::FREE) {
            Err(MmError::AlreadyFree { pfn })
        } else if p.has(PageFlags::RESERVED) {
            Err(MmError::Reserved { pfn })
        } else if p.has(PageFlags::BAD) || p.count() == 0 {
            Err(MmError::NotAllocated { pfn })
        } else {
            Ok(())
        }
    }

    /// Frees a block, like Linux's `__free_pages(page, order)`: drops the first frame's
    /// reference and frees the whole block when it reaches 0. If other references remain
    /// on a non-compound block, the frames after the first are freed now (in aligned
    /// pieces) and the first stays allocated as an order-0 page until its last `put_page`
    /// — Linux does the same. `order` must be the block's order (recorded by mm; a
    /// mismatch is refused before anything changes). Blocks above `max_order` (restored
    /// ones) are freed in `max_order` chunks after the checks.
    #[inline]
    pub fn free_pages(&mut self, pfn: Pfn, order: u32) -> Result<(), MmError> {
        if order == 0 {
            if let Ok(idx) = self.index(pfn) {
                if self.try_free_clean_page(idx) {
                    return Ok(());
                }
            }
        }
        self.free_pages_slow(pfn, order)
    }

    /// Fast path for the common case: an order-0 page whose last reference goes and whose
    /// state passes every free-path check. Returns false (changing nothing) otherwise.
    #[inline]
    fn try_free_clean_page(&mut self, idx: usize) -> bool {
        let p = &mut self.pages[idx];
        let clean = p.flags & !PageFlags::SPLIT.bits() == 0
            && p.order == 0
            && p.head == NONE
            && p.private == 0
            && p.count() == 1;
        if !clean {
            return false;
        }
        p.flags = 0;
        p.set_count(0);
        self.allocated -= 1;
        self.free_block(idx, 0);
        true
    }

    fn free_pages_slow(&mut self, pfn: Pfn, order: u32) -> Result<(), MmError> {
        let idx = self.block_index(pfn, order)?;
        self.check_held(idx, pfn)?;
        let p = &self.pages[idx];
        let recorded = u32::from(p.order);
        if recorded != order {
            return Err(MmError::OrderMismatch {
                pfn,
                expected: recorded,
                got: order,
            });
        }
        let shape = if p.has(PageFlags::HEAD) {
            Shape::Folio
        } else {
            Shape::Plain
        };
        let left = p.count() - 1;
        self.pages[idx].set_count(left);
        if left == 0 {
            return self.free_checked(idx, order, shape);
        }
        if shape == Shape::Plain && order > 0 {
            // Someone else holds the first frame: free the rest now.
            self.pages[idx].order = 0;
            let mut first_err = Ok(());
            for k in (0..order).rev() {
                let piece = idx + (1usize << k);
                let r = self.free_checked(piece, k, Shape::Plain);
                if first_err.is_ok() {
                    first_err = r;
                }
            }
            return first_err;
        }
        Ok(())
    }

    /// Splits a non-compound block into `2^order` order-0 pages, like Linux's
    /// `split_page`: every frame gets the SPLIT flag and order 0; the tails get refcount 1
    /// and the first frame keeps its count. `order` must be the allocation order.
    pub fn split_page(&mut self, pfn: Pfn, order: u32) -> Result<(), MmError> {
        let idx = self.block_index(pfn, order)?;
        self.check_held(idx, pfn)?;
        let p = &self.pages[idx];
        if p.has(PageFlags::HEAD) || p.has(PageFlags::TAIL) {
            return Err(MmError::Compound { pfn });
        }
        let recorded = u32::from(p.order);
        if recorded != order {
            return Err(MmError::OrderMismatch {
                pfn,
                expected: recorded,
                got: order,
            });
        }
        let n = 1usize << order;
        self.pages[idx].set(PageFlags::SPLIT);
        self.pages[idx].order = 0;
        for t in &mut self.pages[idx + 1..idx + n] {
            t.flags |= PageFlags::SPLIT.bits();
            t.set_count(1);
        }
        Ok(())
    }

    /// Descriptor index of the folio `pfn` belongs to, checked to be held.
    fn held_folio(&self, pfn: Pfn) -> Result<usize, MmError> {
        let idx = self.index(pfn)?;
        let h = self.folio_index(idx);
        let hpfn = if h == idx { pfn } else { self.pfn_of(h) };
        self.check_held(h, hpfn)?;
        Ok(h)
    }

    fn inc(&mut self, idx: usize) -> Result<(), MmError> {
        let c = self.pages[idx].count();
        if c == u32::MAX {
            return Err(MmError::RefcountOverflow {
                pfn: self.pfn_of(idx),
            });
        }
        self.pages[idx].set_count(c + 1);
        Ok(())
    }

    /// Drops one reference of the held page/folio at `h`; frees it at zero.
    fn dec_and_free(&mut self, h: usize) -> Result<(), MmError> {
        let left = self.pages[h].count() - 1;
        self.pages[h].set_count(left);
        if left > 0 {
            return Ok(());
        }
        let p = &self.pages[h];
        let shape = if p.has(PageFlags::HEAD) {
            Shape::Folio
        } else {
            Shape::Plain
        };
        let order = u32::from(p.order);
        self.free_checked(h, order, shape)
    }

    /// Takes a reference, like Linux's `get_page`: on a folio tail the head's count goes
    /// up. A frame at refcount 0 (a non-compound tail, a free frame) is refused.
    pub fn get_page(&mut self, pfn: Pfn) -> Result<(), MmError> {
        let h = self.held_folio(pfn)?;
        self.inc(h)
    }

    /// Drops a reference, like Linux's `put_page`: on a folio page it acts on the folio;
    /// at zero the page or folio is freed (after the free-path checks).
    ///
    /// On the first frame of a non-compound block of order > 0 (an `alloc_pages` block
    /// not yet split), Linux treats the page as an order-0 folio and would free only that
    /// frame, leaking the rest. mm records the allocation order, so at zero it frees the
    /// whole block instead (same result as `free_pages(pfn, order)`).
    #[inline]
    pub fn put_page(&mut self, pfn: Pfn) -> Result<(), MmError> {
        if let Ok(idx) = self.index(pfn) {
            if self.try_free_clean_page(idx) {
                return Ok(());
            }
        }
        let h = self.held_folio(pfn)?;
        self.dec_and_free(h)
    }

    /// Takes a reference on a folio (or an order-0 page). A tail, or the first frame of a
    /// non-compound high-order block, is refused.
    pub fn folio_get(&mut self, head: Pfn) -> Result<(), MmError> {
        let idx = self.folio_head_index(head)?;
        self.inc(idx)
    }

    /// Drops a reference on a folio (or an order-0 page); frees it at zero.
    pub fn folio_put(&mut self, head: Pfn) -> Result<(), MmError> {
        let idx = self.folio_head_index(head)?;
        self.dec_and_free(idx)
    }

    fn folio_head_index(&self, head: Pfn) -> Result<usize, MmError> {
        let idx = self.index(head)?;
        self.check_held(idx, head)?;
        let p = &self.pages[idx];
        if !p.has(PageFlags::HEAD) && p.order != 0 {
            return Err(MmError::NotFolio { pfn: head });
        }
        Ok(idx)
    }

    /// What mm knows about the allocated block `[pfn, pfn + 2^order)`.
    pub fn block_kind(&self, pfn: Pfn, order: u32) -> Result<BlockKind, MmError> {
        let idx = self.block_index(pfn, order)?;
        self.check_held(idx, pfn)?;
        let p = &self.pages[idx];
        if p.has(PageFlags::SPLIT) {
            let n = 1usize << order;
            for (i, q) in self.pages[idx..idx + n].iter().enumerate() {
                if !q.has(PageFlags::SPLIT) || q.count() == 0 || q.has(PageFlags::BAD) {
                    return Err(MmError::NotAllocated {
                        pfn: pfn.add(i as u64),
                    });
                }
            }
            return Ok(BlockKind::Split);
        }
        let recorded = u32::from(p.order);
        if recorded != order {
            return Err(MmError::OrderMismatch {
                pfn,
                expected: recorded,
                got: order,
            });
        }
        Ok(if p.has(PageFlags::HEAD) {
            BlockKind::Folio
        } else {
            BlockKind::Contig
        })
    }

    /// The first failed free-path check of the block at `idx`, if any.
    fn check_block(&self, idx: usize, order: u32, shape: Shape) -> Option<(usize, BadPageReason)> {
        let n = 1usize << order;
        let head = &self.pages[idx];
        let allowed = match shape {
            Shape::Folio => PageFlags::HEAD,
            Shape::Plain if order == 0 => PageFlags::SPLIT,
            Shape::Plain => PageFlags::empty(),
        };
        let bad = if head.count() != 0 {
            Some(BadPageReason::TailRefcount)
        } else if !head.flags().difference(allowed).is_empty() {
            Some(BadPageReason::LeftoverFlags)
        } else if head.head != NONE {
            Some(BadPageReason::CompoundHead)
        } else if head.private != 0 {
            Some(BadPageReason::PrivateSet)
        } else if shape == Shape::Folio && u32::from(head.order) != order {
            Some(BadPageReason::OrderMismatch)
        } else {
            None
        };
        if let Some(r) = bad {
            return Some((idx, r));
        }
        if shape == Shape::Plain && !self.tails_may_be_dirty() {
            // Only set_page_private and set_page_refcount can move a non-compound tail
            // off its clean state, and neither has left a trace anywhere.
            return None;
        }
        let expected_link = if shape == Shape::Folio {
            idx as u32
        } else {
            NONE
        };
        let tail_flags = if shape == Shape::Folio {
            PageFlags::TAIL
        } else {
            PageFlags::empty()
        };
        for (i, t) in self.pages[idx + 1..idx + n].iter().enumerate() {
            let reason = if t.count() != 0 {
                Some(BadPageReason::TailRefcount)
            } else if shape == Shape::Folio && !t.has(PageFlags::TAIL) {
                Some(BadPageReason::MissingTail)
            } else if t.head != expected_link {
                Some(BadPageReason::CompoundHead)
            } else if !t.flags().difference(tail_flags).is_empty() || t.order != 0 {
                Some(BadPageReason::LeftoverFlags)
            } else if t.private != 0 {
                Some(BadPageReason::PrivateSet)
            } else {
                None
            };
            if let Some(r) = reason {
                return Some((idx + 1 + i, r));
            }
        }
        None
    }

    /// Frees the allocated block at `idx` whose references are gone: runs the free-path
    /// checks, then returns it to the buddy lists (in `max_order` chunks), or leaks it.
    pub(crate) fn free_checked(
        &mut self,
        idx: usize,
        order: u32,
        shape: Shape,
    ) -> Result<(), MmError> {
        let n = 1usize << order;
        if self.checks {
            if let Some((at, reason)) = self.check_block(idx, order, shape) {
                let p = &self.pages[at];
                let report = BadPage {
                    pfn: self.pfn_of(at),
                    flags: p.flags(),
                    refcount: p.count(),
                    reason,
                };
                log::error!(
                    "mm: {report}; leaking the order-{order} block at pfn {}",
                    self.pfn_of(idx)
                );
                for i in idx..idx + n {
                    // Leaked frames are never freed: their private words no longer count.
                    if self.pages[i].private != 0 {
                        self.private_set -= 1;
                    }
                    self.pages[i].set(PageFlags::BAD);
                }
                self.allocated -= n as u64;
                self.bad += n as u64;
                self.bad_events += 1;
                return Err(MmError::BadPage(report));
            }
        }
        // Clean every frame the block touched (tails only carry state in a folio, or when
        // checks are off).
        if !self.checks {
            self.clean_frames(idx, n);
        } else {
            let h = &mut self.pages[idx];
            h.flags = 0;
            h.order = 0;
            h.head = NONE;
            if shape == Shape::Folio {
                for t in &mut self.pages[idx + 1..idx + n] {
                    t.flags = 0;
                    t.head = NONE;
                }
            }
        }
        self.allocated -= n as u64;
        if order <= self.max_order {
            self.free_block(idx, order);
        } else {
            let chunk = 1usize << self.max_order;
            for c in (idx..idx + n).step_by(chunk) {
                self.free_block(c, self.max_order);
            }
        }
        Ok(())
    }
}
