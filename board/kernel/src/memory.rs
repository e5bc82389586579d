//! Memory bring-up, in order: the Memblock of the boot memory map, the identity-map page
//! tables (pages taken from Memblock) and the MMU, then the frame allocator whose descriptor
//! array and chunk bitmap are also taken from Memblock (in scratch, on a warm boot). The
//! allocator starts with deferred descriptor init: only chunks that hold reserved or
//! preserved memory are written, the rest of RAM on demand or in [`init_deferred`].
//!
//! Owns the two global memory objects: `MEMBLOCK` (boot-time, stays for inspection and the
//! handover) and `FRAMES` (the buddy allocator every later page comes from). Both are
//! `arch::EarlyMutex`es: MEMBLOCK is locked before the MMU is on, where a `spin::Mutex`'s
//! exclusives may never succeed; FRAMES uses the same lock for consistency.

use arch::mmu::{self, MapError, MemAttr, PageTableBuilder, TableAlloc};
use arch::EarlyMutex;
use board::bootinfo::BootInfo;
use board::memmap;
use mm::{
    DeferredStorage, FrameAllocator, Memblock, MmError, Page, Pfn, PhysAddr, PhysRange, Preserved,
    PreservedBlock, PreservedSet, Stats, PAGE_SIZE,
};

pub static MEMBLOCK: EarlyMutex<Memblock> = EarlyMutex::new(Memblock::new());
pub static FRAMES: EarlyMutex<Option<FrameAllocator<'static>>> = EarlyMutex::new(None);

/// A memory bring-up step failed.
#[derive(Debug)]
pub enum MemError {
    Mm(MmError),
    Map(MapError),
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Mm(e) => write!(f, "memblock/frame allocator: {e}"),
            Self::Map(e) => write!(f, "page tables: {e}"),
        }
    }
}

impl From<MmError> for MemError {
    fn from(e: MmError) -> Self {
        Self::Mm(e)
    }
}

impl From<MapError> for MemError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}

/// Fills Memblock from the boot memory map.
pub fn init_memblock(info: &BootInfo<'_>, image: PhysRange) -> Result<(), MemError> {
    let mut mb = MEMBLOCK.lock();
    memmap::fill_memblock(&mut mb, info, image)?;
    Ok(())
}

/// Most table pages one identity map may use.
const MAX_TABLES: usize = 256;

/// Hands out zeroed table pages from Memblock and remembers them for cache maintenance.
struct MemblockTables<'a> {
    mb: &'a mut Memblock,
    pages: [u64; MAX_TABLES],
    used: usize,
}

