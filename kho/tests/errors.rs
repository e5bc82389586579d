//! Error paths of the outgoing side: busy after finalize, scratch refused, unpreserving what
//! is not preserved, half-way failures rolled back, split failures leaving the block intact.

mod common;

use common::sim::*;
use kho::{Arena, BlockType, KhoError};
use mm::Pfn;

fn setup() -> (&'static Arena, Outgoing) {
    let arena: &'static Arena = crate::common::keep(Box::new(Arena::new(RAM_BASE, RAM_SIZE)));
    let out = outgoing(arena, 10);
    (arena, out)
}

#[test]
fn preserves_fail_as_busy_after_finalize_until_abort() {
    let (_, mut out) = setup();
    let p = out.fa.alloc_pages(2).unwrap();
    out.kho.preserve_pages(&mut out.fa, p, 4).unwrap();
    out.kho.finalize(&mut out.fa).unwrap();
    let q = out.fa.alloc_pages(0).unwrap();
    assert_eq!(
        out.kho.preserve_pages(&mut out.fa, q, 1),
        Err(KhoError::Busy)
    );
    assert_eq!(out.kho.unpreserve_pages(p, 4), Err(KhoError::Busy));
    assert_eq!(
        out.kho.split_preserved_pages(&mut out.fa, p, 2),
        Err(KhoError::Busy)
    );
    assert_eq!(out.kho.finalize(&mut out.fa), Err(KhoError::Busy));
    let free = out.fa.stats().free;
    out.kho.abort(&mut out.fa).unwrap();
    assert!(
        out.fa.stats().free > free,
        "abort returns the KHO FDT and scratch array pages"
    );
    assert_eq!(out.kho.abort(&mut out.fa), Err(KhoError::NotFinalized));
    out.kho.preserve_pages(&mut out.fa, q, 1).unwrap();
    assert_eq!(out.kho.block_count(), 2);
}

#[test]
fn scratch_memory_is_never_preserved() {
    let (_, mut out) = setup();
    let s = out.scratch;
    let err = out
        .kho
        .preserve_phys(&mut out.fa, s.start.0, 4096)
        .unwrap_err();
    assert_eq!(
        err,
        KhoError::InScratch {
            phys: s.start.0,
            size: 4096,
            scratch: s
        }
    );
    // A range that only touches the start of scratch is refused too.
    let err = out
        .kho
        .preserve_phys(&mut out.fa, s.start.0 - 4096, 8192)
        .unwrap_err();
    assert!(matches!(err, KhoError::InScratch { .. }), "{err}");
    assert_eq!(out.kho.block_count(), 0);
}

#[test]
fn unpreserving_what_is_not_preserved_is_an_error() {
    let (_, mut out) = setup();
    let p = out.fa.alloc_pages(3).unwrap();
    assert!(matches!(
        out.kho.unpreserve_pages(p, 8),
        Err(KhoError::NotPreserved { .. })
    ));
    out.kho.preserve_pages(&mut out.fa, p, 8).unwrap();
    // Part of a block, or a different cut, is not what was preserved.
    assert!(matches!(
        out.kho.unpreserve_pages(p, 4),
        Err(KhoError::NotPreserved { .. })
    ));
    assert!(matches!(
        out.kho.unpreserve_pages(Pfn(p.0 + 4), 4),
        Err(KhoError::NotPreserved { .. })
    ));
    assert_eq!(out.kho.block_count(), 1);
    out.kho.unpreserve_pages(p, 8).unwrap();
    assert!(matches!(
        out.kho.unpreserve_pages(p, 8),
        Err(KhoError::NotPreserved { .. })
    ));
    let f = out.fa.alloc_folio(1).unwrap();
    assert!(matches!(
        out.kho.unpreserve_folio(&out.fa, f),
        Err(KhoError::NotPreserved { .. })
    ));
    // Preserving the same block twice overlaps itself.
    out.kho.preserve_folio(&mut out.fa, f).unwrap();
    assert!(matches!(
        out.kho.preserve_folio(&mut out.fa, f),
        Err(KhoError::Overlaps { .. })
    ));
}

#[test]
fn unpreserve_removes_a_split_block_whatever_its_type() {
    let (_, mut out) = setup();
    let p = out.fa.alloc_pages(2).unwrap();
    out.kho.preserve_pages(&mut out.fa, p, 4).unwrap();
    out.kho.split_preserved_pages(&mut out.fa, p, 2).unwrap();
    assert_eq!(
        out.kho.block_type(p.0 << 12, 2).unwrap(),
        Some(BlockType::Split)
    );
    out.kho.unpreserve_pages(p, 4).unwrap();
    assert_eq!(out.kho.block_type(p.0 << 12, 2).unwrap(), None);
    assert!(out.kho.blocks().unwrap().is_empty());
}

