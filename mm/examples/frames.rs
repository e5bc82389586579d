//! Booting `mm` over a simulated RAM range: what another kernel copies to bring up its page
//! allocator.
//!
//! Describes RAM and its reservations to a `Memblock`, gives a `FrameAllocator` storage for
//! one descriptor per frame, then allocates plain pages, a folio and a split block, and frees
//! each the way its owner would. Nothing here touches the frames themselves: `mm` only keeps
//! their descriptors. Run with `cargo run -p mm --example frames`.

use std::mem::MaybeUninit;

use mm::{BlockKind, FrameAllocator, Memblock, MmError, Page, PhysAddr, PhysRange, MAX_ORDER};

/// 64 MiB of "RAM" at 1 GiB, as QEMU virt has it; the kernel image sits in its first 2 MiB.
const RAM: PhysRange = PhysRange {
    start: PhysAddr(0x4000_0000),
    end: PhysAddr(0x4400_0000),
};
const IMAGE: PhysRange = PhysRange {
    start: PhysAddr(0x4000_0000),
    end: PhysAddr(0x4020_0000),
};

fn main() -> Result<(), MmError> {
    // 1. Tell the region allocator what is RAM and what is already taken.
    let mut memblock = Memblock::new();
    memblock.add_memory(RAM)?;
    memblock.reserve(IMAGE)?;

    // 2. Storage for one 32-byte descriptor per RAM frame. A kernel carves this out of RAM
    //    with `memblock.alloc(...)` and maps it; here the host heap stands in.
    let needed = FrameAllocator::descriptors_needed(&memblock);
    let mut storage: Vec<MaybeUninit<Page>> = (0..needed).map(|_| MaybeUninit::uninit()).collect();
    let mut frames = FrameAllocator::new(&memblock, &mut storage, MAX_ORDER)?;
    let at_boot = frames.stats();
    println!("booted: {at_boot}");

    // 3. A plain order-2 block: head refcount 1, tails 0 (Linux's alloc_pages).
    let block = frames.alloc_pages(2)?;
    assert_eq!(frames.page_ref_count(block)?, 1);
    assert_eq!(frames.block_kind(block, 2)?, BlockKind::Contig);

    // 4. A folio (compound page) of order 3, shared once and released twice.
    let folio = frames.alloc_folio(3)?;
    assert_eq!(frames.folio_order(folio)?, 3);
    frames.folio_get(folio)?;
    frames.folio_put(folio)?;
    frames.folio_put(folio)?;

    // 5. Split the order-2 block: every page now holds its own reference and is freed alone.
    frames.split_page(block, 2)?;
    assert_eq!(frames.block_kind(block, 2)?, BlockKind::Split);
    for i in 0..4 {
        frames.put_page(mm::Pfn(block.0 + i))?;
    }

    // 6. Every frame is back where it started; the free-path checks found nothing wrong.
    let now = frames.stats();
    assert_eq!(
        (now.free + now.deferred, now.bad),
        (at_boot.free + at_boot.deferred, 0)
    );
    println!("after alloc, folio, split and free: {now}");
    Ok(())
}
