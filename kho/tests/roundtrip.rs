//! Round trips through two simulated images over one arena: the exact set, orders, types and
//! refcount patterns come back, and freeing them never trips mm's bad-page checks.

mod common;

use common::fdt_tools::check_fdt_with_tools;
use common::sim::*;
use kho::{Arena, BlockType, PhysMem};
use mm::Pfn;
use proptest::prelude::*;

fn leak_arena() -> &'static Arena {
    crate::common::keep(Box::new(Arena::new(RAM_BASE, RAM_SIZE)))
}

fn fixed_mix() -> Vec<Op> {
    use Op::*;
    vec![
        Folio(0),
        Folio(3),
        Folio(10),
        Contig(0),
        Contig(4),
        Split(2),
        Split(5),
        Phys(3),
        SplitAfterPreserve(3),
        Contig(1),
        UnpreserveLast,
        Folio(2),
        SplitAfterPreserve(9),
        Contig(10),
        Split(0),
        Phys(0),
    ]
}

fn run(ops: &[Op], max1: u32, max2: u32) -> (usize, u64) {
    run_as(ops, max1, max2, Format::V2)
}

fn run_as(ops: &[Op], max1: u32, max2: u32, format: Format) -> (usize, u64) {
    let arena = leak_arena();
    let mut out = outgoing(arena, max1);
    out.preserve_firmware();
    for &op in ops {
        out.apply(op);
    }
    out.check_recorded();
    let boot = out.handover_as(arena, format);
    let expect = out.expect.clone();
    let mut inc = incoming(arena, &boot, max2).unwrap();
    assert_eq!(
        inc.format,
        match format {
            Format::V1 => kho::AbiVersion::V1,
            Format::V2 => kho::AbiVersion::V2,
            Format::LinuxV4 => kho::AbiVersion::LinuxV4,
        }
    );
    let mut got: Vec<_> = inc
        .inc
        .unclaimed_blocks()
        .map(|b| (b.phys, b.order, b.kind))
        .collect();
    got.sort();
    let mut want: Vec<_> = expect.iter().map(|e| (e.phys, e.order, e.kind)).collect();
    want.sort();
    assert_eq!(got, want, "restored set differs");
    let before = inc.fa.stats();
    inc.restore_all(arena, &expect);
    let mid = inc.fa.stats();
    let preserved_frames: u64 = expect.iter().map(|e| 1u64 << e.order).sum();
    assert_eq!(
        mid.allocated - before.allocated,
        preserved_frames,
        "managed-page accounting"
    );
    assert_eq!(before.reserved - mid.reserved, preserved_frames);
    let free_only: Vec<_> = expect
        .iter()
        .copied()
        .filter(|e| e.phys < FIRMWARE.start.0 || e.phys >= FIRMWARE.end.0)
        .collect();
    inc.free_all(&free_only);
    let IncomingImage {
        mut fa,
        inc: handle,
        ..
    } = inc;
    let meta = handle.finish(&mut fa).unwrap();
    // KHO FDT + scratch array + the root(s) + a root-to-leaf path per type present (v2: the
    // CONTIG and SPLIT keys part at the root; v1: the main tree and, with SPLIT, the split).
    let split = expect.iter().any(|e| e.kind == BlockType::Split);
    let contig = expect.iter().any(|e| e.kind == BlockType::Contig);
    let least = match format {
        Format::V2 => 2 + 1 + 5 * (u64::from(split) + u64::from(contig)),
        Format::V1 => 2 + 2 + 5 * (1 + u64::from(split)),
        // The KHO FDT is a block and the array lies in scratch: the tree alone.
        Format::LinuxV4 => 1 + 5,
    };
    assert!(
        meta >= least,
        "tree pages + KHO FDT + scratch array returned, got {meta} < {least}"
    );
    (expect.len(), meta)
}

#[test]
fn mixed_set_round_trips_with_types_and_refcounts() {
    let (n, _) = run(&fixed_mix(), 10, 10);
    assert!(n >= 15, "{n}");
}

#[test]
fn next_image_with_smaller_max_order_restores_and_frees_big_blocks() {
    run(&fixed_mix(), 10, 8);
}

