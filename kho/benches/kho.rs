//! kho benchmark: preserve/unpreserve throughput, serialization and restore (validation) time
//! and metadata size for 1 GiB and 16 GiB of simulated preserved memory.
//!
//! Only metadata lives in memory: the arena holds tree pages and the KHO FDT; the preserved
//! memory is a RAM range nobody touches. Prints a Markdown table (docs/performance.md, kho).

use std::time::{Duration, Instant};

use kho::testing::write_kho_fdt;
use kho::testing::BumpPages;
use kho::testing::PreservedSet;
use kho::{validate, Inputs};
use kho::{Arena, BlockType, PhysMem};
use mm::{PhysAddr, PhysRange};

const ARENA_BASE: u64 = 0x4000_0000;
const ARENA_SIZE: u64 = 64 << 20;
const PRESERVED_BASE: u64 = 0x1_0000_0000;
const GIB: u64 = 1 << 30;

/// Blocks covering `[PRESERVED_BASE, + size)`: all order 0, or a deterministic mix of orders
/// 0..=10 (a third of them SPLIT).
fn blocks(size: u64, mixed: bool) -> Vec<(u64, u32, BlockType)> {
    let mut v = Vec::new();
    let mut at = PRESERVED_BASE;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while at < PRESERVED_BASE + size {
        let order = if mixed {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let align = ((at >> 12).trailing_zeros()).min(10);
            (x % 11).min(align as u64) as u32
        } else {
            0
        };
        let kind = if mixed && x.is_multiple_of(3) {
            BlockType::Split
        } else {
            BlockType::Contig
        };
        v.push((at, order, kind));
        at += 4096 << order;
    }
    v
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 3 };
    println!("| workload | blocks | preserve (blocks/s) | unpreserve (blocks/s) | serialize (of which CRC-32) | restore (validate) | tree pages | metadata per GiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for (size, mixed) in [
        (GIB, false),
        (GIB, true),
        (16 * GIB, false),
        (16 * GIB, true),
    ] {
        let bl = blocks(size, mixed);
        let arena = Arena::new(ARENA_BASE, ARENA_SIZE);
        let ar = arena.region();
        // Preserve.
        let (t_pre, (set, mut src)) = best_of(reps, || {
            let mut src = BumpPages::new(ar.start.0, ar.end.0 - (1 << 20));
            let mut set = PreservedSet::new(&arena, &mut src).unwrap();
            for &(p, o, k) in &bl {
                set.insert(&arena, &mut src, p, o, k).unwrap();
            }
            (set, src)
        });
        // Serialize: checksum + KHO FDT, copied into the arena.
        let fdt_at = ar.end.0 - (1 << 20);
        let (t_ser, fdt_len) = best_of(reps, || {
            let crc = set.checksum(&arena, &[]).unwrap();
            let fdt = write_kho_fdt(set.root(), crc, &[]).unwrap();
            let p = arena.ptr(fdt_at, fdt.len()).unwrap();
            // SAFETY: the arena owns these bytes (the last MiB, never a tree page).
            unsafe { std::ptr::copy_nonoverlapping(fdt.as_ptr(), p, fdt.len()) };
            fdt.len() as u64
        });
        let (t_crc, _) = best_of(reps, || set.checksum(&arena, &[]).unwrap());
        // Restore: full validation of the handover.
        let ram = [ar, PhysRange::new(PhysAddr(PRESERVED_BASE), 16 * GIB)];
        let inp = Inputs {
            kho_fdt: PhysRange::new(PhysAddr(fdt_at), fdt_len),
            ram: &ram,
            scratch: &[],
            avoid: &[],
        };
        let (t_res, v) = best_of(reps, || validate(&arena, &inp).unwrap());
        assert_eq!(v.blocks.len(), bl.len());
        let pages = set.page_count();
        // Unpreserve everything.
        let mut set = set;
        let t = Instant::now();
        for &(p, o, _) in &bl {
            set.remove(&arena, p, o).unwrap();
        }
        let t_un = t.elapsed();
        set.destroy(&arena, &mut src);
        let n = bl.len() as f64;
        let meta = (pages as u64 * 4096 + fdt_len) as f64 / (size / GIB) as f64;
        println!(
            "| {} GiB {} | {} | {:.2e} | {:.2e} | {:.2} ms ({:.2} ms) | {:.1} ms | {} | {:.1} KiB |",
            size / GIB,
            if mixed { "mixed orders 0-10" } else { "order 0" },
            bl.len(),
            n / t_pre.as_secs_f64(),
            n / t_un.as_secs_f64(),
            t_ser.as_secs_f64() * 1e3,
            t_crc.as_secs_f64() * 1e3,
            t_res.as_secs_f64() * 1e3,
            pages,
            meta / 1024.0
        );
    }
}
