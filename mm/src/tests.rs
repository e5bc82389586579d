//! Unit tests of the public API, one behaviour per test, on small simulated RAM layouts.
//!
//! Descriptor storage is a heap `Vec` here (host only); nothing touches frame contents.

use core::mem::MaybeUninit;

use crate::frame::MAX_ORDER_CAP;
use crate::memblock::MEMBLOCK_CAP;
use crate::*;

const MIB: u64 = 1 << 20;

/// A RAM layout: RAM ranges and reserved ranges, in bytes.
struct Layout<'l> {
    ram: &'l [(u64, u64)],
    reserved: &'l [(u64, u64)],
}

fn memblock(l: &Layout) -> Memblock {
    let mut mb = Memblock::new();
    for &(s, e) in l.ram {
        mb.add_memory(PhysRange::from_bounds(s, e))
            .expect("add_memory");
    }
    for &(s, e) in l.reserved {
        mb.reserve(PhysRange::from_bounds(s, e)).expect("reserve");
    }
    mb
}

fn storage(mb: &Memblock) -> Vec<MaybeUninit<Page>> {
    (0..FrameAllocator::descriptors_needed(mb))
        .map(|_| MaybeUninit::uninit())
        .collect()
}

/// Builds an allocator over `l` with `max_order` and runs `f` on it.
fn with_fa<R>(l: &Layout, max_order: u32, f: impl FnOnce(&mut FrameAllocator) -> R) -> R {
    let mb = memblock(l);
    let mut st = storage(&mb);
    let mut fa = FrameAllocator::new(&mb, &mut st, max_order).expect("new");
    f(&mut fa)
}

/// 4 MiB of RAM at 1 GiB, nothing reserved: one order-10 block.
const ONE_BLOCK: Layout = Layout {
    ram: &[(0x4000_0000, 0x4000_0000 + 4 * MIB)],
    reserved: &[],
};

pub(crate) fn assert_stats_consistent(fa: &FrameAllocator) {
    let s = fa.stats();
    assert_eq!(
        s.free + s.deferred + s.reserved + s.allocated + s.bad,
        s.total,
        "{s:?}"
    );
    let by_order: u64 = s
        .free_per_order
        .iter()
        .enumerate()
        .map(|(o, n)| n << o)
        .sum();
    assert_eq!(by_order, s.free, "{s:?}");
}

const BASE: u64 = 0x4000_0000;
const BASE_PFN: u64 = BASE >> PAGE_SHIFT;

/// Two RAM ranges with a hole, an unaligned start and a reservation inside.
const HOLEY: Layout = Layout {
    ram: &[(0x1000_3000, 0x1010_0000), (0x2000_0000, 0x2080_0000)],
    reserved: &[(0x2010_0000, 0x2010_2000)],
};

fn free_set(fa: &FrameAllocator) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = fa.free_blocks().map(|(p, o)| (p.0, o)).collect();
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------- addr

#[test]
fn pfn_and_phys_convert_both_ways() {
    assert_eq!(PhysAddr(0x4000_1234).pfn(), Pfn(0x40001));
    assert_eq!(Pfn(0x40001).phys(), PhysAddr(0x4000_1000));
    assert!(PhysAddr(0x20_0000).is_aligned(0x20_0000));
    assert!(!PhysAddr(0x20_1000).is_aligned(0x20_0000));
    assert!(Pfn(8).is_aligned(3) && !Pfn(4).is_aligned(3));
    assert_eq!(format!("{}", PhysAddr(0x1000)), "0x1000");
    assert_eq!(PhysAddr(u64::MAX).align_up(PAGE_SIZE), None);
}

#[test]
fn phys_range_queries() {
    let r = PhysRange::new(PhysAddr(0x1000), 0x2000);
    assert_eq!(r.size(), 0x2000);
    assert!(r.contains(PhysAddr(0x2fff)) && !r.contains(PhysAddr(0x3000)));
    assert!(r.overlaps(&PhysRange::from_bounds(0x2fff, 0x4000)));
    assert!(!r.overlaps(&PhysRange::from_bounds(0x3000, 0x4000)));
    assert_eq!(
        PhysRange::from_bounds(0x1001, 0x3fff).inner_pfns(),
        (Pfn(2), Pfn(3))
    );
    assert_eq!(
        PhysRange::from_bounds(0x1001, 0x3fff).outer_pfns(),
        (Pfn(1), Pfn(4))
    );
    assert_eq!(format!("{r}"), "[0x1000, 0x3000)");
}

// ---------------------------------------------------------------- memblock

fn ranges(it: impl Iterator<Item = PhysRange>) -> Vec<(u64, u64)> {
    it.map(|r| (r.start.0, r.end.0)).collect()
}

#[test]
fn memblock_merges_and_trims_memory() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0x2000, 0x5000))
        .unwrap();
    mb.add_memory(PhysRange::from_bounds(0x5000, 0x8800))
        .unwrap();
    mb.add_memory(PhysRange::from_bounds(0x100, 0x1f00))
        .unwrap(); // no whole page: ignored
    mb.add_memory(PhysRange::from_bounds(0x10_0800, 0x20_0000))
        .unwrap();
    assert_eq!(
        ranges(mb.memory()),
        vec![(0x2000, 0x8000), (0x10_1000, 0x20_0000)]
    );
    assert_eq!(mb.memory_size(), 0x6000 + 0xf_f000);
    assert_eq!(
        mb.add_memory(PhysRange::from_bounds(0x5000, 0x5000)),
        Err(MmError::InvalidRange {
            start: PhysAddr(0x5000),
            end: PhysAddr(0x5000)
        })
    );
}

