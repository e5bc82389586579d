//! Tests of deferred descriptor init: what `new_deferred` writes and what it leaves, and
//! that allocating into, freeing into and merging beside deferred chunks stays exact.
//!
//! Descriptor storage starts as garbage (a pattern that looks like free blocks and
//! reserved frames): a descriptor read before it is written would show up as a wrong
//! free set, a wrong count or a changed garbage byte.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;

use proptest::prelude::*;

use crate::frame::CHUNK_ORDER;
use crate::tests::assert_stats_consistent as assert_consistent;
use crate::*;

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const CHUNK: u64 = 1 << CHUNK_ORDER;

/// A descriptor full of `byte`: for 0x01 it reads as a FREE block of order 1 with links
/// to index 0x01010101, the worst thing a stray read could believe.
fn garbage(byte: u8) -> Page {
    // SAFETY: `Page` is `repr(C)` with only integer fields (an `AtomicU32` is an integer)
    // and no padding (size asserted 32): every 32-byte pattern is a valid `Page`.
    unsafe { core::mem::transmute::<[u8; 32], Page>([byte; 32]) }
}

pub(crate) fn raw(p: &Page) -> [u8; 32] {
    // SAFETY: as in `garbage`: 32 initialised bytes, no padding.
    unsafe { core::mem::transmute_copy::<Page, [u8; 32]>(p) }
}

pub(crate) fn memblock(ram: &[(u64, u64)], reserved: &[(u64, u64)]) -> Memblock {
    let mut mb = Memblock::new();
    for &(s, e) in ram {
        mb.add_memory(PhysRange::from_bounds(s, e)).unwrap();
    }
    for &(s, e) in reserved {
        mb.reserve(PhysRange::from_bounds(s, e)).unwrap();
    }
    mb
}

/// Storage for a deferred build: garbage descriptors and a garbage bitmap.
pub(crate) fn storage(mb: &Memblock, byte: u8) -> (Vec<Page>, Vec<u64>) {
    let need = DeferredStorage::for_memblock(mb);
    (
        (0..need.descriptors).map(|_| garbage(byte)).collect(),
        vec![u64::MAX; need.chunk_words],
    )
}

fn ranges(v: &[(u64, u64)]) -> Vec<PhysRange> {
    v.iter()
        .map(|&(s, e)| PhysRange::from_bounds(s, e))
        .collect()
}

pub(crate) fn free_set(fa: &FrameAllocator) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = fa.free_blocks().map(|(p, o)| (p.0, o)).collect();
    v.sort_unstable();
    v
}

/// The eager build of the same memory, preserved ranges as `reserve_noinit`.
pub(crate) fn eager_free_set(
    ram: &[(u64, u64)],
    reserved: &[(u64, u64)],
    preserved: &[(u64, u64)],
) -> Vec<(u64, u32)> {
    let mut mb = memblock(ram, reserved);
    for &(s, e) in preserved {
        mb.reserve_noinit(PhysRange::from_bounds(s, e)).unwrap();
    }
    let mut st: Vec<MaybeUninit<Page>> = (0..FrameAllocator::descriptors_needed(&mb))
        .map(|_| MaybeUninit::uninit())
        .collect();
    let fa = FrameAllocator::new(&mb, &mut st, MAX_ORDER).unwrap();
    free_set(&fa)
}

pub(crate) const BASE: u64 = 0x4000_0000;
pub(crate) const BASE_PFN: u64 = BASE >> PAGE_SHIFT;

/// 64 MiB of RAM (16 chunks), the image in chunk 0, two preserved pieces in chunks 5 and 9.
pub(crate) const RAM: &[(u64, u64)] = &[(BASE, BASE + 64 * MIB)];
pub(crate) const IMAGE: &[(u64, u64)] = &[(BASE, BASE + 0x3000)];
const PRESERVED: &[(u64, u64)] = &[
    (BASE + 20 * MIB + 0x5000, BASE + 20 * MIB + 0x6000),
    (BASE + 36 * MIB, BASE + 37 * MIB),
];

