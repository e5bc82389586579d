//! Tests of the preserved-block states `new_deferred` writes: each block's first frame
//! (PRESERVED, order, stash) vouching for its tails, the O(1) claim on it and every refusal
//! that keeps a block whole (a tail, a wrong order, a second claim, a release that cuts it).

use proptest::prelude::*;

use crate::tests::assert_stats_consistent as assert_consistent;
use crate::tests_deferred::{
    eager_free_set, free_set, memblock, raw, storage, BASE, BASE_PFN, CHUNK, IMAGE, MIB, RAM,
};
use crate::*;

/// The stash the tests put on a block's first frame.
const STASH: u64 = 0x4b48_0000_0000_0203;
/// An order-3 block at 20 MiB (chunk 5), a plain range after it, an order-10 block (a whole
/// chunk) at 40 MiB.
const BLOCK: u64 = BASE + 20 * MIB;
const BLOCK_PFN: u64 = BLOCK >> PAGE_SHIFT;
const RANGE: (u64, u64) = (BLOCK + 0x9000, BLOCK + 0xb000);
const BIG: u64 = BASE + 40 * MIB;

fn items() -> Vec<Preserved> {
    vec![
        Preserved::block(BLOCK, 3, STASH),
        PhysRange::from_bounds(RANGE.0, RANGE.1).into(),
        Preserved::block(BIG, 10, 0),
    ]
}

/// Runs `f` on an allocator built around [`items`] over garbage storage.
fn with_blocks(f: impl FnOnce(&mut FrameAllocator)) {
    let mb = memblock(RAM, IMAGE);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let mut fa =
        FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, items()).unwrap();
    assert_consistent(&fa);
    f(&mut fa);
    assert_consistent(&fa);
}

const RES: PageFlags = PageFlags::RESERVED.union(PageFlags::NOINIT);

#[test]
fn reserve_writes_the_head_with_order_and_stash_and_tails_linked() {
    with_blocks(|fa| {
        let head = Pfn(BLOCK_PFN);
        assert_eq!(fa.page_flags(head), Ok(RES | PageFlags::PRESERVED));
        assert_eq!(fa.page_order(head), Ok(3));
        assert_eq!(fa.page_private(head), Ok(STASH));
        for i in 1..8 {
            assert_eq!(
                fa.page_flags(head.add(i)),
                Ok(RES | PageFlags::PRESERVED_TAIL)
            );
            assert_eq!(fa.page_private(head.add(i)), Ok(0));
        }
        assert_eq!(fa.page_flags(PhysAddr(RANGE.0).pfn()), Ok(RES));
        // The frames between are free, the whole chunk of the big block reserved.
        assert_eq!(fa.page_flags(head.add(8)), Ok(PageFlags::FREE));
        let s = fa.stats();
        assert_eq!(s.reserved, 3 + 8 + 2 + CHUNK);
        assert_eq!(s.deferred, 13 * CHUNK, "chunks 0, 5 and 10 initialised");
    });
}

#[test]
fn claim_checks_the_head_and_writes_each_kind() {
    for kind in [BlockKind::Contig, BlockKind::Folio, BlockKind::Split] {
        with_blocks(|fa| {
            let head = Pfn(BLOCK_PFN);
            fa.claim_reserved(head, 3, kind).unwrap();
            let tail_count = u32::from(kind == BlockKind::Split);
            assert_eq!(fa.page_ref_count(head), Ok(1));
            assert_eq!(fa.page_private(head), Ok(0));
            for i in 1..8 {
                assert_eq!(fa.page_ref_count(head.add(i)), Ok(tail_count), "{kind:?}");
                let want = match kind {
                    BlockKind::Folio => PageFlags::TAIL,
                    BlockKind::Split => PageFlags::SPLIT,
                    BlockKind::Contig => PageFlags::empty(),
                };
                assert_eq!(fa.page_flags(head.add(i)), Ok(want), "{kind:?}");
            }
            match kind {
                BlockKind::Folio => {
                    assert_eq!(fa.folio_order(head), Ok(3));
                    assert_eq!(fa.page_folio(head.add(5)), Ok(head));
                    fa.folio_put(head).unwrap();
                }
                BlockKind::Contig => fa.free_pages(head, 3).unwrap(),
                BlockKind::Split => (0..8).for_each(|i| fa.put_page(head.add(i)).unwrap()),
            }
            assert_eq!(
                fa.stats().bad,
                0,
                "the free path finds the claimed state clean"
            );
            assert_eq!(fa.stats().reserved, 3 + 2 + CHUNK);
        });
    }
}