impl TableAlloc for MemblockTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.used == MAX_TABLES {
            return None;
        }
        let pa = self.mb.alloc(PAGE_SIZE, PAGE_SIZE, None).ok()?.0;
        // SAFETY: Memblock just reserved this page for us; it is RAM, reachable at its
        // physical address (MMU off, or identity mapped).
        unsafe { core::ptr::write_bytes(pa as usize as *mut u64, 0, 512) };
        self.pages[self.used] = pa;
        self.used += 1;
        Some(pa)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` is one of the pages handed out above, owned by this builder.
        unsafe { &mut *(pa as usize as *mut [u64; 512]) }
    }
}

/// What the MMU setup did, for the boot log.
pub struct MmuReport {
    pub tables: usize,
    pub normal: usize,
    pub devices: usize,
    pub skipped_devices: usize,
}

/// Builds the identity map (RAM normal minus the stack guard page, devices nGnRE) and turns
/// the MMU and caches on. `image` (file, BSS, stacks, copy: everything this image wrote with
/// the caches off) is invalidated first so no stale line from before entry shadows it.
pub fn enable_mmu(
    info: &BootInfo<'_>,
    image: PhysRange,
    guard_page: u64,
) -> Result<MmuReport, MemError> {
    // Held across the SCTLR write: taken with a plain store (MMU off), released with a
    // store-release once it is on; both are ordinary accesses either side.
    let mut mb = MEMBLOCK.lock();
    let mut alloc = MemblockTables {
        mb: &mut mb,
        pages: [0; MAX_TABLES],
        used: 0,
    };
    let mut pt = PageTableBuilder::new(&mut alloc)?;
    let normal = memmap::normal_ranges(info, PhysRange::new(PhysAddr(guard_page), PAGE_SIZE));
    for r in normal.iter() {
        pt.map(&mut alloc, r.start.0, r.end.0, MemAttr::Normal)?;
    }
    let (devices, skipped) = memmap::device_ranges(info, mmu::VA_LIMIT);
    for d in devices.iter() {
        pt.map(&mut alloc, d.start.0, d.end.0, MemAttr::Device)?;
    }
    // The tables were written with the D-cache off; drop any stale line for them so the
    // walker (which looks up the cache once TCR says write-back) sees memory.
    for &pa in &alloc.pages[..alloc.used] {
        // SAFETY: each page is ours and mapped (identity, or MMU off).
        unsafe { arch::cache::clean_invalidate_to_poc(pa, PAGE_SIZE) };
    }
    // SAFETY: the D-cache has been off since entry, so no line of the image can be dirty
    // with anything of ours: every write since entry went to memory. Invalidating only
    // drops lines the loader may have left (it must clean the Image, need not invalidate).
    unsafe { arch::cache::invalidate_to_poc(image.start.0, image.size()) };
    // SAFETY: the map covers all RAM (code, stacks, data, FDT) and the console's device
    // range; the tables are in memory (cleaned above).
    unsafe { mmu::enable(pt.root()) };
    Ok(MmuReport {
        tables: alloc.used,
        normal: normal.len(),
        devices: devices.len(),
        skipped_devices: skipped,
    })
}

/// Memory for the frame allocator's descriptors and chunk bitmap, taken from Memblock.
pub struct FrameStorage {
    base: u64,
    need: DeferredStorage,
}

/// Bytes the frame allocator's storage takes for this boot's RAM (page rounded).
pub fn frame_storage_bytes() -> u64 {
    DeferredStorage::for_memblock(&MEMBLOCK.lock())
        .bytes()
        .next_multiple_of(PAGE_SIZE)
}

/// Takes the frame allocator's storage from Memblock (still scratch-only on a warm boot).
/// If an inherited scratch is too small for it, takes it from free RAM between the
/// `preserved` ranges instead (sorted, as kho validated them): a valid handover is never
/// dropped for want of scratch.
pub fn alloc_frame_storage(
    preserved: Option<impl Iterator<Item = Preserved>>,
) -> Result<FrameStorage, MemError> {
    let mut mb = MEMBLOCK.lock();
    let need = DeferredStorage::for_memblock(&mb);
    let bytes = need.bytes().next_multiple_of(PAGE_SIZE);
    match (mb.alloc(bytes, PAGE_SIZE, None), preserved) {
        (Ok(PhysAddr(base)), _) => Ok(FrameStorage { base, need }),
        (Err(e), None) => Err(e.into()),
        (Err(_), Some(preserved)) => {
            let PhysAddr(base) = mb.alloc_avoiding(bytes, preserved.map(|p| p.range))?;
            log::warn!(
                "memory: scratch too small for the frame allocator's {} KiB; took [{base:#x}, +{bytes:#x}) between the preserved blocks",
                bytes / 1024
            );
            Ok(FrameStorage { base, need })
        }
    }
}

/// Builds the frame allocator over `storage`, keeping `preserved` (a previous image's
/// sorted blocks, each with its owner's stash, and metadata) RESERVED, with deferred
/// descriptor init for the rest: one pass writes each preserved descriptor once.
pub fn init_frames<B: PreservedBlock>(
    storage: FrameStorage,
    preserved: PreservedSet<'_, B>,
) -> Result<Stats, MemError> {
    let FrameStorage { base, need } = storage;
    let bitmap = base + need.descriptors as u64 * Page::SIZE as u64;
    // SAFETY: Memblock reserved [base, base + need.bytes()) for these two arrays and never
    // hands it out again; it is RAM, identity mapped, and lives as long as the image. Any
    // bit pattern is a valid `Page` and `u64` (integers only), and the allocator writes each
    // descriptor before it reads it; `Page::SIZE` keeps the bitmap 8-byte aligned.
    let (pages, bits) = unsafe {
        (
            core::slice::from_raw_parts_mut(base as usize as *mut Page, need.descriptors),
            core::slice::from_raw_parts_mut(bitmap as usize as *mut u64, need.chunk_words),
        )
    };
    let fa =
        FrameAllocator::new_deferred_set(&MEMBLOCK.lock(), pages, bits, mm::MAX_ORDER, preserved)?;
    let stats = fa.stats();
    *FRAMES.lock() = Some(fa);
    Ok(stats)
}

/// Initialises every deferred chunk (the rest of RAM) now; returns the frames it added.
pub fn init_deferred() -> u64 {
    FRAMES
        .lock()
        .as_mut()
        .map_or(0, |fa| fa.init_deferred(usize::MAX))
}

/// Pages for the heap before the frame allocator exists: taken from Memblock (scratch only
/// on a warm boot), so they stay RESERVED in the frame allocator. `None` if Memblock is
/// held or full.
pub fn try_alloc_early(bytes: u64) -> Option<u64> {
    let mut mb = MEMBLOCK.try_lock()?;
    mb.alloc(bytes.next_multiple_of(PAGE_SIZE), PAGE_SIZE, None)
        .ok()
        .map(|a| a.0)
}

/// Whether the frame allocator is up.
pub fn frames_up() -> bool {
    FRAMES.try_lock().is_none_or(|f| f.is_some())
}

/// A block of 2^order pages from the frame allocator (the heap's source), or `None` if it
/// is not up, out of memory, or held by someone (who must not be allocating from the heap).
pub fn try_alloc_pages(order: u32) -> Option<Pfn> {
    FRAMES.try_lock()?.as_mut()?.alloc_pages(order).ok()
}

/// Frame allocator statistics, if it is up.
pub fn stats() -> Option<Stats> {
    FRAMES.lock().as_ref().map(|f| f.stats())
}