#[test]
fn deferred_build_writes_only_the_touched_chunks() {
    let mb = memblock(RAM, IMAGE);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let fa = FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(PRESERVED))
        .unwrap();
    let s = fa.stats();
    assert_eq!(s.total, 16 * CHUNK);
    assert_eq!(s.deferred, 13 * CHUNK, "chunks 0, 5 and 9 initialised");
    assert_eq!(s.reserved, 3 + 1 + 256);
    assert_eq!(s.free, 3 * CHUNK - 260);
    assert_consistent(&fa);
    assert_eq!(
        fa.page_flags(Pfn(BASE_PFN + 5 * CHUNK + 5)),
        Ok(PageFlags::RESERVED | PageFlags::NOINIT)
    );
    assert_eq!(fa.page_flags(Pfn(BASE_PFN)), Ok(PageFlags::RESERVED));
    let deferred = Pfn(BASE_PFN + 7 * CHUNK + 3);
    assert_eq!(
        fa.page_flags(deferred),
        Err(MmError::Deferred { pfn: deferred })
    );
    assert!(fa.contains(deferred), "a deferred frame is still RAM");
    let _ = fa;
    // Not one byte of an untouched chunk's descriptors was written.
    for c in [1u64, 2, 3, 4, 6, 7, 8, 10, 15] {
        for p in &pages[(c * CHUNK) as usize..((c + 1) * CHUNK) as usize] {
            assert_eq!(raw(p), [0x01; 32], "chunk {c}");
        }
    }
}

#[test]
fn allocation_initialises_deferred_chunks_on_demand() {
    let mb = memblock(RAM, IMAGE);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let mut fa =
        FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(PRESERVED))
            .unwrap();
    let free0 = fa.stats().free + fa.stats().deferred;
    let mut seen = BTreeSet::new();
    let mut got = 0u64;
    for order in [MAX_ORDER, 3, 0] {
        while let Ok(p) = fa.alloc_pages(order) {
            for f in p.0..p.0 + (1 << order) {
                assert!(seen.insert(f), "frame {f:#x} handed out twice");
                for &(s, e) in PRESERVED.iter().chain(IMAGE) {
                    assert!(!(s >> PAGE_SHIFT..e.div_ceil(4096)).contains(&f));
                }
            }
            got += 1 << order;
            assert_consistent(&fa);
        }
    }
    assert_eq!(got, free0, "every free or deferred frame, once");
    assert_eq!(fa.stats().deferred, 0);
    assert_eq!(fa.alloc_pages(0), Err(MmError::OutOfMemory { order: 0 }));
}

#[test]
fn frees_into_deferred_memory_are_refused_and_change_nothing() {
    let mb = memblock(RAM, IMAGE);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let mut fa =
        FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(PRESERVED))
            .unwrap();
    let before = fa.stats();
    let d = Pfn(BASE_PFN + 11 * CHUNK);
    assert_eq!(fa.free_pages(d, 0), Err(MmError::Deferred { pfn: d }));
    assert_eq!(fa.put_page(d), Err(MmError::Deferred { pfn: d }));
    assert_eq!(fa.get_page(d), Err(MmError::Deferred { pfn: d }));
    assert_eq!(
        fa.claim_reserved(d, 0, BlockKind::Contig),
        Err(MmError::Deferred { pfn: d })
    );
    // A block larger than a chunk that starts in an initialised one and runs into a
    // deferred one.
    let big = Pfn(BASE_PFN);
    assert_eq!(
        fa.claim_reserved(big, CHUNK_ORDER + 2, BlockKind::Contig),
        Err(MmError::Deferred {
            pfn: Pfn(BASE_PFN + CHUNK)
        })
    );
    assert_eq!(fa.stats(), before);
}