#[test]
fn memblock_free_ranges_subtract_reservations() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0x0, 0x10_000))
        .unwrap();
    mb.add_memory(PhysRange::from_bounds(0x20_000, 0x30_000))
        .unwrap();
    mb.reserve(PhysRange::from_bounds(0x0, 0x1000)).unwrap();
    mb.reserve(PhysRange::from_bounds(0x3800, 0x4100)).unwrap(); // widened to 0x3000..0x5000
    mb.reserve(PhysRange::from_bounds(0xf000, 0x21_000))
        .unwrap(); // spans the hole
    mb.reserve_noinit(PhysRange::from_bounds(0x28_000, 0x2a_000))
        .unwrap();
    assert_eq!(
        ranges(mb.free_ranges()),
        vec![
            (0x1000, 0x3000),
            (0x5000, 0xf000),
            (0x21_000, 0x28_000),
            (0x2a_000, 0x30_000)
        ]
    );
    assert_eq!(ranges(mb.reserved_noinit()), vec![(0x28_000, 0x2a_000)]);
    assert_eq!(ranges(mb.reserved()).len(), 4);
}

#[test]
fn memblock_unreserve_splits_and_undoes() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0, 0x10_000)).unwrap();
    mb.reserve_noinit(PhysRange::from_bounds(0x2000, 0x8000))
        .unwrap();
    mb.unreserve(PhysRange::from_bounds(0x4000, 0x5000))
        .unwrap();
    assert_eq!(
        ranges(mb.reserved_noinit()),
        vec![(0x2000, 0x4000), (0x5000, 0x8000)]
    );
    mb.unreserve(PhysRange::from_bounds(0x0, 0x10_000)).unwrap();
    assert_eq!(mb.reserved().count(), 0);
    assert_eq!(ranges(mb.free_ranges()), vec![(0, 0x10_000)]);
}

#[test]
fn memblock_reserve_paints_over_noinit() {
    let mut mb = Memblock::new();
    mb.reserve_noinit(PhysRange::from_bounds(0x2000, 0x8000))
        .unwrap();
    mb.reserve(PhysRange::from_bounds(0x3000, 0x4000)).unwrap();
    assert_eq!(
        ranges(mb.reserved_noinit()),
        vec![(0x2000, 0x3000), (0x4000, 0x8000)]
    );
    assert_eq!(
        ranges(mb.reserved()),
        vec![(0x2000, 0x3000), (0x3000, 0x4000), (0x4000, 0x8000)]
    );
}

#[test]
fn memblock_alloc_top_down_below_and_aligned() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0x1000, 0x100_0000))
        .unwrap();
    let a = mb.alloc(0x1800, 0x1000, None).unwrap();
    assert_eq!(a, PhysAddr(0x100_0000 - 0x2000));
    let b = mb
        .alloc(0x1000, 0x20_0000, Some(PhysAddr(0x80_0000)))
        .unwrap();
    assert_eq!(b, PhysAddr(0x60_0000));
    let c = mb.alloc(0x1000, 0, Some(PhysAddr(0x80_0000))).unwrap();
    assert_eq!(c, PhysAddr(0x7f_f000));
    assert!(ranges(mb.reserved()).contains(&(0xff_e000, 0x100_0000)));
    assert!(!mb.free_ranges().any(|r| r.contains(b) || r.contains(c)));
}

#[test]
fn memblock_alloc_bottom_up() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0x1000, 0x100_0000))
        .unwrap();
    mb.set_bottom_up(true);
    assert_eq!(mb.alloc(0x1000, 0x1000, None), Ok(PhysAddr(0x1000)));
    assert_eq!(mb.alloc(0x1000, 0x10_000, None), Ok(PhysAddr(0x10_000)));
    assert_eq!(mb.alloc(0x1000, 0x1000, None), Ok(PhysAddr(0x2000)));
}

#[test]
fn memblock_alloc_only_in_scratch() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0, 0x100_0000))
        .unwrap();
    mb.set_alloc_only_in(&[PhysRange::from_bounds(0x10_0000, 0x12_0000)])
        .unwrap();
    let a = mb.alloc(0x1_0000, 0x1000, None).unwrap();
    assert_eq!(a, PhysAddr(0x11_0000));
    let b = mb.alloc(0x1_0000, 0x1000, None).unwrap();
    assert_eq!(b, PhysAddr(0x10_0000));
    assert_eq!(
        mb.alloc(0x1000, 0x1000, None),
        Err(MmError::NoRange {
            size: 0x1000,
            align: 0x1000
        })
    );
    mb.clear_alloc_only_in();
    assert_eq!(mb.alloc(0x1000, 0x1000, None), Ok(PhysAddr(0xff_f000)));
    mb.set_alloc_only_in(&[]).unwrap();
    assert!(mb.alloc(0x1000, 0x1000, None).is_err());
}

#[test]
fn memblock_alloc_rejects_bad_arguments() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0, 0x10_0000)).unwrap();
    assert_eq!(
        mb.alloc(0x1000, 0x3000, None),
        Err(MmError::InvalidAlign { align: 0x3000 })
    );
    assert!(matches!(
        mb.alloc(0, 0x1000, None),
        Err(MmError::InvalidRange { .. })
    ));
    assert!(matches!(
        mb.alloc(u64::MAX, 0x1000, None),
        Err(MmError::InvalidRange { .. })
    ));
    assert_eq!(
        mb.alloc(0x20_0000, 0x1000, None),
        Err(MmError::NoRange {
            size: 0x20_0000,
            align: 0x1000
        })
    );
    assert_eq!(
        mb.alloc(0x1000, 0x1000, Some(PhysAddr(0x800))),
        Err(MmError::NoRange {
            size: 0x1000,
            align: 0x1000
        })
    );
}