#[test]
fn a_block_of_a_whole_chunk_claims_and_frees() {
    with_blocks(|fa| {
        let big = PhysAddr(BIG).pfn();
        fa.claim_reserved(big, 10, BlockKind::Contig).unwrap();
        assert_eq!(fa.stats().allocated, CHUNK);
        fa.free_pages(big, 10).unwrap();
        assert_eq!(fa.stats().bad, 0);
    });
}

#[test]
fn claim_of_a_tail_wrong_order_or_twice_is_refused_and_changes_nothing() {
    with_blocks(|fa| {
        let head = Pfn(BLOCK_PFN);
        let before = fa.stats();
        let tail = MmError::PreservedTail { pfn: head.add(1) };
        assert_eq!(
            fa.claim_reserved(head.add(1), 0, BlockKind::Contig),
            Err(tail)
        );
        assert_eq!(
            fa.claim_reserved(head.add(2), 1, BlockKind::Split),
            Err(MmError::PreservedTail { pfn: head.add(2) })
        );
        assert_eq!(
            fa.claim_reserved(head, 2, BlockKind::Contig),
            Err(MmError::OrderMismatch {
                pfn: head,
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            fa.claim_reserved(head, 4, BlockKind::Folio),
            Err(MmError::OrderMismatch {
                pfn: head,
                expected: 3,
                got: 4
            })
        );
        assert_eq!(fa.stats(), before);
        assert_eq!(fa.page_flags(head), Ok(RES | PageFlags::PRESERVED));
        assert_eq!(fa.page_private(head), Ok(STASH));
        fa.claim_reserved(head, 3, BlockKind::Contig).unwrap();
        assert_eq!(
            fa.claim_reserved(head, 3, BlockKind::Contig),
            Err(MmError::NotReserved { pfn: head })
        );
        assert_eq!(
            fa.release_reserved(head, 8),
            Err(MmError::NotReserved { pfn: head }),
            "release after claim"
        );
    });
}

#[test]
fn a_claim_of_plain_reserved_memory_may_not_cover_a_preserved_block() {
    // Eight plain reserved pages, then an order-3 block: order 4 from the plain range's
    // first frame would take the block without its head check.
    let mb = memblock(RAM, IMAGE);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let items = [
        Preserved::from(PhysRange::new(PhysAddr(BLOCK), 0x8000)),
        Preserved::block(BLOCK + 0x8000, 3, STASH),
    ];
    let mut fa =
        FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, items).unwrap();
    let before = fa.stats();
    let head = Pfn(BLOCK_PFN + 8);
    assert_eq!(
        fa.claim_reserved(Pfn(BLOCK_PFN), 4, BlockKind::Contig),
        Err(MmError::PreservedTail { pfn: head })
    );
    assert_eq!(fa.stats(), before);
    // The plain range claims frame by frame, the block on its head.
    fa.claim_reserved(Pfn(BLOCK_PFN), 3, BlockKind::Contig)
        .unwrap();
    fa.claim_reserved(head, 3, BlockKind::Contig).unwrap();
    assert_eq!(fa.stats().allocated, 16);
    assert_consistent(&fa);
}

#[test]
fn a_release_that_cuts_a_block_is_refused() {
    with_blocks(|fa| {
        let head = Pfn(BLOCK_PFN);
        let before = fa.stats();
        assert_eq!(
            fa.release_reserved(head, 4),
            Err(MmError::PreservedTail { pfn: head.add(4) })
        );
        assert_eq!(
            fa.release_reserved(head.add(1), 7),
            Err(MmError::PreservedTail { pfn: head.add(1) })
        );
        assert_eq!(fa.stats(), before);
        // Whole, with its stash cleared first: fine, and then it is not claimable.
        fa.set_page_private(head, 0).unwrap();
        fa.release_reserved(head, 8).unwrap();
        assert_eq!(fa.stats().reserved, before.reserved - 8);
        assert_eq!(
            fa.claim_reserved(head, 3, BlockKind::Contig),
            Err(MmError::NotReserved { pfn: head })
        );
    });
}

#[test]
fn a_tail_keeps_no_private_word() {
    with_blocks(|fa| {
        let t = Pfn(BLOCK_PFN + 3);
        assert_eq!(
            fa.set_page_private(t, 7),
            Err(MmError::PreservedTail { pfn: t })
        );
        assert_eq!(
            fa.stash_reserved(t, 7),
            Err(MmError::PreservedTail { pfn: t })
        );
        assert_eq!(fa.page_private(t), Ok(0));
        assert_eq!(fa.stash_reserved(Pfn(BLOCK_PFN), 9), Ok(true));
        assert_eq!(fa.page_private(Pfn(BLOCK_PFN)), Ok(9));
    });
}

#[test]
fn a_block_item_must_be_its_orders_size_and_aligned() {
    let mb = memblock(RAM, IMAGE);
    let bad = [
        // Misaligned for order 3.
        Preserved::block(BLOCK + 0x1000, 3, 0),
        // A range that claims to be an order-2 block but covers 8 pages.
        Preserved {
            range: PhysRange::new(PhysAddr(BLOCK), 0x8000),
            block: Some((2, 0)),
        },
    ];
    for b in bad {
        let (mut pages, mut bits) = storage(&mb, 0);
        assert_eq!(
            FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, [b]).unwrap_err(),
            MmError::BadPreservedRange {
                pfn: b.range.start.pfn()
            }
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Blocks reserved as blocks give the same free lists as the eager build with them
    /// as `reserve_noinit` ranges; every block then claims and frees back clean.
    #[test]
    fn blocks_reserve_like_ranges_and_claim_whole(
        pres in prop::collection::vec((0u64..12_000, 0u32..11), 0..40),
    ) {
        let reserved = [(BASE, BASE + 0x3000), (BASE + 30 * MIB + 0x800, BASE + 31 * MIB)];
        let res_pfn = |i: usize| (reserved[i].0 >> PAGE_SHIFT, reserved[i].1.div_ceil(4096));
        let mut sorted = pres.clone();
        sorted.sort_unstable();
        let mut blocks: Vec<(u64, u32)> = Vec::new();
        let mut end = 0;
        for (o, order) in sorted {
            let n = 1u64 << order;
            let f = (BASE_PFN + o) & !(n - 1);
            let clear = (0..reserved.len()).all(|i| {
                let (s, e) = res_pfn(i);
                f + n <= s || e <= f
            });
            if f >= end && f + n <= BASE_PFN + 16 * CHUNK && clear {
                blocks.push((f, order));
                end = f + n;
            }
        }
        let as_ranges: Vec<(u64, u64)> = blocks
            .iter()
            .map(|&(f, o)| (f << PAGE_SHIFT, (f + (1 << o)) << PAGE_SHIFT))
            .collect();
        let mb = memblock(RAM, &reserved);
        let (mut pages, mut bits) = storage(&mb, 0x01);
        let items = blocks
            .iter()
            .enumerate()
            .map(|(i, &(f, o))| Preserved::block(f << PAGE_SHIFT, o, i as u64 + 1));
        let mut fa = FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, items)
            .unwrap();
        assert_consistent(&fa);
        let total: u64 = blocks.iter().map(|&(_, o)| 1u64 << o).sum();
        for (i, &(f, o)) in blocks.iter().enumerate() {
            prop_assert_eq!(fa.page_private(Pfn(f)), Ok(i as u64 + 1));
            let kind = [BlockKind::Contig, BlockKind::Folio, BlockKind::Split][i % 3];
            fa.claim_reserved(Pfn(f), o, kind).unwrap();
            prop_assert_eq!(fa.claim_reserved(Pfn(f), o, kind), Err(MmError::NotReserved { pfn: Pfn(f) }));
        }
        prop_assert_eq!(fa.stats().allocated, total);
        for (i, &(f, o)) in blocks.iter().enumerate() {
            match i % 3 {
                0 => fa.free_pages(Pfn(f), o).unwrap(),
                1 => fa.folio_put(Pfn(f)).unwrap(),
                _ => (0..1u64 << o).for_each(|j| fa.put_page(Pfn(f + j)).unwrap()),
            }
        }
        prop_assert_eq!(fa.stats().bad, 0);
        fa.init_deferred(usize::MAX);
        assert_consistent(&fa);
        prop_assert_eq!(free_set(&fa), eager_free_set(RAM, &reserved, &[]));
        // And before any claim, the free lists equal the eager build's.
        let (mut pages, mut bits) = storage(&mb, 0x01);
        let items = blocks.iter().map(|&(f, o)| Preserved::block(f << PAGE_SHIFT, o, 0));
        let mut fa = FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, items)
            .unwrap();
        fa.init_deferred(usize::MAX);
        prop_assert_eq!(free_set(&fa), eager_free_set(RAM, &reserved, &as_ranges));
    }
}