#[test]
fn freed_pages_merge_beside_a_deferred_chunk_without_reading_it() {
    // RAM that starts mid-chunk: the first chunk is partial, its neighbour deferred.
    let ram = &[(BASE + 0x1f_0000, BASE + 16 * MIB)];
    let preserved = &[(BASE + 0x20_0000, BASE + 0x20_1000)];
    let mb = memblock(ram, &[]);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let mut fa =
        FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(preserved))
            .unwrap();
    assert_eq!(fa.stats().deferred, 3 * CHUNK);
    // Take every page of the initialised chunk one by one, give them back in reverse.
    let n = fa.stats().free;
    let got: Vec<Pfn> = (0..n).map(|_| fa.alloc_pages(0).unwrap()).collect();
    assert_eq!(fa.stats().deferred, 3 * CHUNK, "no chunk initialised yet");
    for p in got.iter().rev() {
        fa.free_pages(*p, 0).unwrap();
    }
    assert_consistent(&fa);
    assert_eq!(free_set(&fa), {
        let mut v = eager_free_set(&[(BASE + 0x1f_0000, BASE + 0x40_0000)], &[], preserved);
        v.sort_unstable();
        v
    });
    // The deferred chunks become one order-10 block each, merged with nothing.
    assert_eq!(fa.init_deferred(usize::MAX), 3 * CHUNK);
    assert_eq!(fa.init_deferred(usize::MAX), 0);
    let top: Vec<(u64, u32)> = free_set(&fa)
        .into_iter()
        .filter(|&(_, o)| o == 10)
        .collect();
    assert_eq!(
        top,
        (1..4)
            .map(|c| (BASE_PFN + c * CHUNK, 10))
            .collect::<Vec<_>>()
    );
    assert_consistent(&fa);
}

#[test]
fn preserved_ranges_must_be_sorted_disjoint_ram() {
    let mb = memblock(RAM, IMAGE);
    let cases: [(&[(u64, u64)], u64); 3] = [
        (
            &[
                (BASE + 8 * MIB, BASE + 9 * MIB),
                (BASE + 4 * MIB, BASE + 5 * MIB),
            ],
            BASE + 4 * MIB,
        ),
        (
            &[
                (BASE + 8 * MIB, BASE + 9 * MIB),
                (BASE + 9 * MIB - 4096, BASE + 10 * MIB),
            ],
            BASE + 9 * MIB - 4096,
        ),
        (&[(BASE + 63 * MIB, BASE + 65 * MIB)], BASE + 63 * MIB),
    ];
    for (bad, at) in cases {
        let (mut pages, mut bits) = storage(&mb, 0);
        assert_eq!(
            FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(bad))
                .unwrap_err(),
            MmError::BadPreservedRange {
                pfn: PhysAddr(at).pfn()
            }
        );
    }
}

#[test]
fn hundreds_of_thousands_of_preserved_pages_need_no_table() {
    // 2 GiB of RAM, every other page of its upper GiB preserved: 131,072 ranges.
    let ram = &[(BASE, BASE + 2048 * MIB)];
    let mb = memblock(ram, &[(BASE, BASE + 2 * MIB)]);
    let preserved: Vec<PhysRange> = (0..131_072u64)
        .map(|i| PhysRange::new(PhysAddr(BASE + 1024 * MIB + i * 0x2000), 0x1000))
        .collect();
    let (mut pages, mut bits) = storage(&mb, 0x5a);
    let mut fa = FrameAllocator::new_deferred(
        &mb,
        &mut pages,
        &mut bits,
        MAX_ORDER,
        preserved.iter().copied(),
    )
    .unwrap();
    let s = fa.stats();
    assert_eq!(s.reserved, 131_072 + 512);
    assert_eq!(s.deferred, 255 * CHUNK, "the lower GiB but its first chunk");
    assert_eq!(
        s.free_per_order[0], 131_072,
        "one free page between two preserved"
    );
    assert_consistent(&fa);
    fa.init_deferred(usize::MAX);
    assert_eq!(fa.stats().free, 2048 * MIB / 4096 - 131_072 - 512);
    assert_consistent(&fa);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Deferred build + init of everything gives exactly the eager build's free lists,
    /// whatever RAM, reservations and preserved ranges look like.
    #[test]
    fn deferred_then_init_all_equals_eager(
        ram_parts in prop::collection::vec((0u64..6, 1u64..3000), 1..4),
        res in prop::collection::vec((0u64..20_000, 1u64..40), 0..6),
        pres in prop::collection::vec((0u64..20_000, 0u32..4), 0..30),
        partial in 0usize..4,
    ) {
        // RAM ranges in frames: gaps of g chunks and odd lengths.
        let mut ram = Vec::new();
        let mut at = 0x40_000u64 + 7;
        for (gap, len) in ram_parts {
            at += gap * CHUNK + 3;
            ram.push((at << PAGE_SHIFT, (at + len) << PAGE_SHIFT));
            at += len;
        }
        let lo = ram[0].0 >> PAGE_SHIFT;
        let in_ram = |f: u64, n: u64| ram.iter().any(|&(s, e)| s >> PAGE_SHIFT <= f && f + n <= e >> PAGE_SHIFT);
        let mut reserved: Vec<(u64, u64)> = res.iter().map(|&(o, n)| ((lo + o) << PAGE_SHIFT, (lo + o + n) << PAGE_SHIFT)).collect();
        reserved.truncate(4);
        // Preserved: aligned blocks in RAM, sorted, disjoint, clear of reservations.
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        let mut sorted = pres.clone();
        sorted.sort_unstable();
        for (o, order) in sorted {
            let n = 1u64 << order;
            let f = (lo + o) & !(n - 1);
            let overl = |a: u64, b: u64| reserved.iter().any(|&(s, e)| a < e >> PAGE_SHIFT && s >> PAGE_SHIFT < b);
            if in_ram(f, n) && blocks.last().is_none_or(|&(_, e)| e >> PAGE_SHIFT <= f) && !overl(f, f + n) {
                blocks.push((f << PAGE_SHIFT, (f + n) << PAGE_SHIFT));
            }
        }
        let want = eager_free_set(&ram, &reserved, &blocks);
        let mb = memblock(&ram, &reserved);
        let (mut pages, mut bits) = storage(&mb, 0x01);
        let mut fa = FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(&blocks)).unwrap();
        // Some allocations first: they initialise chunks on demand.
        let mut held = Vec::new();
        for _ in 0..partial {
            if let Ok(p) = fa.alloc_pages(2) { held.push(p); }
        }
        for p in held { fa.free_pages(p, 2).unwrap(); }
        fa.init_deferred(usize::MAX);
        prop_assert_eq!(fa.stats().deferred, 0);
        assert_consistent(&fa);
        prop_assert_eq!(free_set(&fa), want);
        prop_assert_eq!(fa.stats().reserved, fa.stats().total - fa.stats().free);
    }
}