#[test]
fn memblock_full_table_is_an_error_and_leaves_no_trace() {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(0, 0x1000_0000))
        .unwrap();
    for i in 0..MEMBLOCK_CAP as u64 {
        mb.reserve(PhysRange::new(PhysAddr(i * 0x2000), 0x1000))
            .unwrap();
    }
    let before = ranges(mb.reserved());
    assert_eq!(
        mb.reserve(PhysRange::new(PhysAddr(0x100_0000), 0x1000)),
        Err(MmError::MemblockFull)
    );
    // Cutting a hole in the middle of one entry needs one more slot.
    assert_eq!(mb.unreserve(PhysRange::from_bounds(0x100, 0x200)), Ok(()));
    assert_eq!(ranges(mb.reserved()).len(), MEMBLOCK_CAP - 1);
    assert_ne!(before, ranges(mb.reserved()));
}

// ---------------------------------------------------------------- construction

#[test]
fn new_rejects_small_storage_and_large_max_order() {
    let mb = memblock(&ONE_BLOCK);
    let mut st = storage(&mb);
    st.pop();
    assert_eq!(
        FrameAllocator::new(&mb, &mut st, 10).err(),
        Some(MmError::StorageTooSmall {
            needed: 1024,
            got: 1023
        })
    );
    let mut st = storage(&mb);
    assert_eq!(
        FrameAllocator::new(&mb, &mut st, 11).err(),
        Some(MmError::OrderTooLarge {
            order: 11,
            max: MAX_ORDER_CAP
        })
    );
}

#[test]
fn descriptor_is_32_bytes() {
    assert_eq!(Page::SIZE, 32);
    assert_eq!(
        FrameAllocator::descriptor_bytes(&memblock(&ONE_BLOCK)),
        1024 * 32
    );
}

#[test]
fn layout_with_holes_and_several_ranges() {
    with_fa(&HOLEY, 10, |fa| {
        let s = fa.stats();
        let first = (0x1010_0000 - 0x1000_3000) / PAGE_SIZE;
        let second = (0x2080_0000 - 0x2000_0000) / PAGE_SIZE;
        assert_eq!(s.total, first + second);
        assert_eq!(s.reserved, 2);
        assert_eq!(s.free, s.total - 2);
        assert!(fa.contains(Pfn(0x10003)) && !fa.contains(Pfn(0x10002)));
        assert!(
            !fa.contains(Pfn(0x10100)) && !fa.contains(Pfn(0x1ffff)) && fa.contains(Pfn(0x20000))
        );
        assert_eq!(fa.page_flags(Pfn(0x20100)).unwrap(), PageFlags::RESERVED);
        assert_eq!(
            fa.page_flags(Pfn(0x15000)),
            Err(MmError::NotRam { pfn: Pfn(0x15000) })
        );
        // Every free block is aligned, within one range and off the reservation.
        for (p, o) in fa.free_blocks() {
            assert!(p.is_aligned(o));
            let end = p.0 + (1 << o);
            assert!(fa.ram().any(|(s, e)| s <= p && end <= e.0), "{p} order {o}");
            assert!(end <= 0x20100 || p.0 >= 0x20102);
        }
        // The unaligned first range starts with an order-0 block at 0x10003.
        assert!(free_set(fa).contains(&(0x10003, 0)));
        assert_eq!(
            fa.ram().collect::<Vec<_>>(),
            vec![(Pfn(0x10003), Pfn(0x10100)), (Pfn(0x20000), Pfn(0x20800))]
        );
        assert_stats_consistent(fa);
        // Drain everything: the allocator hands out exactly the free frames.
        let mut got = 0;
        while let Ok(p) = fa.alloc_pages(0) {
            assert!(!fa.page_flags(p).unwrap().contains(PageFlags::RESERVED));
            got += 1;
        }
        assert_eq!(got, s.free);
        assert_eq!(fa.alloc_pages(0), Err(MmError::OutOfMemory { order: 0 }));
    });
}

#[test]
fn range_larger_than_max_order_is_cut_into_max_order_blocks() {
    // 64 MiB (8 MiB under Miri) in one aligned range: one block far above MAX_ORDER.
    const SIZE_MIB: u64 = if cfg!(miri) { 8 } else { 64 };
    let l = Layout {
        ram: &[(BASE, BASE + SIZE_MIB * MIB)],
        reserved: &[],
    };
    with_fa(&l, 10, |fa| {
        assert_eq!(fa.stats().free_per_order[10], SIZE_MIB / 4);
        assert_eq!(fa.stats().free, SIZE_MIB * 256);
    });
    with_fa(&l, 8, |fa| {
        assert_eq!(fa.stats().free_per_order[8], SIZE_MIB);
        assert_eq!(fa.stats().free_per_order[9..], [0, 0]);
        assert_eq!(
            fa.alloc_pages(9),
            Err(MmError::OrderTooLarge { order: 9, max: 8 })
        );
    });
}

