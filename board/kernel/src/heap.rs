//! The kernel heap: `talc` as the global allocator, growing from the frame allocator.
//!
//! The first allocation claims a static boot arena in BSS: kho reads the previous image's
//! scratch array and validates its handover before the frame allocator may exist (nothing
//! may be allocated outside scratch until the preserved blocks are reserved). Until the
//! frame allocator is up the heap grows from Memblock (scratch only on a warm boot: a
//! handover of a million blocks needs megabytes to validate); later growth takes blocks of
//! pages from `mm` (at least 64 KiB). Rule: never allocate from the heap
//! while holding the frame-allocator lock; the OOM handler only `try_lock`s it, so doing so
//! fails the allocation (a clear panic) instead of deadlocking. Before a long stretch that
//! holds the frame allocator (the workload), call [`reserve`]. talc's lock is an
//! `arch::EarlyRawMutex`: the boot arena is used before the MMU is on, where a spin lock's
//! exclusives may never succeed.

extern crate alloc;

use arch::EarlyRawMutex;
use core::alloc::Layout;
use core::ptr::addr_of_mut;
use talc::{OomHandler, Span, Talc, Talck};

/// Smallest order the heap grows by (2^4 pages = 64 KiB).
const GROW_ORDER: u32 = 4;
/// Size of the boot arena (BSS, part of the image).
const BOOT_ARENA: usize = 512 * 1024;

#[repr(C, align(4096))]
struct Arena(core::mem::MaybeUninit<[u8; BOOT_ARENA]>);

/// In `.noinit` (link.ld), not BSS: talc needs no zeroed memory, and the entry code's BSS
/// clearing would otherwise write these 512 KiB at every boot, inside the handover blackout.
#[link_section = ".noinit.boot_heap"]
static mut BOOT: Arena = Arena(core::mem::MaybeUninit::uninit());

/// Grows the heap: the boot arena first, then `memory::FRAMES`.
pub struct FrameOom {
    pub grown_bytes: usize,
    boot_claimed: bool,
}

impl OomHandler for FrameOom {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        if !talc.oom_handler.boot_claimed {
            talc.oom_handler.boot_claimed = true;
            // SAFETY: BOOT is only ever touched here, once (the flag), under talc's lock;
            // from now on talc owns those bytes for the image's life.
            let base = unsafe { addr_of_mut!(BOOT.0) } as *mut u8;
            // SAFETY: as above: BOOT_ARENA bytes of BSS, exclusively talc's.
            unsafe { talc.claim(Span::from_base_size(base, BOOT_ARENA)) }?;
            return Ok(());
        }
        // Room for the request, its alignment and talc's per-chunk metadata.
        let need = layout.size() + layout.align() + 256;
        if !super::memory::frames_up() {
            return grow_early(talc, need.max(EARLY_GROW));
        }
        let pages = need.div_ceil(mm::PAGE_SIZE as usize);
        let order = (usize::BITS - (pages - 1).leading_zeros()).max(GROW_ORDER);
        grow(talc, order)
    }
}

/// Smallest early (Memblock) growth: 1 MiB.
const EARLY_GROW: usize = 1 << 20;

fn grow_early(talc: &mut Talc<FrameOom>, bytes: usize) -> Result<(), ()> {
    let size = bytes.next_multiple_of(mm::PAGE_SIZE as usize);
    let base = super::memory::try_alloc_early(size as u64).ok_or(())? as usize as *mut u8;
    // SAFETY: Memblock reserved these pages for us for the image's life (the frame
    // allocator keeps them RESERVED); they are RAM, identity mapped (or the MMU is off).
    unsafe { talc.claim(Span::from_base_size(base, size)) }?;
    talc.oom_handler.grown_bytes += size;
    Ok(())
}

fn grow(talc: &mut Talc<FrameOom>, order: u32) -> Result<(), ()> {
    let pfn = super::memory::try_alloc_pages(order).ok_or(())?;
    let size = (mm::PAGE_SIZE as usize) << order;
    let base = pfn.phys().0 as usize as *mut u8;
    // SAFETY: the frame allocator gave us these pages exclusively and forever; they are
    // RAM, identity mapped as normal memory.
    unsafe { talc.claim(Span::from_base_size(base, size)) }?;
    talc.oom_handler.grown_bytes += size;
    Ok(())
}

#[global_allocator]
static ALLOCATOR: Talck<EarlyRawMutex, FrameOom> = Talc::new(FrameOom {
    grown_bytes: 0,
    boot_claimed: false,
})
.lock();

/// Bytes of pages the heap has taken from the frame allocator so far.
pub fn grown_bytes() -> usize {
    ALLOCATOR.lock().oom_handler.grown_bytes
}

/// Grows the heap by at least `bytes` from the frame allocator now (in blocks of at most
/// `max_order`), so that code holding the frame-allocator lock can allocate. Returns the
/// bytes added; fewer than asked if memory ran out.
pub fn reserve(bytes: usize, max_order: u32) -> usize {
    let mut talc = ALLOCATOR.lock();
    let mut added = 0;
    while added < bytes {
        let order = max_order.min(GROW_ORDER.max(
            usize::BITS - ((bytes - added).div_ceil(mm::PAGE_SIZE as usize) - 1).leading_zeros(),
        ));
        if grow(&mut talc, order).is_err() {
            break;
        }
        added += (mm::PAGE_SIZE as usize) << order;
    }
    added
}

/// Squares the heap's self-check allocates, sums and frees.
const SELF_CHECK_SQUARES: u64 = 4096;
/// Heap bytes the self-check needs (its one vector), for callers that reserve room for it.
pub const SELF_CHECK_BYTES: usize = SELF_CHECK_SQUARES as usize * core::mem::size_of::<u64>();

/// The heap's self-check: 4096 squares allocated, summed and freed (the heap grows from the
/// frame allocator on first use). Returns the sum, `0x5_54d5_5800` when the heap is sound,
/// or the allocation's error (no room, or the heap could not grow because the caller holds
/// the frame allocator): never a panic.
pub fn self_check() -> Result<u64, alloc::collections::TryReserveError> {
    let mut squares = alloc::vec::Vec::new();
    squares.try_reserve_exact(SELF_CHECK_SQUARES as usize)?;
    squares.extend((0..SELF_CHECK_SQUARES).map(|i| i * i));
    Ok(squares.iter().sum())
}

/// Runs [`self_check`] and logs its `heap:` line (the boot tests match `heap: talc ok`).
pub fn check_and_log() {
    match self_check() {
        Ok(sum) => log::info!(
            "heap: talc ok ({} KiB from mm, check sum {sum:#x})",
            grown_bytes() / 1024
        ),
        Err(e) => log::error!("heap: self-check could not allocate: {e}"),
    }
}