#[test]
fn chunks_wholly_inside_a_reservation_are_not_written_until_init() {
    // Scratch-like: 16 MiB reserved from chunk 2 on (4 whole chunks), plus a partial edge.
    let reserved = &[(BASE + 8 * MIB, BASE + 24 * MIB + 0x3000)];
    let mb = memblock(RAM, reserved);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let mut fa =
        FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, ranges(&[])).unwrap();
    let s = fa.stats();
    assert_eq!(s.reserved, 4 * CHUNK + 3);
    assert_eq!(s.deferred, 11 * CHUNK, "16 chunks - 4 reserved - 1 edge");
    assert_eq!(s.free, CHUNK - 3, "the edge chunk's free part");
    assert_consistent(&fa);
    let inside = Pfn(BASE_PFN + 3 * CHUNK + 9);
    assert_eq!(
        fa.page_flags(inside),
        Err(MmError::Deferred { pfn: inside })
    );
    assert_eq!(
        fa.free_pages(inside, 0),
        Err(MmError::Deferred { pfn: inside })
    );
    // Allocating everything never hands out a reserved frame.
    let mut got = 0u64;
    while let Ok(p) = fa.alloc_pages(0) {
        assert!(
            !(BASE_PFN + 2 * CHUNK..BASE_PFN + 6 * CHUNK + 3).contains(&p.0),
            "{p:?}"
        );
        got += 1;
    }
    assert_eq!(got, 12 * CHUNK - 3);
    // init_deferred writes the reserved chunks as RESERVED, changing no count.
    fa.init_deferred(usize::MAX);
    assert_eq!(fa.page_flags(inside), Ok(PageFlags::RESERVED));
    assert_eq!(fa.stats().reserved, 4 * CHUNK + 3);
    assert_eq!(fa.stats().deferred, 0);
    assert_consistent(&fa);
    let _ = fa;
    // Before init_deferred ran, nothing wrote those chunks: check on a fresh build.
    let (mut pages2, mut bits2) = storage(&mb, 0x01);
    let _fa2 =
        FrameAllocator::new_deferred(&mb, &mut pages2, &mut bits2, MAX_ORDER, ranges(&[])).unwrap();
    for p in &pages2[(2 * CHUNK) as usize..(6 * CHUNK) as usize] {
        assert_eq!(raw(p), [0x01; 32]);
    }
}