#[test]
fn noinit_reservations_are_flagged() {
    let mut mb = memblock(&ONE_BLOCK);
    mb.reserve_noinit(PhysRange::new(PhysAddr(BASE + 0x10_0000), 0x4000))
        .unwrap();
    let mut st = storage(&mb);
    let fa = FrameAllocator::new(&mb, &mut st, 10).unwrap();
    let f = fa.page_flags(Pfn(BASE_PFN + 0x100)).unwrap();
    assert_eq!(f, PageFlags::RESERVED | PageFlags::NOINIT);
    assert_eq!(fa.page_private(Pfn(BASE_PFN + 0x100)), Ok(0));
    assert_eq!(
        fa.page_flags(Pfn(BASE_PFN + 0x105)).unwrap(),
        PageFlags::empty()
    );
    assert_eq!(fa.stats().reserved, 4);
}

// ---------------------------------------------------------------- alloc and free

#[test]
fn alloc_pages_gives_head_one_tails_zero() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(3).unwrap();
        assert!(p.is_aligned(3));
        assert_eq!(fa.page_ref_count(p), Ok(1));
        assert_eq!(fa.page_order(p), Ok(3));
        for i in 1..8 {
            assert_eq!(fa.page_ref_count(p.add(i)), Ok(0));
            assert_eq!(fa.page_flags(p.add(i)), Ok(PageFlags::empty()));
            assert_eq!(fa.page_folio(p.add(i)), Ok(p.add(i)));
        }
        assert_eq!(fa.block_kind(p, 3), Ok(BlockKind::Contig));
        assert_eq!(fa.stats().allocated, 8);
        assert_stats_consistent(fa);
    });
}

#[test]
fn alloc_rejects_order_above_max_and_runs_out() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        assert_eq!(
            fa.alloc_pages(11),
            Err(MmError::OrderTooLarge { order: 11, max: 10 })
        );
        assert_eq!(
            fa.alloc_folio(11),
            Err(MmError::OrderTooLarge { order: 11, max: 10 })
        );
        let p = fa.alloc_pages(10).unwrap();
        assert_eq!(fa.alloc_pages(0), Err(MmError::OutOfMemory { order: 0 }));
        fa.free_pages(p, 10).unwrap();
        assert_eq!(fa.max_order(), 10);
    });
}

#[test]
fn alloc_folio_sets_compound_markers() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let f = fa.alloc_folio(2).unwrap();
        assert_eq!(fa.page_flags(f), Ok(PageFlags::HEAD));
        assert_eq!(fa.folio_order(f), Ok(2));
        for i in 1..4 {
            assert_eq!(fa.page_flags(f.add(i)), Ok(PageFlags::TAIL));
            assert_eq!(fa.page_folio(f.add(i)), Ok(f));
            assert_eq!(fa.page_ref_count(f.add(i)), Ok(0));
            assert_eq!(fa.page_count(f.add(i)), Ok(1)); // the folio's count
            assert_eq!(
                fa.folio_order(f.add(i)),
                Err(MmError::NotHead { pfn: f.add(i) })
            );
        }
        assert_eq!(fa.block_kind(f, 2), Ok(BlockKind::Folio));
        // An order-0 folio is a plain page.
        let s = fa.alloc_folio(0).unwrap();
        assert_eq!(fa.page_flags(s), Ok(PageFlags::empty()));
        assert_eq!(fa.folio_order(s), Ok(0));
    });
}

#[test]
fn free_pages_rejects_double_free() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(1).unwrap();
        let q = fa.alloc_pages(1).unwrap(); // keeps p's block from merging away
        fa.free_pages(p, 1).unwrap();
        assert_eq!(fa.free_pages(p, 1), Err(MmError::AlreadyFree { pfn: p }));
        assert_eq!(fa.put_page(p), Err(MmError::AlreadyFree { pfn: p }));
        assert_eq!(fa.stats().bad, 0);
        fa.free_pages(q, 1).unwrap();
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

#[test]
fn free_of_a_reserved_frame_is_refused() {
    let l = Layout {
        ram: ONE_BLOCK.ram,
        reserved: &[(BASE, BASE + 0x1000)],
    };
    with_fa(&l, 10, |fa| {
        let p = Pfn(BASE_PFN);
        assert_eq!(fa.free_pages(p, 0), Err(MmError::Reserved { pfn: p }));
        assert_eq!(fa.put_page(p), Err(MmError::Reserved { pfn: p }));
        assert_eq!(fa.get_page(p), Err(MmError::Reserved { pfn: p }));
        assert_eq!(fa.stats().reserved, 1);
    });
}

#[test]
fn free_pages_rejects_misaligned_wrong_order_and_non_ram() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(2).unwrap();
        assert_eq!(
            fa.free_pages(p.add(1), 2),
            Err(MmError::Misaligned {
                pfn: p.add(1),
                order: 2
            })
        );
        assert_eq!(
            fa.free_pages(p, 1),
            Err(MmError::OrderMismatch {
                pfn: p,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            fa.free_pages(p.add(1), 0),
            Err(MmError::NotAllocated { pfn: p.add(1) })
        );
        assert_eq!(
            fa.free_pages(Pfn(1), 0),
            Err(MmError::NotRam { pfn: Pfn(1) })
        );
        assert_eq!(
            fa.free_pages(p, 31),
            Err(MmError::OrderTooLarge {
                order: 31,
                max: MAX_BLOCK_ORDER
            })
        );
        // Block running past the end of RAM.
        assert_eq!(
            fa.free_pages(Pfn(BASE_PFN), 11),
            Err(MmError::NotRam {
                pfn: Pfn(BASE_PFN + 1024)
            })
        );
        assert_eq!(fa.page_ref_count(p), Ok(1));
        fa.free_pages(p, 2).unwrap();
        assert_eq!(fa.stats().free, 1024);
    });
}