#[test]
fn a_failure_half_way_removes_everything_the_call_added() {
    let (_, mut out) = setup();
    // Pages 0-1 and 2-3 of an order-2 area are two order-1 allocations; 2-3 are preserved
    // already, so preserving 0-3 adds block 0-1, fails on 2-3, and must remove 0-1 again.
    // Two order-1 allocations that are the halves of one order-2 area, whatever the free
    // lists held before (kho's own tree pages come from the same allocator).
    let mut got: Vec<Pfn> = (0..8).map(|_| out.fa.alloc_pages(1).unwrap()).collect();
    got.sort();
    let i = got
        .windows(2)
        .position(|w| w[0].0 % 4 == 0 && w[1].0 == w[0].0 + 2)
        .expect("two order-1 halves of an order-2 area");
    let (b, c) = (got[i], got[i + 1]);
    for p in got.iter().filter(|p| **p != b && **p != c) {
        out.fa.free_pages(*p, 1).unwrap();
    }
    out.kho.preserve_pages(&mut out.fa, c, 2).unwrap();
    let err = out.kho.preserve_pages(&mut out.fa, b, 4).unwrap_err();
    assert!(matches!(err, KhoError::Overlaps { .. }), "{err}");
    assert_eq!(
        out.kho.blocks().unwrap(),
        vec![(c.0 << 12, 1, BlockType::Contig)]
    );
    // Free memory is refused by mm, before anything is added.
    let d = out.fa.alloc_pages(0).unwrap();
    out.fa.free_pages(d, 0).unwrap();
    assert!(matches!(
        out.kho.preserve_pages(&mut out.fa, d, 1),
        Err(KhoError::Mm(_))
    ));
    assert_eq!(out.kho.block_count(), 1);
}

#[test]
fn kho_never_preserves_its_own_tree_pages() {
    let (_, mut out) = setup();
    let p = out.fa.alloc_pages(0).unwrap();
    out.kho.preserve_pages(&mut out.fa, p, 1).unwrap();
    // The tree pages are allocated order-0 pages: a raw preserve of the whole RAM below
    // scratch would cover them; it must be refused instead of recording a handover the next
    // image rejects.
    let below = RAM_BASE + (1 << 20);
    let r = out
        .kho
        .preserve_phys(&mut out.fa, below, out.scratch.start.0 - below);
    assert!(
        matches!(r, Err(KhoError::Overlaps { .. }) | Err(KhoError::Mm(_))),
        "{r:?}"
    );
    assert_eq!(out.kho.block_count(), 1);
}

#[test]
fn cut_never_exceeds_max_order_nor_alignment() {
    let arena: &'static Arena = crate::common::keep(Box::new(Arena::new(RAM_BASE, RAM_SIZE)));
    let mut out = outgoing(arena, 8);
    // Firmware range: 5 pages at a 16-page boundary => order 2 + order 0, whatever the size says.
    out.preserve_firmware();
    // A max-order (8) block plus its buddy preserved as one range: two order-8 blocks, not
    // one order-9 block, because this image's allocator stops at order 8.
    let a = out.fa.alloc_pages(8).unwrap();
    let b = out.fa.alloc_pages(8).unwrap();
    let (lo, hi) = if a.0 < b.0 { (a, b) } else { (b, a) };
    if hi.0 == lo.0 + 256 && lo.0 % 512 == 0 {
        out.kho.preserve_pages(&mut out.fa, lo, 512).unwrap();
        let blocks = out.kho.blocks().unwrap();
        assert!(
            blocks.contains(&(lo.0 << 12, 8, BlockType::Contig)),
            "{blocks:?}"
        );
        assert!(
            blocks.contains(&(hi.0 << 12, 8, BlockType::Contig)),
            "{blocks:?}"
        );
    }
    let fw: Vec<_> = out
        .kho
        .blocks()
        .unwrap()
        .into_iter()
        .filter(|b| b.0 < FIRMWARE.end.0)
        .collect();
    assert_eq!(
        fw,
        vec![
            (FIRMWARE.start.0, 2, BlockType::Contig),
            (FIRMWARE.start.0 + 4 * 4096, 0, BlockType::Contig)
        ]
    );
}

#[test]
fn split_failure_leaves_the_block_preserved_as_it_was() {
    let (_, mut out) = setup();
    let f = out.fa.alloc_folio(2).unwrap();
    out.kho.preserve_folio(&mut out.fa, f).unwrap();
    // mm refuses to split a compound page: the block stays preserved, CONTIG.
    let err = out
        .kho
        .split_preserved_pages(&mut out.fa, f, 2)
        .unwrap_err();
    assert!(
        matches!(err, KhoError::Mm(mm::MmError::Compound { .. })),
        "{err}"
    );
    assert_eq!(
        out.kho.block_type(f.0 << 12, 2).unwrap(),
        Some(BlockType::Contig)
    );
    // Splitting something not preserved is refused before mm is asked.
    let p = out.fa.alloc_pages(1).unwrap();
    assert!(matches!(
        out.kho.split_preserved_pages(&mut out.fa, p, 1),
        Err(KhoError::NotPreserved { .. })
    ));
    assert_eq!(out.fa.block_kind(p, 1).unwrap(), mm::BlockKind::Contig);
}
