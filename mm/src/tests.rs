//! Unit tests of the public API, one behaviour per test, on small simulated RAM layouts.
//!
//! Descriptor storage is a heap `Vec` here (host only); nothing touches frame contents.

use core::mem::MaybeUninit;

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

fn assert_stats_consistent(fa: &FrameAllocator) {
    let s = fa.stats();
    assert_eq!(s.free + s.reserved + s.allocated + s.bad, s.total, "{s:?}");
    let by_order: u64 = s
        .free_per_order
        .iter()
        .enumerate()
        .map(|(o, n)| n << o)
        .sum();
    assert_eq!(by_order, s.free, "{s:?}");
}

#[test]
fn smoke_alloc_free_coalesces() {
    with_fa(&ONE_BLOCK, 10, |fa| {
        assert_eq!(fa.stats().free_per_order[10], 1);
        let p = fa.alloc_pages(0).unwrap();
        assert_eq!(fa.stats().free_per_order[10], 0);
        assert_eq!(fa.page_count(p).unwrap(), 1);
        fa.free_pages(p, 0).unwrap();
        assert_eq!(fa.stats().free_per_order[10], 1);
        assert_stats_consistent(fa);
    });
}