#[test]
fn free_pages_of_folio_tail_is_refused() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let f = fa.alloc_folio(1).unwrap();
        assert_eq!(
            fa.free_pages(f.add(1), 0),
            Err(MmError::NotHead { pfn: f.add(1) })
        );
        assert_eq!(
            fa.folio_put(f.add(1)),
            Err(MmError::NotHead { pfn: f.add(1) })
        );
        assert_eq!(fa.split_page(f, 1), Err(MmError::Compound { pfn: f }));
        fa.free_pages(f, 1).unwrap();
        assert_eq!(fa.stats().allocated, 0);
    });
}

#[test]
fn free_pages_with_extra_head_ref_frees_tails_now() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(3).unwrap();
        fa.get_page(p).unwrap();
        fa.free_pages(p, 3).unwrap();
        // Linux: the tails went back; the first frame stays as an order-0 page.
        assert_eq!(fa.stats().allocated, 1);
        assert_eq!(fa.page_ref_count(p), Ok(1));
        assert_eq!(fa.page_order(p), Ok(0));
        assert_stats_consistent(fa);
        fa.put_page(p).unwrap();
        assert_eq!(fa.stats().allocated, 0);
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

#[test]
fn put_page_on_contig_head_frees_the_whole_block() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(4).unwrap();
        fa.put_page(p).unwrap();
        assert_eq!(fa.stats().allocated, 0);
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

// ---------------------------------------------------------------- split

#[test]
fn split_page_gives_every_page_one_ref() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(2).unwrap();
        fa.split_page(p, 2).unwrap();
        for i in 0..4 {
            assert_eq!(fa.page_ref_count(p.add(i)), Ok(1));
            assert_eq!(fa.page_flags(p.add(i)), Ok(PageFlags::SPLIT));
            assert_eq!(fa.page_order(p.add(i)), Ok(0));
        }
        assert_eq!(fa.block_kind(p, 2), Ok(BlockKind::Split));
        // Free out of order; the block coalesces back.
        for i in [2, 0, 3, 1] {
            fa.put_page(p.add(i)).unwrap();
            assert_eq!(
                fa.page_flags(p.add(i))
                    .map(|f| f.contains(PageFlags::SPLIT)),
                Ok(false)
            );
        }
        assert_eq!(fa.stats().free_per_order[10], 1);
        assert_eq!(fa.stats().bad, 0);
    });
}

#[test]
fn split_page_rejects_wrong_order_and_free_blocks() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(2).unwrap();
        assert_eq!(
            fa.split_page(p, 1),
            Err(MmError::OrderMismatch {
                pfn: p,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            fa.split_page(p.add(1), 0),
            Err(MmError::NotAllocated { pfn: p.add(1) })
        );
        let q = p.add(8);
        assert_eq!(fa.page_flags(q), Ok(PageFlags::FREE));
        assert_eq!(fa.split_page(q, 3), Err(MmError::AlreadyFree { pfn: q }));
        assert_eq!(
            fa.split_page(p.add(2), 2),
            Err(MmError::Misaligned {
                pfn: p.add(2),
                order: 2
            })
        );
    });
}

#[test]
fn split_pages_freed_as_a_block_are_refused() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(2).unwrap();
        fa.split_page(p, 2).unwrap();
        assert_eq!(
            fa.free_pages(p, 2),
            Err(MmError::OrderMismatch {
                pfn: p,
                expected: 0,
                got: 2
            })
        );
        assert_eq!(fa.page_ref_count(p), Ok(1));
    });
}

// ---------------------------------------------------------------- refcounts

#[test]
fn get_put_on_folio_tail_acts_on_head() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let f = fa.alloc_folio(3).unwrap();
        fa.get_page(f.add(5)).unwrap();
        assert_eq!(fa.page_ref_count(f), Ok(2));
        assert_eq!(fa.page_ref_count(f.add(5)), Ok(0));
        fa.put_page(f.add(7)).unwrap();
        assert_eq!(fa.page_count(f), Ok(1));
        fa.put_page(f.add(1)).unwrap();
        assert_eq!(fa.stats().allocated, 0);
        assert_eq!(fa.page_flags(f.add(1)), Ok(PageFlags::empty()));
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

#[test]
fn folio_get_put_count_and_free() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let f = fa.alloc_folio(4).unwrap();
        fa.folio_get(f).unwrap();
        fa.folio_put(f).unwrap();
        assert_eq!(fa.page_count(f), Ok(1));
        fa.folio_put(f).unwrap();
        assert_eq!(fa.folio_put(f), Err(MmError::AlreadyFree { pfn: f }));
        let p = fa.alloc_pages(0).unwrap();
        fa.folio_get(p).unwrap();
        fa.folio_put(p).unwrap();
        fa.folio_put(p).unwrap();
        assert_eq!(fa.stats().allocated, 0);
    });
}

#[test]
fn folio_ops_refuse_contig_blocks() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(2).unwrap();
        assert_eq!(fa.folio_get(p), Err(MmError::NotFolio { pfn: p }));
        assert_eq!(fa.folio_put(p), Err(MmError::NotFolio { pfn: p }));
        assert_eq!(
            fa.get_page(p.add(1)),
            Err(MmError::NotAllocated { pfn: p.add(1) })
        );
        assert_eq!(
            fa.put_page(p.add(1)),
            Err(MmError::NotAllocated { pfn: p.add(1) })
        );
    });
}