#[test]
fn previous_release_v1_handover_restores_with_types_and_refcounts() {
    let (n, _) = run_as(&fixed_mix(), 10, 10, Format::V1);
    assert!(n >= 15, "{n}");
    run_as(&fixed_mix(), 10, 8, Format::V1);
}

#[test]
fn one_tree_holds_each_block_once_and_fewer_pages_than_two() {
    // The blocks of the fixed mix, recorded afresh (no empty nodes left by unpreserve or
    // split-after-preserve) in this release's one tree and in the previous release's two.
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    for op in fixed_mix() {
        out.apply(op);
    }
    let blocks = out.blocks();
    assert!(blocks.iter().any(|b| b.kind == BlockType::Split));
    let meta = Arena::new(RAM_BASE, 4 << 20);
    let r = meta.region();
    let mut src = kho::testing::BumpPages::new(r.start.0, r.end.0);
    let mut set = kho::testing::PreservedSet::new(&meta, &mut src).unwrap();
    for b in &blocks {
        set.insert(&meta, &mut src, b.phys, b.order, b.kind)
            .unwrap();
    }
    let (_, v1) = kho::testing::write_v1_handover(&meta, &mut src, &blocks, &[]).unwrap();
    // Each (type, order) has its own path in v2; v1 adds a root and, for every order that
    // has SPLIT blocks, a path in each tree.
    assert!(
        set.page_count() < v1.len(),
        "v2 {} tree pages, v1 {}",
        set.page_count(),
        v1.len()
    );
    println!("tree pages: v2 {}, v1 {}", set.page_count(), v1.len());
}

#[test]
fn split_type_survives_round_trip() {
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    let p = out.fa.alloc_pages(4).unwrap();
    out.fa.split_page(p, 4).unwrap();
    out.kho.preserve_pages(&mut out.fa, p, 16).unwrap();
    assert_eq!(
        out.kho.block_type(p.0 << 12, 4).unwrap(),
        Some(BlockType::Split)
    );
    let boot = out.handover(arena);
    let mut inc = incoming(arena, &boot, 10).unwrap();
    let b: Vec<_> = inc.inc.unclaimed_blocks().collect();
    assert_eq!(b.len(), 1);
    assert_eq!(
        (b[0].phys, b[0].order, b[0].kind),
        (p.0 << 12, 4, BlockType::Split)
    );
    assert_eq!(
        inc.inc.restore_folio(&mut inc.fa, p.0 << 12),
        Err(kho::IncomingError::SplitNotFolio { phys: p.0 << 12 })
    );
    inc.inc.restore_pages(&mut inc.fa, p.0 << 12, 16).unwrap();
    for i in 0..16 {
        assert_eq!(inc.fa.page_ref_count(Pfn(p.0 + i)).unwrap(), 1);
    }
}

#[test]
fn contig_block_with_tail_refs_is_a_bad_page() {
    // The old restore gave every page of a CONTIG block refcount 1; mm must call that bad.
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    let p = out.fa.alloc_pages(3).unwrap();
    out.kho.preserve_pages(&mut out.fa, p, 8).unwrap();
    let boot = out.handover(arena);
    let mut inc = incoming(arena, &boot, 10).unwrap();
    inc.inc.restore_pages(&mut inc.fa, p.0 << 12, 8).unwrap();
    for i in 1..8 {
        inc.fa.set_page_refcount(Pfn(p.0 + i), 1).unwrap();
    }
    assert!(matches!(
        inc.fa.free_pages(p, 3),
        Err(mm::MmError::BadPage(_))
    ));
    assert!(inc.fa.stats().bad > 0);
}

#[test]
fn second_restore_and_unknown_addresses_are_refused() {
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    let f = out.fa.alloc_folio(2).unwrap();
    out.kho.preserve_folio(&mut out.fa, f).unwrap();
    let boot = out.handover(arena);
    let mut inc = incoming(arena, &boot, 10).unwrap();
    let phys = f.0 << 12;
    inc.inc.restore_folio(&mut inc.fa, phys).unwrap();
    assert_eq!(
        inc.inc.restore_folio(&mut inc.fa, phys),
        Err(kho::IncomingError::AlreadyRestored { phys })
    );
    assert_eq!(
        inc.inc.restore_folio(&mut inc.fa, phys + 4096),
        Err(kho::IncomingError::NotPreserved { phys: phys + 4096 })
    );
    // Not RAM at all: refused before any descriptor is read.
    assert_eq!(
        inc.inc.restore_folio(&mut inc.fa, 0x1000),
        Err(kho::IncomingError::NotPreserved { phys: 0x1000 })
    );
}

