//! Page state per block kind: how a held block's pages must look, and how each kind is freed.
//!
//! Owns the expectations of `docs/abi.md` §3.3 as seen through `mm`'s queries (folio: compound
//! head 1, tails 0 and linked; CONTIG: head 1, tails 0, no markers; SPLIT kinds: 1 and SPLIT
//! on every page) and the matching free calls. Reads descriptors only through `mm`.

use super::alloc::format;
use super::alloc::string::String;

use mm::{BlockKind, FrameAllocator, MmError, PageFlags, Pfn, PhysAddr};

use super::record::{Entry, Kind};
use super::report::Check;

/// A failed check before the generation number is attached.
pub type Problem = (Check, String);

/// An mm error as a problem: a bad page is always `Check::BadPage`, whatever the caller did.
pub fn mm_failure(check: Check, what: &str, e: MmError) -> Problem {
    let check = if matches!(e, MmError::BadPage(_)) {
        Check::BadPage
    } else {
        check
    };
    (check, format!("{what}: {e}"))
}

fn head_of(e: &Entry) -> Pfn {
    PhysAddr(e.phys).pfn()
}

/// Checks every page of the held block `e` against its kind.
pub fn check(fa: &FrameAllocator<'_>, e: &Entry) -> Result<(), Problem> {
    let head = head_of(e);
    let count = |p: Pfn, what| {
        fa.page_ref_count(p)
            .map_err(|err| mm_failure(Check::Refcount, what, err))
    };
    let flags = |p: Pfn| {
        fa.page_flags(p)
            .map_err(|err| mm_failure(Check::Compound, "page flags", err))
    };
    let at = |p: Pfn| p.phys().0;
    if e.kind.is_split() {
        for p in (0..e.pages).map(|i| head.add(i)) {
            let c = count(p, "split refcount")?;
            if c != 1 {
                return Err((
                    Check::Refcount,
                    format!("{} page {:#x} refcount {c}, expected 1", e.kind, at(p)),
                ));
            }
            let f = flags(p)?;
            if !f.contains(PageFlags::SPLIT) || f.intersects(PageFlags::HEAD | PageFlags::TAIL) {
                return Err((
                    Check::Compound,
                    format!("{} page {:#x} flags {f}", e.kind, at(p)),
                ));
            }
        }
        return Ok(());
    }
    let order = e.order();
    let compound = e.kind == Kind::Folio && order > 0;
    // An order-0 folio is a plain page: mm calls it Contig.
    let want = if compound {
        BlockKind::Folio
    } else {
        BlockKind::Contig
    };
    let got = fa
        .block_kind(head, order)
        .map_err(|err| mm_failure(Check::Compound, "block kind", err))?;
    if got != want {
        return Err((
            Check::Compound,
            format!("{} at {:#x} order {order} is {got:?}", e.kind, e.phys),
        ));
    }
    let c = count(head, "head refcount")?;
    if c != 1 {
        return Err((
            Check::Refcount,
            format!("{} head {:#x} refcount {c}, expected 1", e.kind, e.phys),
        ));
    }
    let hf = flags(head)?;
    if hf.contains(PageFlags::HEAD) != compound || hf.intersects(PageFlags::TAIL | PageFlags::SPLIT)
    {
        return Err((
            Check::Compound,
            format!("{} head {:#x} flags {hf}", e.kind, e.phys),
        ));
    }
    for p in (1..e.pages).map(|i| head.add(i)) {
        let c = count(p, "tail refcount")?;
        if c != 0 {
            return Err((
                Check::Refcount,
                format!("{} tail {:#x} refcount {c}, expected 0", e.kind, at(p)),
            ));
        }
        let tf = flags(p)?;
        let linked = fa
            .page_folio(p)
            .map_err(|err| mm_failure(Check::Compound, "tail head", err))?;
        let ok = if compound {
            tf.contains(PageFlags::TAIL)
                && !tf.intersects(PageFlags::HEAD | PageFlags::SPLIT)
                && linked == head
        } else {
            !tf.intersects(PageFlags::HEAD | PageFlags::TAIL | PageFlags::SPLIT) && linked == p
        };
        if !ok {
            return Err((
                Check::Compound,
                format!(
                    "{} tail {:#x} flags {tf} head {:#x}",
                    e.kind,
                    at(p),
                    at(linked)
                ),
            ));
        }
    }
    Ok(())
}