#[test]
fn refcount_overflow_is_refused() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(0).unwrap();
        fa.set_page_refcount(p, u32::MAX).unwrap();
        assert_eq!(fa.get_page(p), Err(MmError::RefcountOverflow { pfn: p }));
        assert_eq!(fa.folio_get(p), Err(MmError::RefcountOverflow { pfn: p }));
    });
}

#[test]
fn queries_on_free_and_non_ram_frames() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = Pfn(BASE_PFN);
        assert_eq!(fa.page_count(p), Ok(0));
        assert_eq!(fa.page_flags(p), Ok(PageFlags::FREE));
        assert_eq!(fa.page_order(p), Ok(10));
        assert_eq!(fa.page_folio(p), Ok(p));
        assert_eq!(fa.block_kind(p, 10), Err(MmError::AlreadyFree { pfn: p }));
        assert_eq!(
            fa.set_page_refcount(p, 1),
            Err(MmError::AlreadyFree { pfn: p })
        );
        let out = Pfn(BASE_PFN + 1024);
        for r in [
            fa.page_count(out).map(|_| ()),
            fa.page_private(out).map(|_| ()),
            fa.page_folio(out).map(|_| ()),
            fa.folio_order(out).map(|_| ()),
            fa.get_page(out),
            fa.put_page(out),
            fa.folio_get(out),
            fa.folio_put(out),
            fa.set_page_private(out, 1),
        ] {
            assert_eq!(r, Err(MmError::NotRam { pfn: out }));
        }
    });
}

#[test]
fn block_kind_reports_each_kind_and_mismatch() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let c = fa.alloc_pages(2).unwrap();
        let f = fa.alloc_folio(2).unwrap();
        let s = fa.alloc_pages(2).unwrap();
        fa.split_page(s, 2).unwrap();
        assert_eq!(fa.block_kind(c, 2), Ok(BlockKind::Contig));
        assert_eq!(fa.block_kind(f, 2), Ok(BlockKind::Folio));
        assert_eq!(fa.block_kind(s, 2), Ok(BlockKind::Split));
        assert_eq!(
            fa.block_kind(c, 1),
            Err(MmError::OrderMismatch {
                pfn: c,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            fa.block_kind(f.add(1), 0),
            Err(MmError::NotHead { pfn: f.add(1) })
        );
        fa.put_page(s.add(3)).unwrap();
        assert_eq!(
            fa.block_kind(s, 2),
            Err(MmError::NotAllocated { pfn: s.add(3) })
        );
    });
}

// ---------------------------------------------------------------- free-path checks

/// A RESERVED order-`order` block at the start of ONE_BLOCK's RAM, as kho leaves it.
fn with_reserved_block<R>(order: u32, f: impl FnOnce(&mut FrameAllocator, Pfn) -> R) -> R {
    let l = Layout {
        ram: ONE_BLOCK.ram,
        reserved: &[(BASE, BASE + (PAGE_SIZE << order))],
    };
    with_fa(&l, 10, |fa| f(fa, Pfn(BASE_PFN)))
}

#[test]
fn contig_block_with_tail_refs_is_a_bad_page() {
    // The RFC's bug: a restored CONTIG block whose tails were given refcount 1.
    with_reserved_block(3, |fa, p| {
        fa.claim_reserved(p, 3, BlockKind::Contig).unwrap();
        for i in 1..8 {
            fa.set_page_refcount(p.add(i), 1).unwrap();
        }
        let before = fa.stats();
        let err = fa.free_pages(p, 3).unwrap_err();
        assert_eq!(
            err,
            MmError::BadPage(BadPage {
                pfn: p.add(1),
                flags: PageFlags::empty(),
                refcount: 1,
                reason: BadPageReason::TailRefcount
            })
        );
        let s = fa.stats();
        assert_eq!((s.bad, s.bad_events), (8, 1));
        assert_eq!(s.allocated, before.allocated - 8);
        assert_eq!(
            s.free, before.free,
            "the leaked block must stay off the free lists"
        );
        assert!(fa.page_flags(p).unwrap().contains(PageFlags::BAD));
        assert!(!fa
            .free_blocks()
            .any(|(b, o)| b.0 <= p.0 + 7 && p.0 < b.0 + (1 << o)));
        assert_eq!(fa.put_page(p), Err(MmError::NotAllocated { pfn: p }));
        assert_stats_consistent(fa);
        // Nothing hands the leaked frames out again.
        while let Ok(q) = fa.alloc_pages(0) {
            assert!(q.0 >= p.0 + 8);
        }
    });
}

#[test]
fn contig_block_with_tails_at_zero_frees_cleanly() {
    with_reserved_block(3, |fa, p| {
        fa.claim_reserved(p, 3, BlockKind::Contig).unwrap();
        fa.free_pages(p, 3).unwrap();
        assert_eq!(fa.stats().bad, 0);
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

#[test]
fn allocated_contig_block_with_a_tail_ref_is_a_bad_page() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(2).unwrap();
        fa.set_page_refcount(p.add(3), 1).unwrap();
        let err = fa.free_pages(p, 2).unwrap_err();
        assert!(
            matches!(err, MmError::BadPage(b) if b.pfn == p.add(3) && b.reason == BadPageReason::TailRefcount)
        );
        assert_eq!(fa.stats().bad, 4);
    });
}