/// An incoming image over 200 preserved blocks (order 0 CONTIG and SPLIT, order 2 CONTIG):
/// more than three words of kho's claimed bitmap. Returns it, the blocks and the model.
fn many_blocks() -> (IncomingImage, Vec<kho::Block>, Vec<Expect>) {
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    for i in 0..200 {
        out.apply(match i % 5 {
            0 => Op::Split(0),
            1 => Op::Contig(2),
            _ => Op::Contig(0),
        });
    }
    let boot = out.handover(arena);
    let inc = incoming(arena, &boot, 10).unwrap();
    let all: Vec<_> = inc.inc.unclaimed_blocks().collect();
    assert_eq!(all.len(), 200);
    (inc, all, out.expect.clone())
}

#[test]
fn unclaimed_runs_restore_the_rest_in_order_between_claimed_blocks() {
    let (mut inc, all, expect) = many_blocks();
    // Claimed first: one inside the first word, the last of it and the first of the next.
    for i in [5, 63, 64] {
        let b = all[i];
        inc.inc
            .restore_pages(&mut inc.fa, b.phys, 1 << b.order)
            .unwrap();
    }
    let rest: Vec<_> = inc.inc.unclaimed_blocks().collect();
    let (mut runs, mut firsts) = (Vec::new(), Vec::new());
    let pages = inc
        .inc
        .restore_unclaimed_runs(&mut inc.fa, |i, r| {
            firsts.push(i);
            runs.push(r.to_vec())
        })
        .unwrap();
    // Runs break only at claimed blocks: [0, 5), [6, 63), [65, 200).
    assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [5, 57, 135]);
    assert_eq!(firsts, [0, 6, 65]);
    // Each run is the validated list's blocks from its index on.
    for (&i, r) in firsts.iter().zip(&runs) {
        assert_eq!(&inc.inc.blocks()[i..i + r.len()], &r[..]);
    }
    assert_eq!(inc.inc.blocks(), &all[..]);
    assert_eq!(runs.concat(), rest);
    assert_eq!(pages, rest.iter().map(|b| 1u64 << b.order).sum::<u64>());
    assert_eq!((inc.inc.unclaimed(), inc.inc.unclaimed_pages()), (0, 0));
    assert_eq!(inc.inc.restored(), 200);
    for b in &rest {
        let head = Pfn(b.phys >> 12);
        assert_eq!(inc.fa.page_ref_count(head), Ok(1), "{b:?}");
        for i in 1..1u64 << b.order {
            let want = u32::from(b.kind == BlockType::Split);
            assert_eq!(inc.fa.page_ref_count(Pfn(head.0 + i)), Ok(want), "{b:?}");
        }
    }
    // Nothing is left: no run, no page.
    assert_eq!(
        inc.inc
            .restore_unclaimed_runs(&mut inc.fa, |_, _| panic!("a run of nothing")),
        Ok(0)
    );
    inc.free_all(&expect);
}

/// An incoming image over 3 order-2 CONTIG blocks and 130 order-0 blocks of one type
/// (`split`): once the order-2 ones are claimed, the rest takes restore's uniform path.
fn uniform_blocks(split: bool) -> (IncomingImage, Vec<kho::Block>, Vec<Expect>) {
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    for i in 0..133 {
        out.apply(match i {
            0..3 => Op::Contig(2),
            _ if split => Op::Split(0),
            _ => Op::Contig(0),
        });
    }
    let boot = out.handover(arena);
    let inc = incoming(arena, &boot, 10).unwrap();
    let all: Vec<_> = inc.inc.unclaimed_blocks().collect();
    assert_eq!(all.len(), 133);
    (inc, all, out.expect.clone())
}