/// The frames of a chunk after the item that readied it are written by the items and gaps
/// that follow in the chunk; what they leave (here a free gap into the next chunks, freed
/// through the buddy path, which reads them) is settled first, never the storage's garbage.
#[test]
fn a_chunk_readied_by_a_block_has_every_frame_written() {
    let chunk = BASE + 12 * MIB;
    let chunk_pfn = chunk >> PAGE_SHIFT;
    // In one chunk: a block, a block right after it, a one-page gap, a block; then free
    // frames up to a block two chunks on.
    let items = [
        Preserved::block(chunk + 0x4000, 2, STASH),
        Preserved::block(chunk + 0x8000, 0, 0),
        Preserved::block(chunk + 0xa000, 1, 0),
        Preserved::block(chunk + 8 * MIB, 0, 0),
    ];
    let mb = memblock(RAM, IMAGE);
    let (mut pages, mut bits) = storage(&mb, 0x01);
    let fa = FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, MAX_ORDER, items).unwrap();
    assert_consistent(&fa);
    let want = |i: u64| match i {
        4 | 8 | 0xa => RES | PageFlags::PRESERVED,
        5..=7 | 0xb => RES | PageFlags::PRESERVED_TAIL,
        _ => PageFlags::empty(),
    };
    for i in 0..CHUNK {
        let got = fa
            .page_flags(Pfn(chunk_pfn + i))
            .unwrap()
            .difference(PageFlags::FREE);
        assert_eq!(got, want(i), "frame {i:#x} of the chunk");
    }
    let s = fa.stats();
    assert_eq!(s.reserved, 3 + 4 + 1 + 2 + 1);
    assert_eq!(s.free + s.reserved + s.deferred, s.total);
}