/// Frees the held block `e` the way its kind is freed (`folio_put`, `free_pages`, or
/// `put_page` on every page). A free-path report, or any new bad page, is `Check::BadPage`.
pub fn free(fa: &mut FrameAllocator<'_>, e: &Entry) -> Result<(), Problem> {
    let head = head_of(e);
    let bad0 = fa.stats().bad;
    let r = match e.kind {
        Kind::Folio => fa.folio_put(head),
        Kind::Contig => fa.free_pages(head, e.order()),
        Kind::Split | Kind::PhysRange | Kind::SplitAfterPreserve => {
            (0..e.pages).try_for_each(|i| fa.put_page(head.add(i)))
        }
    };
    r.map_err(|err| {
        mm_failure(
            Check::Free,
            &format!("freeing {} at {:#x}", e.kind, e.phys),
            err,
        )
    })?;
    let bad = fa.stats().bad;
    if bad != bad0 {
        return Err((
            Check::BadPage,
            format!(
                "freeing {} at {:#x}: {} bad pages",
                e.kind,
                e.phys,
                bad - bad0
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::MaybeUninit;
    use mm::{Memblock, Page, PhysRange};

    const BASE: u64 = 0x4000_0000;

    /// An allocator over 8 MiB at 1 GiB with the first 4 MiB reserved `noinit` (as kho
    /// reserves preserved blocks), handed to `f`.
    fn with_fa<R>(f: impl FnOnce(&mut FrameAllocator) -> R) -> R {
        let mut mb = Memblock::new();
        mb.add_memory(PhysRange::from_bounds(BASE, BASE + (8 << 20)))
            .unwrap();
        mb.reserve_noinit(PhysRange::from_bounds(BASE, BASE + (4 << 20)))
            .unwrap();
        let mut st: Vec<MaybeUninit<Page>> = (0..FrameAllocator::descriptors_needed(&mb))
            .map(|_| MaybeUninit::uninit())
            .collect();
        let mut fa = FrameAllocator::new(&mb, &mut st, 10).unwrap();
        f(&mut fa)
    }

    fn entry(kind: Kind, pages: u64) -> Entry {
        Entry {
            phys: BASE,
            pages,
            len: 4096,
            kind,
            fill_gen: 0,
            pattern: 0,
            checksum: 0,
        }
    }

    #[test]
    fn every_kind_restored_right_passes_and_frees_cleanly() {
        for (kind, mk) in [
            (Kind::Folio, BlockKind::Folio),
            (Kind::Contig, BlockKind::Contig),
            (Kind::Split, BlockKind::Split),
            (Kind::SplitAfterPreserve, BlockKind::Split),
        ] {
            with_fa(|fa| {
                fa.claim_reserved(Pfn(BASE >> 12), 10, mk).unwrap();
                let e = entry(kind, 1024);
                assert_eq!(check(fa, &e), Ok(()), "{kind}");
                assert_eq!(free(fa, &e), Ok(()), "{kind}");
                assert_eq!(fa.stats().bad, 0);
            });
        }
    }

    #[test]
    fn contig_with_a_tail_reference_fails_the_check_and_is_a_bad_page_when_freed() {
        with_fa(|fa| {
            fa.claim_reserved(Pfn(BASE >> 12), 4, BlockKind::Contig)
                .unwrap();
            fa.set_page_refcount(Pfn((BASE >> 12) + 3), 1).unwrap();
            let e = entry(Kind::Contig, 16);
            let (c, d) = check(fa, &e).unwrap_err();
            assert_eq!(
                (c, d.as_str()),
                (
                    Check::Refcount,
                    "contig tail 0x40003000 refcount 1, expected 0"
                )
            );
            let (c, _) = free(fa, &e).unwrap_err();
            assert_eq!(c, Check::BadPage);
            assert_eq!(fa.stats().bad, 16);
        });
    }

    #[test]
    fn a_split_block_restored_as_contig_is_named() {
        with_fa(|fa| {
            fa.claim_reserved(Pfn(BASE >> 12), 3, BlockKind::Contig)
                .unwrap();
            let (c, d) = check(fa, &entry(Kind::Split, 8)).unwrap_err();
            assert_eq!(
                (c, d.as_str()),
                (Check::Compound, "split page 0x40000000 flags none")
            );
        });
    }

    #[test]
    fn a_folio_restored_without_compound_markers_is_named() {
        with_fa(|fa| {
            fa.claim_reserved(Pfn(BASE >> 12), 2, BlockKind::Contig)
                .unwrap();
            let (c, _) = check(fa, &entry(Kind::Folio, 4)).unwrap_err();
            assert_eq!(c, Check::Compound);
        });
    }
}
