//! Buddy free lists over the frame descriptors.
//!
//! Owns the per-order free lists (doubly linked through the descriptors' `next`/`prev`
//! indices) and the `FREE` flag and `order` of every block it links. Blocks never cross a
//! RAM section, and no order above the instance's `max_order` is ever indexed. Callers
//! hand in clean frames (no flags, refcount 0, no head link); this module never checks
//! page state beyond `FREE`.

use crate::error::MmError;
use crate::frame::FrameAllocator;
use crate::page::{PageFlags, NONE};

impl FrameAllocator<'_> {
    /// Links the block at `idx` at the front of order `order`'s list.
    #[inline(always)]
    fn push(&mut self, idx: usize, order: u32) {
        let o = order as usize;
        let old = self.free_head[o];
        {
            let p = &mut self.pages[idx];
            p.flags = PageFlags::FREE.bits();
            p.order = order as u8;
            p.prev = NONE;
            p.next = old;
        }
        if old != NONE {
            self.pages[old as usize].prev = idx as u32;
        }
        self.free_head[o] = idx as u32;
        self.free_blocks[o] += 1;
        self.nonempty |= 1 << order;
    }

    /// Unlinks the block at `idx` from order `order`'s list and clears its `FREE` state.
    #[inline(always)]
    fn unlink(&mut self, idx: usize, order: u32) {
        let o = order as usize;
        let (prev, next) = {
            let p = &mut self.pages[idx];
            let links = (p.prev, p.next);
            p.flags = 0;
            p.order = 0;
            p.prev = NONE;
            p.next = NONE;
            links
        };
        if prev == NONE {
            self.free_head[o] = next;
        } else {
            self.pages[prev as usize].next = next;
        }
        if next != NONE {
            self.pages[next as usize].prev = prev;
        }
        self.free_blocks[o] -= 1;
        if self.free_head[o] == NONE {
            self.nonempty &= !(1 << order);
        }
    }

    /// Unlinks and returns the first block of order `order`'s list (which is not empty).
    #[inline(always)]
    fn pop_front(&mut self, order: u32) -> usize {
        let o = order as usize;
        let idx = self.free_head[o] as usize;
        let p = &mut self.pages[idx];
        let next = p.next;
        p.flags = 0;
        p.order = 0;
        p.next = NONE;
        self.free_head[o] = next;
        if next == NONE {
            self.nonempty &= !(1 << order);
        } else {
            self.pages[next as usize].prev = NONE;
        }
        self.free_blocks[o] -= 1;
        idx
    }

    /// Takes a block of exactly `order` off the lists, splitting a larger one if needed.
    /// The returned first frame is clean (no flags, order 0). `order <= max_order`.
    #[inline]
    pub(crate) fn take_block(&mut self, order: u32) -> Result<usize, MmError> {
        let mut avail = self.nonempty & !((1u32 << order) - 1);
        if avail == 0 {
            avail = self.refill(order)?;
        }
        let mut k = avail.trailing_zeros();
        let idx = self.pop_front(k);
        // Give back the upper halves; they are naturally aligned buddies of the lower one.
        while k > order {
            k -= 1;
            self.push(idx + (1usize << k), k);
        }
        self.free -= 1u64 << order;
        Ok(idx)
    }

    /// The lists hold nothing of `order` or above: initialise deferred chunks until they
    /// do. Returns the new non-empty mask of orders `>= order`.
    #[cold]
    fn refill(&mut self, order: u32) -> Result<u32, MmError> {
        loop {
            if !self.init_next_deferred() {
                return Err(MmError::OutOfMemory { order });
            }
            let avail = self.nonempty & !((1u32 << order) - 1);
            if avail != 0 {
                return Ok(avail);
            }
        }
    }

    /// Puts the clean block at `idx` (aligned, `order <= max_order`) on the free lists,
    /// merging with free buddies inside its section.
    #[inline]
    pub(crate) fn free_block(&mut self, mut idx: usize, order: u32) {
        self.free += 1u64 << order;
        let sec = self.sections[self.pages[idx].section as usize];
        let mut pfn = sec.base + (idx as u64 - u64::from(sec.first));
        let mut o = order;
        while o < self.max_order {
            let size = 1u64 << o;
            let buddy_pfn = pfn ^ size;
            if buddy_pfn < sec.base || buddy_pfn >= sec.end {
                break;
            }
            let bidx = (u64::from(sec.first) + buddy_pfn - sec.base) as usize;
            let b = &self.pages[bidx];
            if b.flags != PageFlags::FREE.bits() || u32::from(b.order) != o {
                break;
            }
            self.unlink(bidx, o);
            if buddy_pfn < pfn {
                pfn = buddy_pfn;
                idx = bidx;
            }
            o += 1;
        }
        self.push(idx, o);
    }

    /// Frees `n` clean frames starting at descriptor `idx` (one section), cut into
    /// naturally aligned blocks no larger than `max_order`.
    pub(crate) fn free_range(&mut self, mut idx: usize, mut n: u64) {
        let mut pfn = self.pfn_of(idx).0;
        while n > 0 {
            let align = pfn.trailing_zeros();
            let fit = 63 - n.leading_zeros();
            let o = align.min(fit).min(self.max_order);
            self.free_block(idx, o);
            pfn += 1u64 << o;
            idx += 1usize << o;
            n -= 1u64 << o;
        }
    }
}