/// Two RAM sections with a hole between them (frames 6144..8192 of [`BASE_PFN`]).
const RAM2: &[(u64, u64)] = &[(BASE, BASE + 24 * MIB), (BASE + 32 * MIB, BASE + 64 * MIB)];

/// What one claim in a list does to the blocks of [`batch_claim_matches_claims_one_at_a_time`].
fn claim_list(blocks: &[(u64, u32)], muts: &[(u8, u8)]) -> Vec<(Pfn, u32, BlockKind)> {
    let kinds = [BlockKind::Contig, BlockKind::Folio, BlockKind::Split];
    let mut out: Vec<(Pfn, u32, BlockKind)> = Vec::new();
    for (i, &(f, o)) in blocks.iter().enumerate() {
        let (m, k) = muts.get(i).copied().unwrap_or((0, 0));
        let kind = kinds[usize::from(k % 3)];
        out.push(match m {
            // Another order: `OrderMismatch` (or `Misaligned`, `OrderTooLarge`).
            8 => (Pfn(f), o + 1, kind),
            // A tail, or the frame after an order-0 block.
            9 => (Pfn(f + 1), o, kind),
            // The previous claim again: `NotReserved` on the second.
            10 => out.last().copied().unwrap_or((Pfn(f), o, kind)),
            // Reserved memory that is no preserved block (the image), then the hole.
            11 => (Pfn(BASE_PFN + u64::from(k % 3)), 0, kind),
            12 => (Pfn(BASE_PFN + 7000), 0, kind),
            // The same frame a chunk on: often in a deferred chunk (`Deferred`).
            13 => (Pfn(f + CHUNK), 0, kind),
            _ => (Pfn(f), o, kind),
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A batch claim (in one or two calls) leaves every descriptor byte, every counter and
    /// the result exactly as `claim_reserved` one block at a time, stopping at the same
    /// refusal: over two sections, deferred chunks, order 0 and larger blocks, stashes
    /// and none, and every refusal the claim list can make. With `uniform`, every claim
    /// is of order 0 and that kind, made by `claim_reserved_batch_of`.
    #[test]
    fn batch_claim_matches_claims_one_at_a_time(
        pres in prop::collection::vec(
            (0u64..16_384, prop_oneof![3 => Just(0u32), 1 => 0u32..11]),
            0..120,
        ),
        muts in prop::collection::vec((prop_oneof![12 => 0u8..8, 1 => 8u8..14], 0u8..3), 0..120),
        cut in 0usize..130,
        uniform in prop::option::of(prop_oneof![
            Just(BlockKind::Folio),
            Just(BlockKind::Contig),
            Just(BlockKind::Split)
        ]),
    ) {
        let hole = (BASE_PFN + 6144, BASE_PFN + 8192);
        let mut sorted = pres.clone();
        sorted.sort_unstable();
        let mut blocks: Vec<(u64, u32)> = Vec::new();
        let mut end = BASE_PFN + 3;
        for (o, order) in sorted {
            let n = 1u64 << order;
            let f = (BASE_PFN + o) & !(n - 1);
            if f >= end && (f + n <= hole.0 || f >= hole.1) {
                blocks.push((f, order));
                end = f + n;
            }
        }
        let list = claim_list(&blocks, &muts);
        let list: Vec<_> = match uniform {
            Some(kind) => list.iter().map(|&(pfn, _, _)| (pfn, 0, kind)).collect(),
            None => list,
        };
        let batch = |fa: &mut FrameAllocator<'_>, l: &[(Pfn, u32, BlockKind)]| match uniform {
            Some(kind) => fa.claim_reserved_batch_of(l.iter().map(|c| c.0), 0, kind),
            None => fa.claim_reserved_batch(l.iter().copied()),
        };
        let mb = memblock(RAM2, IMAGE);
        let items = || {
            blocks.iter().enumerate().map(|(i, &(f, o))| {
                Preserved::block(f << PAGE_SHIFT, o, if i % 4 == 0 { 0 } else { i as u64 })
            })
        };
        let (mut pages_a, mut bits_a) = storage(&mb, 0x01);
        let (mut pages_b, mut bits_b) = storage(&mb, 0x01);
        let mut a = FrameAllocator::new_deferred(&mb, &mut pages_a, &mut bits_a, MAX_ORDER, items())
            .unwrap();
        let mut b = FrameAllocator::new_deferred(&mb, &mut pages_b, &mut bits_b, MAX_ORDER, items())
            .unwrap();
        // A deferred chunk's garbage made to look like unclaimed preserved blocks: a claim
        // there must still be refused (`Deferred`), never taken for one.
        for fa in [&mut a, &mut b] {
            let (secs, n) = (fa.sections, fa.nsections);
            for sec in &secs[..n] {
                for f in sec.base..sec.end {
                    if let Err(MmError::Deferred { .. }) = fa.index(Pfn(f)) {
                        let p = &mut fa.pages[(sec.first as u64 + f - sec.base) as usize];
                        p.flags = crate::reserve::PRESERVED_HEAD;
                        p.order = 0;
                    }
                }
            }
            // A preserved head holding a reference (not what `reserve` writes): the batch's
            // one compare misses it and the checks of `claim_reserved` decide.
            for &(f, _) in blocks.iter().skip(2).step_by(5) {
                if let Ok(idx) = fa.index(Pfn(f)) {
                    fa.pages[idx].set_count(1);
                }
            }
        }
        let mut want = Ok(0u64);
        for (k, &(pfn, order, kind)) in list.iter().enumerate() {
            match a.claim_reserved(pfn, order, kind) {
                Ok(()) => want = want.map(|n| n + (1u64 << order)),
                Err(e) => {
                    want = Err((k, e));
                    break;
                }
            }
        }
        let cut = cut.min(list.len());
        let got = batch(&mut b, &list[..cut]).and_then(|n| {
            batch(&mut b, &list[cut..])
                .map(|m| n + m)
                .map_err(|(k, e)| (k + cut, e))
        });
        prop_assert_eq!(got, want);
        prop_assert_eq!(a.stats(), b.stats());
        prop_assert_eq!(a.private_set, b.private_set);
        let differ = a.pages.iter().zip(b.pages.iter()).position(|(x, y)| raw(x) != raw(y));
        prop_assert_eq!(differ, None);
        assert_consistent(&a);
        assert_consistent(&b);
    }
}

#[test]
fn a_preserved_blocks_first_frame_has_the_batch_claims_flags() {
    with_blocks(|fa| {
        for (pfn, order) in [(Pfn(BLOCK_PFN), 3), (PhysAddr(BIG).pfn(), 10)] {
            assert_eq!(
                fa.page_flags(pfn).map(|f| f.bits()),
                Ok(crate::reserve::PRESERVED_HEAD)
            );
            assert_eq!(
                fa.claim_reserved_batch([(pfn, order, BlockKind::Contig)]),
                Ok(1 << order)
            );
        }
    });
}

/// One step of a generated preserved input: `gap` frames after the previous item, then a
/// block of `2^order` frames (aligned up) or, with `plain`, a plain range of `order + 1`
/// frames; `bad` makes it one the build refuses (a block one frame off its alignment, or an
/// item that starts inside the previous one).
type Step = (u64, u32, bool, bool);

/// The items of `steps` from frame `BASE_PFN + 3` on (past the image), the reserved ranges
/// of `reserved` skipped, before frame `end`.
fn stepped_items(steps: &[Step], reserved: &[(u64, u64)], end: u64) -> Vec<Preserved> {
    let mut items = Vec::new();
    let mut at = BASE_PFN + 3;
    for &(gap, order, plain, bad) in steps {
        let (n, align) = if plain {
            (u64::from(order) + 1, 1)
        } else {
            (1u64 << order, 1u64 << order)
        };
        let mut f = (at + gap).next_multiple_of(align);
        let clear = |f: u64| {
            reserved
                .iter()
                .all(|&(s, e)| f + n <= s >> PAGE_SHIFT || e.div_ceil(PAGE_SIZE) <= f)
        };
        if !clear(f) || f + n > end {
            continue;
        }
        if bad {
            f = if plain || order == 0 {
                at.saturating_sub(1).max(BASE_PFN)
            } else {
                f + 1
            };
        }
        let phys = f << PAGE_SHIFT;
        items.push(if plain {
            PhysRange::new(PhysAddr(phys), n << PAGE_SHIFT).into()
        } else {
            Preserved::block(phys, order, u64::from(gap % 3 != 0) * (f + 7))
        });
        at = f + n;
    }
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The runs (the blocks after an item in its chunk, taken with no walk) leave every
    /// descriptor byte, every list head and count, the chunk bitmaps and the stats exactly
    /// as the general steps alone do, and refuse the same input with the same error.
    #[test]
    fn runs_build_exactly_what_the_general_steps_build(
        steps in prop::collection::vec(
            (
                prop_oneof![4 => Just(0u64), 4 => Just(1), 2 => 2u64..5, 1 => 0u64..3000],
                prop_oneof![4 => Just(0u32), 4 => 0u32..11, 1 => 11u32..13],
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.02),
            ),
            0..300,
        ),
        reserve_gap in prop::option::of(0usize..1000),
        byte in prop_oneof![Just(0u8), Just(0x01), Just(0xff)],
        short in prop::bool::ANY,
    ) {
        let (mb, items) = stepped_case(&steps, reserve_gap, short);
        let (mut pages_g, mut bits_g) = storage(&mb, byte);
        let (mut pages_r, mut bits_r) = storage(&mb, byte);
        let general = FrameAllocator::build_deferred::<false, _>(
            &mb, &mut pages_g, &mut bits_g, MAX_ORDER, items.iter().copied(),
        );
        let runs = FrameAllocator::build_deferred::<true, _>(
            &mb, &mut pages_r, &mut bits_r, MAX_ORDER, items.iter().copied(),
        );
        same_build(general, runs)?;

        // The same items as a set, its blocks read in place by the runs, against its merge
        // through the general steps alone.
        set_builds_like_general_steps(&mb, &items, byte)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Mostly order-0 blocks one frame apart (the scatter shape, whose long stretches a run
    /// takes in its tight loop, `Run::pairs`), over several chunks, with other gaps, larger
    /// blocks, plain ranges, refused items and a reservation among them: the set's build
    /// leaves everything exactly as the general steps alone do.
    #[test]
    fn scatter_runs_build_exactly_what_the_general_steps_build(
        steps in prop::collection::vec(
            (
                prop_oneof![16 => Just(1u64), 1 => Just(0), 1 => 2u64..5, 1 => 0u64..3000],
                prop_oneof![16 => Just(0u32), 1 => 1u32..4],
                prop::bool::weighted(0.01),
                prop::bool::weighted(0.005),
            ),
            0..3000,
        ),
        reserve_gap in prop::option::of(0usize..1000),
        byte in prop_oneof![Just(0u8), Just(0xff)],
        short in prop::bool::ANY,
    ) {
        let (mb, items) = stepped_case(&steps, reserve_gap, short);
        set_builds_like_general_steps(&mb, &items, byte)?;
    }
}

/// The RAM and items of a generated case: RAM of 16 chunks, or five frames less with
/// `short` (the last chunk then ends before its size); the image's three frames reserved,
/// and with `reserve_gap` one frame inside a gap of three frames or more (that gap is then
/// not all free RAM).
fn stepped_case(
    steps: &[Step],
    reserve_gap: Option<usize>,
    short: bool,
) -> (Memblock, Vec<Preserved>) {
    let ram = [(BASE, BASE + 64 * MIB - u64::from(short) * 5 * PAGE_SIZE)];
    let mut reserved = vec![(BASE, BASE + 0x3000)];
    let items = stepped_items(steps, &reserved, ram[0].1 >> PAGE_SHIFT);
    let mut gaps = items.windows(2).filter_map(|w| {
        let (a, b) = (w[0].range.end.0, w[1].range.start.0);
        (b >= a + 3 * PAGE_SIZE).then_some(a + PAGE_SIZE)
    });
    if let Some(at) = reserve_gap.and_then(|k| gaps.nth(k % items.len().max(1))) {
        reserved.push((at, at + PAGE_SIZE));
    }
    (memblock(&ram, &reserved), items)
}

/// `items` as a [`PreservedSet`], built with its blocks read in place by the runs
/// (`new_deferred_set`) and through the general steps alone, on descriptors filled with
/// `byte`: [`same_build`] of the two.
fn set_builds_like_general_steps(
    mb: &Memblock,
    items: &[Preserved],
    byte: u8,
) -> Result<(), TestCaseError> {
    let (blocks, ranges) = split_items(items);
    build_both(mb, PreservedSet::new(&blocks, &ranges), byte, same_build)
}

/// Builds `set` through the general steps alone and with `new_deferred_set`, each on its
/// own descriptors filled with `byte`, and hands both results to `check`.
fn build_both<R>(
    mb: &Memblock,
    set: PreservedSet<'_, TestBlock>,
    byte: u8,
    check: impl FnOnce(Result<FrameAllocator, MmError>, Result<FrameAllocator, MmError>) -> R,
) -> R {
    let (mut pages_g, mut bits_g) = storage(mb, byte);
    let (mut pages_s, mut bits_s) = storage(mb, byte);
    let general = FrameAllocator::build_deferred::<false, _>(
        mb,
        &mut pages_g,
        &mut bits_g,
        MAX_ORDER,
        set.clone(),
    );
    let array = FrameAllocator::new_deferred_set(mb, &mut pages_s, &mut bits_s, MAX_ORDER, set);
    check(general, array)
}

/// A scatter stretch that a run's tight loop enters `d` frames before a chunk's end (after
/// a longer gap, one block and a one-page gap), for every `d` near the end: the loop may
/// then take one block, a few or none before the chunk ends, and the stretch goes on in the
/// next chunk. The set's build equals the general steps' build.
#[test]
fn scatter_stretches_at_a_chunk_end_build_what_the_general_steps_build() {
    let chunk_end = BASE_PFN + 4 * CHUNK;
    for d in 0..12 {
        let a = chunk_end - 4 - d;
        let mut frames = vec![a - 3, a];
        frames.extend((a + 2..chunk_end + 24).step_by(2));
        let items: Vec<Preserved> = frames
            .iter()
            .map(|&f| Preserved::block(f << PAGE_SHIFT, 0, STASH))
            .collect();
        let mb = memblock(RAM, IMAGE);
        let (blocks, ranges) = split_items(&items);
        let set = PreservedSet::new(&blocks, &ranges);
        build_both(&mb, set, 0xff, |general, array| {
            assert!(general.is_ok(), "d = {d}");
            same_build(general, array).unwrap();
        });
    }
}

/// Both builds refused with the same error, or both built with every descriptor byte, every
/// list head and count, the chunk bitmaps and the stats the same.
fn same_build(
    general: Result<FrameAllocator, MmError>,
    runs: Result<FrameAllocator, MmError>,
) -> Result<(), TestCaseError> {
    match (general, runs) {
        (Ok(g), Ok(r)) => {
            assert_consistent(&r);
            prop_assert_eq!(g.stats(), r.stats());
            prop_assert_eq!(g.free_head, r.free_head);
            prop_assert_eq!(g.free_blocks, r.free_blocks);
            prop_assert_eq!(g.nonempty, r.nonempty);
            prop_assert_eq!(g.private_set, r.private_set);
            prop_assert_eq!(&*g.chunk_ready, &*r.chunk_ready);
            for (i, (a, b)) in g.pages.iter().zip(r.pages.iter()).enumerate() {
                prop_assert_eq!(raw(a), raw(b), "descriptor {}", i);
            }
        }
        (g, r) => prop_assert_eq!(g.err(), r.err()),
    }
    Ok(())
}

/// A block of a [`PreservedSet`] in the tests: its stash, plus its index (a zero stash stays
/// zero).
#[derive(Copy, Clone, Debug)]
struct TestBlock {
    phys: u64,
    order: u32,
    stash: u64,
}

impl PreservedBlock for TestBlock {
    fn phys(&self) -> u64 {
        self.phys
    }

    fn order(&self) -> u32 {
        self.order
    }

    fn private(&self, index: u64) -> u64 {
        if self.stash == 0 {
            0
        } else {
            self.stash + (index << 32)
        }
    }
}

/// The blocks and the plain ranges of `items`, apart.
fn split_items(items: &[Preserved]) -> (Vec<TestBlock>, Vec<PhysRange>) {
    let mut blocks = Vec::new();
    let mut ranges = Vec::new();
    for item in items {
        match item.block {
            Some((order, stash)) => blocks.push(TestBlock {
                phys: item.range.start.0,
                order,
                stash,
            }),
            None => ranges.push(item.range),
        }
    }
    (blocks, ranges)
}

#[test]
fn a_set_refuses_what_its_merge_refuses() {
    let mb = memblock(RAM, IMAGE);
    let at = |mib: u64| BASE + mib * MIB;
    let block = |phys: u64, order: u32| TestBlock {
        phys,
        order,
        stash: STASH,
    };
    let cases: [(Vec<TestBlock>, Vec<PhysRange>); 5] = [
        // An order past the largest block, after a run's first block.
        (
            vec![
                block(at(20), 0),
                block(at(20) + 0x2000, MAX_BLOCK_ORDER + 1),
            ],
            vec![],
        ),
        // A block one page off its alignment.
        (vec![block(at(20), 0), block(at(20) + 0x3000, 2)], vec![]),
        // A block out of order, and one that overlaps the one before.
        (
            vec![
                block(at(20), 0),
                block(at(20) + 0x2000, 0),
                block(at(20) + 0x1000, 0),
            ],
            vec![],
        ),
        (
            vec![
                block(at(20), 0),
                block(at(20) + 0x8000, 3),
                block(at(20) + 0xa000, 0),
            ],
            vec![],
        ),
        // A range inside a block the run took.
        (
            vec![
                block(at(20), 0),
                block(at(20) + 0x4000, 2),
                block(at(20) + 0x9000, 0),
            ],
            vec![PhysRange::from_bounds(at(20) + 0x5000, at(20) + 0x6000)],
        ),
    ];
    for (blocks, ranges) in cases {
        let set = PreservedSet::new(&blocks, &ranges);
        build_both(&mb, set, 0x01, |general, array| {
            let err = general.expect_err("the general steps refuse it");
            assert!(matches!(err, MmError::BadPreservedRange { .. }), "{err:?}");
            assert_eq!(array.err(), Some(err), "{blocks:?} {ranges:?}");
        });
    }
}
