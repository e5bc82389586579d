//! `Arena`, the host stand-in for RAM: a zeroed, page-aligned heap buffer that answers for a
//! physical range.
//!
//! Only in host tests, benchmarks and clients' tests (feature `test-helpers`); never in an
//! image. Owns its buffer; hands out pointers, never references.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use mm::{PhysAddr, PhysRange, PAGE_SIZE};

use crate::phys::PhysMem;

/// Host stand-in for RAM: a zeroed, page-aligned buffer that answers for `[base, base + size)`.
///
/// Used by the tests and the benchmark (feature `test-helpers` outside kho).
pub struct Arena {
    base: u64,
    size: usize,
    buf: *mut u8,
}

// SAFETY: Arena owns its buffer exclusively; moving it to another thread moves that ownership.
unsafe impl Send for Arena {}

impl Arena {
    /// A zeroed arena of `size` bytes (rounded up to pages) answering at physical `base`.
    pub fn new(base: u64, size: u64) -> Self {
        let size = (size.div_ceil(PAGE_SIZE) * PAGE_SIZE).max(PAGE_SIZE) as usize;
        let layout = Self::layout(size);
        // SAFETY: layout has non-zero size (at least one page).
        let buf = unsafe { alloc_zeroed(layout) };
        assert!(!buf.is_null(), "arena allocation of {size} bytes failed");
        Arena { base, size, buf }
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, PAGE_SIZE as usize).expect("arena layout")
    }

    /// The physical range this arena stands for.
    pub fn region(&self) -> PhysRange {
        PhysRange::new(PhysAddr(self.base), self.size as u64)
    }

    /// Flips bit `bit` (0 = least significant) of the byte at `phys`. For corruption tests.
    pub fn flip_bit(&self, phys: u64, bit: u32) {
        if let Some(p) = self.ptr(phys, 1) {
            // SAFETY: ptr returned one valid byte of our own buffer; no reference aliases it.
            unsafe { *p ^= 1 << (bit % 8) };
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: buf was allocated in `new` with exactly this layout and is freed once.
        unsafe { dealloc(self.buf, Self::layout(self.size)) };
    }
}

// SAFETY: pointers stay inside the buffer (bounds checked), the buffer lives as long as the
// arena, is page aligned (so offsets keep phys alignment modulo 4096 when base is page aligned),
// and the arena hands out no references to it.
unsafe impl PhysMem for Arena {
    fn ptr(&self, phys: u64, len: usize) -> Option<*mut u8> {
        let off = phys.checked_sub(self.base)?;
        let end = off.checked_add(len as u64)?;
        if end > self.size as u64 {
            return None;
        }
        // SAFETY: off + len <= size, so the offset stays inside the allocation.
        Some(unsafe { self.buf.add(off as usize) })
    }
}
