//! Criterion benchmarks of the mm buddy allocator against `buddy_system_allocator` 0.13's
//! `FrameAllocator`, on the same frame range and the same operation sequences.
//!
//! Run: `cargo bench -p mm --bench buddy`. Each group holds a `baton` and a `bsa` function;
//! baton runs with its free-path checks on (the default) and, where it matters, off.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::time::Duration;

use buddy_system_allocator::FrameAllocator as Bsa;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mm::{FrameAllocator, Memblock, Page, Pfn, PhysRange, PAGE_SHIFT};

/// 256 MiB of RAM at 1 GiB: 65536 frames, 64 order-10 blocks.
const BASE_PFN: u64 = 0x40000;
const FRAMES: u64 = 65536;
/// `buddy_system_allocator`'s ORDER is max order + 1.
const BSA_ORDER: usize = 11;

type BsaAlloc = Bsa<BSA_ORDER>;

fn memblock() -> Memblock {
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::from_bounds(
        BASE_PFN << PAGE_SHIFT,
        (BASE_PFN + FRAMES) << PAGE_SHIFT,
    ))
    .expect("add_memory");
    mb
}

/// Runs `f` on a fresh baton allocator (max order 10) over the bench RAM.
fn with_baton(checks: bool, f: impl FnOnce(&mut FrameAllocator)) {
    let mb = memblock();
    let mut st: Vec<MaybeUninit<Page>> = (0..FrameAllocator::descriptors_needed(&mb))
        .map(|_| MaybeUninit::uninit())
        .collect();
    let mut fa = FrameAllocator::new(&mb, &mut st, 10).expect("new");
    fa.set_checks(checks);
    f(&mut fa);
}

fn bsa() -> BsaAlloc {
    let mut b = BsaAlloc::new();
    b.add_frame(BASE_PFN as usize, (BASE_PFN + FRAMES) as usize);
    b
}

/// A fixed pseudo-random sequence (xorshift64) so both allocators see the same work.
fn sequence(n: usize, slots: usize) -> Vec<(usize, u32)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let slot = (next() % slots as u64) as usize;
            // Mostly small orders, like a kernel: 0 (50%), 1-3 (30%), 4-6 (15%), 7-9 (5%).
            let r = next() % 100;
            let order = match r {
                0..50 => 0,
                50..80 => 1 + (next() % 3) as u32,
                80..95 => 4 + (next() % 3) as u32,
                _ => 7 + (next() % 3) as u32,
            };
            (slot, order)
        })
        .collect()
}

fn order0_pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("order0_pair");
    // Steady state: one page pinned, so the pair is a list pop and push (no split/merge).
    for checks in [true, false] {
        let name = if checks { "baton" } else { "baton_nochecks" };
        with_baton(checks, |fa| {
            let _pin = fa.alloc_pages(0).expect("pin");
            g.bench_function(name, |b| {
                b.iter(|| {
                    let p = fa.alloc_pages(black_box(0)).expect("alloc");
                    fa.free_pages(black_box(p), 0).expect("free");
                })
            });
        });
    }
    let mut a = bsa();
    let _pin = a.alloc(1);
    g.bench_function("bsa", |b| {
        b.iter(|| {
            let p = a.alloc(black_box(1)).expect("alloc");
            a.dealloc(black_box(p), 1);
        })
    });
    g.finish();
}

fn pair_by_order(c: &mut Criterion) {
    // From a fully coalesced state: an order-k pair splits 10-k times and merges 10-k times.
    let mut g = c.benchmark_group("pair_by_order");
    for order in 0..=10u32 {
        with_baton(true, |fa| {
            g.bench_with_input(BenchmarkId::new("baton", order), &order, |b, &o| {
                b.iter(|| {
                    let p = fa.alloc_pages(o).expect("alloc");
                    fa.free_pages(p, o).expect("free");
                })
            });
        });
        let mut a = bsa();
        g.bench_with_input(BenchmarkId::new("bsa", order), &order, |b, &o| {
            b.iter(|| {
                let p = a.alloc(1 << o).expect("alloc");
                a.dealloc(p, 1 << o);
            })
        });
    }
    g.finish();
}

const SLOTS: usize = 512;

fn mixed(c: &mut Criterion) {
    // A ring of 512 live blocks; each step frees one slot and refills it with a new order.
    let seq = sequence(1 << 14, SLOTS);
    let mut g = c.benchmark_group("mixed");
    with_baton(true, |fa| {
        let mut live: Vec<Option<(Pfn, u32)>> = vec![None; SLOTS];
        let mut i = 0;
        g.bench_function("baton", |b| {
            b.iter(|| {
                let (slot, order) = seq[i];
                i = (i + 1) % seq.len();
                if let Some((p, o)) = live[slot].take() {
                    fa.free_pages(p, o).expect("free");
                }
                live[slot] = fa.alloc_pages(order).ok().map(|p| (p, order));
            })
        });
    });
    let mut a = bsa();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; SLOTS];
    let mut i = 0;
    g.bench_function("bsa", |b| {
        b.iter(|| {
            let (slot, order) = seq[i];
            i = (i + 1) % seq.len();
            if let Some((p, n)) = live[slot].take() {
                a.dealloc(p, n);
            }
            live[slot] = a.alloc(1 << order).map(|p| (p, 1 << order));
        })
    });
    g.finish();
}

const BURST: usize = 256;

fn split_coalesce(c: &mut Criterion) {
    // From a fully coalesced state, take 256 order-0 pages (splitting order-10 blocks down)
    // and give them back in a scrambled order (merging all the way up again).
    let order: Vec<usize> = (0..BURST).map(|i| (i * 97) % BURST).collect();
    let mut g = c.benchmark_group("split_coalesce");
    with_baton(true, |fa| {
        let mut pages = vec![Pfn(0); BURST];
        g.bench_function("baton", |b| {
            b.iter(|| {
                for p in pages.iter_mut() {
                    *p = fa.alloc_pages(0).expect("alloc");
                }
                for &k in &order {
                    fa.free_pages(pages[k], 0).expect("free");
                }
            })
        });
    });
    let mut a = bsa();
    let mut pages = vec![0usize; BURST];
    g.bench_function("bsa", |b| {
        b.iter(|| {
            for p in pages.iter_mut() {
                *p = a.alloc(1).expect("alloc");
            }
            for &k in &order {
                a.dealloc(pages[k], 1);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = order0_pairs, pair_by_order, mixed, split_coalesce
}
criterion_main!(benches);