/// Every frame of `blocks` as `(flags, refcount, private)`.
fn frames_of(fa: &mm::FrameAllocator<'_>, blocks: &[kho::Block]) -> Vec<(u64, u32, u64)> {
    blocks
        .iter()
        .flat_map(|b| (0..1u64 << b.order).map(move |i| Pfn((b.phys >> 12) + i)))
        .map(|p| {
            let flags = fa.page_flags(p).unwrap().bits().into();
            (
                flags,
                fa.page_ref_count(p).unwrap(),
                fa.page_private(p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn uniform_order0_runs_restore_as_block_by_block() {
    for split in [false, true] {
        let (mut fast, all, _) = uniform_blocks(split);
        let (mut slow, twin, _) = uniform_blocks(split);
        assert_eq!(all, twin);
        // The order-2 blocks and two order-0 ones first (runs break there), on both.
        let first: Vec<_> = (0..all.len())
            .filter(|&i| all[i].order > 0 || i == 40 || i == 100)
            .collect();
        assert_eq!(first.len(), 5);
        for &i in &first {
            let b = all[i];
            for inc in [&mut fast, &mut slow] {
                inc.inc
                    .restore_pages(&mut inc.fa, b.phys, 1 << b.order)
                    .unwrap();
            }
        }
        let rest: Vec<_> = fast.inc.unclaimed_blocks().collect();
        assert!(rest
            .iter()
            .all(|b| b.order == 0 && (b.kind == BlockType::Split) == split));
        let mut runs = Vec::new();
        let pages = fast
            .inc
            .restore_unclaimed_runs(&mut fast.fa, |i, r| runs.push((i, r.len())))
            .unwrap();
        // Runs are the stretches between the blocks claimed first.
        let mut want = Vec::new();
        let mut lo = 0;
        for &i in first.iter().chain([&all.len()]) {
            if i > lo {
                want.push((lo, i - lo));
            }
            lo = i + 1;
        }
        assert_eq!(runs, want);
        assert_eq!(pages, rest.len() as u64);
        for b in &rest {
            slow.inc.restore_pages(&mut slow.fa, b.phys, 1).unwrap();
        }
        assert_eq!(fast.fa.stats(), slow.fa.stats(), "split {split}");
        assert_eq!(frames_of(&fast.fa, &all), frames_of(&slow.fa, &all));
        assert_eq!(fast.inc.unclaimed(), 0);
        assert_eq!(fast.inc.restored(), slow.inc.restored());
    }
}

#[test]
fn uniform_order0_restore_stops_at_a_refused_block() {
    let (mut inc, all, _) = uniform_blocks(true);
    for b in all.iter().filter(|b| b.order > 0) {
        inc.inc.restore_pages(&mut inc.fa, b.phys, 4).unwrap();
    }
    // Block 70 claimed behind kho's back: refused as on the per-block path.
    assert!(all[70..].iter().all(|b| b.order == 0));
    let pfn = Pfn(all[70].phys >> 12);
    inc.fa.claim_reserved(pfn, 0, mm::BlockKind::Split).unwrap();
    let mut got = Vec::new();
    assert_eq!(
        inc.inc.restore_unclaimed(&mut inc.fa, |b| got.push(b)),
        Err(kho::IncomingError::Mm(mm::MmError::NotReserved { pfn }))
    );
    let before: Vec<_> = all[..70].iter().filter(|b| b.order == 0).copied().collect();
    assert_eq!(got, before);
    assert_eq!(inc.inc.unclaimed(), all.len() - 70);
    assert_eq!(inc.inc.unclaimed_pages(), (all.len() - 70) as u64);
    // The blocks after it are still restored one by one; the refused one stays unclaimed.
    for b in &all[71..] {
        inc.inc.restore_pages(&mut inc.fa, b.phys, 1).unwrap();
        assert_eq!(inc.fa.page_ref_count(Pfn(b.phys >> 12)), Ok(1));
    }
    assert_eq!(inc.inc.unclaimed_blocks().collect::<Vec<_>>(), [all[70]]);
}

#[test]
fn unclaimed_restore_stops_at_a_refused_block_with_the_bitmap_exact() {
    let (mut inc, all, _) = many_blocks();
    inc.inc.restore_pages(&mut inc.fa, all[70].phys, 1).unwrap();
    // Block 100 claimed behind kho's back: mm refuses kho's claim of it.
    let bad = all[100];
    let pfn = Pfn(bad.phys >> 12);
    inc.fa
        .claim_reserved(pfn, bad.order, mm::BlockKind::Contig)
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(
        inc.inc.restore_unclaimed(&mut inc.fa, |b| got.push(b)),
        Err(kho::IncomingError::Mm(mm::MmError::NotReserved { pfn }))
    );
    let before: Vec<_> = (0..100).filter(|&i| i != 70).map(|i| all[i]).collect();
    assert_eq!(got, before);
    assert!(all[..100]
        .iter()
        .all(|b| !inc.inc.has_block(b.phys, b.order)));
    assert!(all[100..]
        .iter()
        .all(|b| inc.inc.has_block(b.phys, b.order)));
    assert_eq!(inc.inc.restored(), 100);
    assert_eq!(inc.inc.unclaimed(), 100);
    assert_eq!(
        inc.inc.unclaimed_pages(),
        all[100..].iter().map(|b| 1u64 << b.order).sum::<u64>()
    );
    assert_eq!(
        inc.inc.unclaimed_blocks().collect::<Vec<_>>(),
        all[100..].to_vec()
    );
}

#[test]
fn unclaimed_blocks_are_released_with_a_count() {
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    for o in [0, 3, 10] {
        out.apply(Op::Contig(o));
    }
    let boot = out.handover(arena);
    let mut inc = incoming(arena, &boot, 8).unwrap();
    let free0 = inc.fa.stats().free;
    assert_eq!(inc.inc.release_unclaimed(&mut inc.fa).unwrap(), 3);
    assert_eq!(inc.fa.stats().free - free0, 1 + 8 + 1024);
}

#[test]
fn client_blob_is_found_by_name_in_the_next_image() {
    let arena = leak_arena();
    let mut out = outgoing(arena, 10);
    let p = out.fa.alloc_pages(1).unwrap();
    let phys = p.0 << 12;
    assert!(matches!(
        out.kho.add_client("workload", phys, 100),
        Err(kho::KhoError::ClientNotPreserved { .. })
    ));
    out.kho.preserve_pages(&mut out.fa, p, 2).unwrap();
    out.kho.add_client("workload", phys, 8000).unwrap();
    assert!(matches!(
        out.kho.add_client("workload", phys, 8),
        Err(kho::KhoError::BadClient { .. })
    ));
    assert!(matches!(
        out.kho.add_client("1bad", phys, 8),
        Err(kho::KhoError::BadClient { .. })
    ));
    let boot = out.handover(arena);
    let h = out.kho.handover().unwrap();
    let fdt = kho::Arena::region(arena);
    assert!(fdt.contains_range(&h.kho_fdt));
    let bytes: Vec<u8> = {
        let ptr = arena
            .ptr(h.kho_fdt.start.0, h.kho_fdt.size() as usize)
            .unwrap();
        // SAFETY: the arena owns these bytes and nothing writes them during the copy.
        unsafe { std::slice::from_raw_parts(ptr, h.kho_fdt.size() as usize) }.to_vec()
    };
    check_fdt_with_tools(&bytes, "kho-fdt");
    check_fdt_with_tools(&boot, "boot-with-handover");
    let inc = incoming(arena, &boot, 10).unwrap();
    assert_eq!(inc.inc.client("workload"), Some((phys, 8000)));
    assert_eq!(inc.inc.client("other"), None);
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..=10).prop_map(Op::Folio),
        (0u32..=10).prop_map(Op::Contig),
        (0u32..=6).prop_map(Op::Split),
        (0u32..=6).prop_map(Op::Phys),
        (1u32..=6).prop_map(Op::SplitAfterPreserve),
        Just(Op::UnpreserveLast),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 24 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_mixes_round_trip(ops in proptest::collection::vec(op_strategy(), 1..40), small in any::<bool>(), v1 in any::<bool>()) {
        run_as(&ops, 10, if small { 8 } else { 10 }, if v1 { Format::V1 } else { Format::V2 });
    }
}
