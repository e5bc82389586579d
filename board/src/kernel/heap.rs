//! The kernel heap: `talc` as the global allocator, growing from the frame allocator.
//!
//! Starts empty; on the first allocation (and whenever it runs out) it takes a block of
//! pages from `mm` (at least 64 KiB) and claims it. Rule: never allocate from the heap
//! while holding the frame-allocator lock (the OOM handler takes it).

use core::alloc::Layout;
use talc::{OomHandler, Span, Talc, Talck};

/// Smallest order the heap grows by (2^4 pages = 64 KiB).
const GROW_ORDER: u32 = 4;

/// Grows the heap from `memory::FRAMES`.
pub struct FrameOom {
    pub grown_bytes: usize,
}

impl OomHandler for FrameOom {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        // Room for the request, its alignment and talc's per-chunk metadata.
        let need = layout.size() + layout.align() + 256;
        let pages = need.div_ceil(mm::PAGE_SIZE as usize);
        let order = (usize::BITS - (pages - 1).leading_zeros()).max(GROW_ORDER);
        let pfn = super::memory::alloc_pages(order).ok_or(())?;
        let size = (mm::PAGE_SIZE as usize) << order;
        let base = pfn.phys().0 as usize as *mut u8;
        // SAFETY: the frame allocator gave us these pages exclusively and forever; they
        // are RAM, identity mapped as normal memory.
        unsafe { talc.claim(Span::from_base_size(base, size)) }?;
        talc.oom_handler.grown_bytes += size;
        Ok(())
    }
}

#[global_allocator]
static ALLOCATOR: Talck<spin::Mutex<()>, FrameOom> = Talc::new(FrameOom { grown_bytes: 0 }).lock();

/// Bytes of pages the heap has taken so far.
pub fn grown_bytes() -> usize {
    ALLOCATOR.lock().oom_handler.grown_bytes
}