#[test]
fn leftover_private_is_a_bad_page() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let f = fa.alloc_folio(1).unwrap();
        fa.set_page_private(f.add(1), 0xdead).unwrap();
        assert_eq!(fa.page_private(f.add(1)), Ok(0xdead));
        let err = fa.folio_put(f).unwrap_err();
        assert!(
            matches!(err, MmError::BadPage(b) if b.pfn == f.add(1) && b.reason == BadPageReason::PrivateSet)
        );
        let p = fa.alloc_pages(0).unwrap();
        fa.set_page_private(p, 1).unwrap();
        let err = fa.put_page(p).unwrap_err();
        assert!(
            matches!(err, MmError::BadPage(b) if b.pfn == p && b.reason == BadPageReason::PrivateSet)
        );
        assert_eq!(fa.stats().bad, 3);
        assert_eq!(fa.stats().bad_events, 2);
        assert_stats_consistent(fa);
    });
}

#[test]
fn folio_tail_with_refs_is_a_bad_page() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let f = fa.alloc_folio(2).unwrap();
        fa.set_page_refcount(f.add(2), 1).unwrap();
        let err = fa.folio_put(f).unwrap_err();
        assert!(
            matches!(err, MmError::BadPage(b) if b.pfn == f.add(2) && b.reason == BadPageReason::TailRefcount)
        );
    });
}

#[test]
fn checks_off_frees_without_looking() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        fa.set_checks(false);
        let p = fa.alloc_pages(2).unwrap();
        fa.set_page_refcount(p.add(1), 1).unwrap();
        fa.free_pages(p, 2).unwrap();
        assert_eq!(fa.stats().bad, 0);
        assert_eq!(fa.page_ref_count(p.add(1)), Ok(0));
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

#[test]
fn bad_page_display_names_everything() {
    let b = BadPage {
        pfn: Pfn(0x40001),
        flags: PageFlags::SPLIT,
        refcount: 1,
        reason: BadPageReason::TailRefcount,
    };
    let s = format!("{}", MmError::BadPage(b));
    assert_eq!(
        s,
        "bad page pfn 0x40001 (nonzero refcount on a tail page): flags split refcount 1"
    );
    assert_eq!(format!("{}", PageFlags::HEAD | PageFlags::BAD), "head|bad");
}

// ---------------------------------------------------------------- restore support

#[test]
fn claim_reserved_builds_each_pattern() {
    for (kind, head_flags, tail_flags, tail_ref) in [
        (BlockKind::Folio, PageFlags::HEAD, PageFlags::TAIL, 0),
        (BlockKind::Contig, PageFlags::empty(), PageFlags::empty(), 0),
        (BlockKind::Split, PageFlags::SPLIT, PageFlags::SPLIT, 1),
    ] {
        with_reserved_block(2, |fa, p| {
            fa.set_page_private(p, 0x1234).unwrap();
            fa.claim_reserved(p, 2, kind).unwrap();
            assert_eq!(fa.page_private(p), Ok(0));
            assert_eq!(fa.page_flags(p), Ok(head_flags));
            assert_eq!(fa.page_ref_count(p), Ok(1));
            for i in 1..4 {
                assert_eq!(fa.page_flags(p.add(i)), Ok(tail_flags));
                assert_eq!(fa.page_ref_count(p.add(i)), Ok(tail_ref));
            }
            assert_eq!(fa.block_kind(p, 2), Ok(kind));
            assert_eq!(fa.stats().reserved, 0);
            assert_eq!(fa.stats().allocated, 4);
            // Each kind frees the way its owner would.
            match kind {
                BlockKind::Folio => fa.folio_put(p).unwrap(),
                BlockKind::Contig => fa.free_pages(p, 2).unwrap(),
                BlockKind::Split => (0..4).try_for_each(|i| fa.put_page(p.add(i))).unwrap(),
            }
            assert_eq!(fa.stats().free_per_order[10], 1, "{kind:?}");
        });
    }
}

#[test]
fn claim_reserved_refuses_unreserved_frames_without_changes() {
    let l = Layout {
        ram: ONE_BLOCK.ram,
        reserved: &[(BASE, BASE + 3 * PAGE_SIZE)],
    };
    with_fa(&l, 10, |fa| {
        let p = Pfn(BASE_PFN);
        assert_eq!(
            fa.claim_reserved(p, 2, BlockKind::Contig),
            Err(MmError::NotReserved { pfn: p.add(3) })
        );
        assert_eq!(fa.page_flags(p), Ok(PageFlags::RESERVED));
        assert_eq!(
            fa.claim_reserved(p.add(1), 1, BlockKind::Contig),
            Err(MmError::Misaligned {
                pfn: p.add(1),
                order: 1
            })
        );
        assert_eq!(
            fa.claim_reserved(p, 31, BlockKind::Contig),
            Err(MmError::OrderTooLarge { order: 31, max: 30 })
        );
        assert_eq!(fa.stats().reserved, 3);
    });
}

#[test]
fn restored_block_above_max_order_frees_in_chunks() {
    // An order-12 (16 MiB; order 10 under Miri) block preserved by an image with larger
    // orders, restored by an instance with max_order 8. RAM is twice the block.
    const ORDER: u32 = if cfg!(miri) { 10 } else { 12 };
    let block = PAGE_SIZE << ORDER;
    let l = Layout {
        ram: &[(BASE, BASE + 2 * block)],
        reserved: &[(BASE, BASE + block)],
    };
    for kind in [BlockKind::Folio, BlockKind::Contig, BlockKind::Split] {
        with_fa(&l, 8, |fa| {
            let p = Pfn(BASE_PFN);
            fa.claim_reserved(p, ORDER, kind).unwrap();
            assert_eq!(
                fa.folio_order(p),
                Ok(if kind == BlockKind::Folio { ORDER } else { 0 })
            );
            match kind {
                BlockKind::Folio => fa.folio_put(p).unwrap(),
                BlockKind::Contig => fa.free_pages(p, ORDER).unwrap(),
                BlockKind::Split => (0..1u64 << ORDER)
                    .try_for_each(|i| fa.put_page(p.add(i)))
                    .unwrap(),
            }
            assert_eq!(fa.stats().free_per_order[8], 2 << (ORDER - 8));
            assert_eq!(fa.stats().free, 2 << ORDER);
            assert_stats_consistent(fa);
        });
    }
}

#[test]
fn release_reserved_gives_frames_to_buddy() {
    let l = Layout {
        ram: HOLEY.ram,
        reserved: &[(0x1000_3000, 0x1010_0000), (0x2000_0000, 0x2000_5000)],
    };
    with_fa(&l, 10, |fa| {
        let before = fa.stats();
        fa.release_reserved(Pfn(0x20000), 5).unwrap();
        assert_eq!(fa.stats().reserved, before.reserved - 5);
        assert_eq!(fa.stats().free, before.free + 5);
        // Now the second range is free and coalesced into order-10 blocks.
        assert_eq!(fa.stats().free_per_order[10], 2);
        assert_eq!(
            fa.release_reserved(Pfn(0x20000), 1),
            Err(MmError::NotReserved { pfn: Pfn(0x20000) })
        );
        // Spanning the hole is refused before any change.
        assert_eq!(
            fa.release_reserved(Pfn(0x100ff), 2),
            Err(MmError::NotRam { pfn: Pfn(0x10100) })
        );
        assert_eq!(fa.page_flags(Pfn(0x100ff)), Ok(PageFlags::RESERVED));
        fa.release_reserved(Pfn(0x10003), 0xfd).unwrap();
        assert_eq!(fa.stats().reserved, 0);
        assert_eq!(fa.release_reserved(Pfn(0x10003), 0), Ok(()));
        assert_stats_consistent(fa);
    });
}

#[test]
fn stats_display_for_the_banner() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let s = format!("{}", fa.stats());
        assert_eq!(
            s,
            "mm: 4096 KiB total, 4096 KiB free, 0 KiB deferred, 0 KiB reserved, 0 KiB allocated, 0 bad pages; free blocks by order: 0 0 0 0 0 0 0 0 0 0 1"
        );
    });
}

#[test]
fn max_order_build_constant() {
    #[cfg(not(feature = "max-order-8"))]
    assert_eq!(MAX_ORDER, 10);
    #[cfg(feature = "max-order-8")]
    assert_eq!(MAX_ORDER, 8);
}

#[test]
fn private_on_a_contig_tail_is_a_bad_page() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        let p = fa.alloc_pages(4).unwrap();
        fa.set_page_private(p.add(9), 7).unwrap();
        let err = fa.free_pages(p, 4).unwrap_err();
        assert!(
            matches!(err, MmError::BadPage(b) if b.pfn == p.add(9) && b.reason == BadPageReason::PrivateSet)
        );
        // Cleared private words let later frees skip the tail scan again; still correct.
        let q = fa.alloc_pages(4).unwrap();
        fa.set_page_private(q, 1).unwrap();
        fa.set_page_private(q, 0).unwrap();
        fa.free_pages(q, 4).unwrap();
        assert_eq!(fa.stats().bad, 16);
        assert_stats_consistent(fa);
    });
}

#[test]
fn full_scan_frees_clean_blocks() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        fa.set_full_scan(true);
        let p = fa.alloc_pages(10).unwrap();
        fa.free_pages(p, 10).unwrap();
        assert_eq!(fa.stats().free_per_order[10], 1);
    });
}

#[test]
fn alloc_avoiding_finds_the_first_gap_between_sorted_ranges() {
    let mut mb = memblock(&Layout {
        ram: &[(BASE, BASE + 64 * MIB)],
        reserved: &[(BASE, BASE + MIB)],
    });
    mb.set_alloc_only_in(&[PhysRange::new(PhysAddr(BASE), MIB)])
        .unwrap();
    // Preserved: [1M, 1M+8K) and [1M+12K, 3M): the first 12 KiB gap is at 1M+8K (one page
    // is too small), so 16 KiB goes right after the second range.
    let avoid = [
        PhysRange::new(PhysAddr(BASE + MIB), 0x2000),
        PhysRange::new(PhysAddr(BASE + MIB + 0x3000), 2 * MIB - 0x3000),
    ];
    assert_eq!(
        mb.alloc_avoiding(0x4000, avoid.iter().copied()),
        Ok(PhysAddr(BASE + 3 * MIB))
    );
    assert_eq!(
        mb.alloc_avoiding(0x1000, avoid.iter().copied()),
        Ok(PhysAddr(BASE + MIB + 0x2000)),
        "a one-page gap fits one page"
    );
    assert!(mb.reserved().any(|r| r.contains(PhysAddr(BASE + 3 * MIB))));
    assert_eq!(
        mb.alloc_avoiding(64 * MIB, avoid.iter().copied()),
        Err(MmError::NoRange {
            size: 64 * MIB,
            align: PAGE_SIZE
        })
    );
}
