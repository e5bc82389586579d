//! Host chains: many generations over one arena that stands for RAM, each "boot" building a
//! fresh memblock, frame allocator and kho incoming/outgoing exactly as the kernel does.
//!
//! One helper (`Chain::boot`) plays the kernel's part; the tests only drive it and check the
//! lines it collects. Nothing here runs on the target.

use std::string::ToString;
use std::vec::Vec;

use kho::{Arena, Handover, HandoverRefs, Kho, RestoreError};
use mm::{FrameAllocator, Memblock, Page, PhysRange};

use super::*;

const BASE: u64 = 0x4000_0000;
const RAM: u64 = 64 << 20;
const SCRATCH: u64 = 8 << 20;
/// Generic-timer frequency the harness pretends to have.
const FREQ: u64 = 62_500_000;
/// Ticks of each boot step the harness pretends to take (at 62.5 MHz: 10, 20, 30 µs after
/// entry for validated, frames, ready; the restore ends 50 µs after ready).
const T_VALIDATED: u64 = 625;
const T_FRAMES: u64 = 1_250;
const T_READY: u64 = 1_875;
const T_RESTORED: u64 = T_READY + 3_125;

std::thread_local! {
    /// The harness's generic counter as `Clock::now` reads it (one per test thread).
    static NOW: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

fn now() -> u64 {
    NOW.with(|n| n.get())
}

/// What one simulated boot produced.
#[derive(Debug)]
struct Boot {
    /// The GEN line, or the FAIL.
    result: Result<GenReport, Failure>,
    /// Why the incoming handover was rejected, if it was.
    rejected: Option<RestoreError>,
    /// The SOAK line if this was the last generation.
    soak: Option<SoakReport>,
    /// The record this generation wrote.
    record: Option<Record>,
    /// Where it wrote it.
    record_blob: (u64, u64),
}

/// A chain of images over one arena.
struct Chain {
    arena: Arena,
    bootargs: Vec<u8>,
    handover: Option<Handover>,
    ticks: u64,
    /// Test hook: preserve one page the record does not list (a leak) before finalize.
    leak_one_page: bool,
    /// Test hook: the generation whose next-handover check (`before_work`) refuses.
    refuse_next: Option<u32>,
    /// Preserved pages `out` held after each generation's `before_work` refused.
    refused_with: Vec<u64>,
    /// Generations whose `before_work` ran, in order.
    prepared: Vec<u32>,
}

impl Chain {
    fn new(bootargs: &str) -> Self {
        Chain {
            arena: Arena::new(BASE, RAM),
            bootargs: bootargs.as_bytes().to_vec(),
            handover: None,
            ticks: 1_000,
            leak_one_page: false,
            refuse_next: None,
            refused_with: Vec::new(),
            prepared: Vec::new(),
        }
    }

    fn ram(&self) -> PhysRange {
        self.arena.region()
    }

    /// Memblock with the arena's RAM and `scratch` reserved (or a new scratch area chosen).
    fn memblock(&self, scratch: Option<&[PhysRange]>) -> (Memblock, Vec<PhysRange>) {
        let mut mb = Memblock::new();
        mb.add_memory(self.ram()).expect("add_memory");
        let areas = match scratch {
            Some(a) => {
                for s in a {
                    mb.reserve(*s).expect("reserve scratch");
                }
                a.to_vec()
            }
            None => vec![kho::choose_scratch(&mut mb, SCRATCH).expect("scratch")],
        };
        (mb, areas)
    }

    /// One image boot with buddy max order `max_order`: what the kernel main does.
    fn boot(&mut self, max_order: u32) -> Boot {
        let cfg = Config::from_bootargs(&self.bootargs, max_order).expect("bootargs");
        let ram = [self.arena.region()];
        let mem = &self.arena;
        let mut rejected = None;
        // Warm path: read the scratch areas, probe (validate + reserve) the handover.
        let mut warm = None;
        if let Some(h) = self.handover.take() {
            let refs = HandoverRefs {
                kho_fdt: h.kho_fdt,
                scratch_array: h.scratch_array,
            };
            match kho::read_scratch(mem, &ram, &refs) {
                Err(e) => rejected = Some(e),
                Ok(areas) => {
                    let (mb, areas) = self.memblock(Some(&areas));
                    match kho::probe(mem, &refs, &ram, &areas, &[]) {
                        Ok(r) => warm = Some((mb, areas, r)),
                        Err(e) => rejected = Some(e),
                    }
                }
            }
        }
        let (mb, scratch, reserved) = match warm {
            Some((mb, a, r)) => (mb, a, Some(r)),
            None => {
                let (mb, a) = self.memblock(None);
                (mb, a, None)
            }
        };
        // As the kernel builds it: deferred descriptor init around the preserved ranges.
        let need = mm::DeferredStorage::for_memblock(&mb);
        let mut pages: Vec<Page> = (0..need.descriptors).map(|_| Page::default()).collect();
        let mut bits = vec![0u64; need.chunk_words];
        let mut fa = match &reserved {
            Some(r) => FrameAllocator::new_deferred_set(
                &mb,
                &mut pages,
                &mut bits,
                max_order,
                r.preserved(),
            ),
            None => FrameAllocator::new_deferred(
                &mb,
                &mut pages,
                &mut bits,
                max_order,
                core::iter::empty::<mm::PhysRange>(),
            ),
        }
        .expect("frame allocator");
        let incoming = reserved.map(|r| r.attach(&mut fa).expect("attach"));
        let mut out = Kho::new(mem, &mut fa, scratch).expect("kho");
        let clock = Clock {
            boot_ticks: self.ticks,
            freq: FREQ,
            validated: self.ticks + T_VALIDATED,
            frames: self.ticks + T_FRAMES,
            ready: self.ticks + T_READY,
            now,
        };
        NOW.with(|n| n.set(self.ticks + T_RESTORED));
        // The kernel's checks of the next image and boot FDT: after the restore, before work.
        let (prepared, refuse) = (&mut self.prepared, self.refuse_next == Some(cfg.generation));
        let mut before_work = || {
            prepared.push(cfg.generation);
            if refuse {
                return Err(Failure::handover(
                    cfg.generation,
                    "next image refused (test)",
                ));
            }
            Ok(())
        };
        let run = run_generation(
            &cfg,
            &mut fa,
            mem,
            incoming,
            &mut out,
            &clock,
            &mut before_work,
        );
        let mut outcome = match run {
            Ok(o) => o,
            Err(f) => {
                if refuse {
                    self.refused_with
                        .push(out.preserved_pages().expect("listing"));
                }
                return Boot {
                    result: Err(f),
                    rejected,
                    soak: None,
                    record: None,
                    record_blob: (0, 0),
                };
            }
        };
        let soak = cfg.is_last().then(|| outcome.soak());
        self.ticks += 125_000; // 2 ms of work
        if self.leak_one_page {
            let p = fa.alloc_pages(0).expect("page");
            out.preserve_pages(&mut fa, p, 1).expect("preserve");
        }
        outcome.seal(mem, self.ticks).expect("seal");
        let mut h = out.finalize(&mut fa).expect("finalize");
        // 100 µs to finalize, 100 µs more to the trampoline.
        let slot = outcome.timing_slot();
        stamp(mem, slot, Stamp::Finalized, self.ticks + 6_250).expect("stamp");
        stamp(mem, slot, Stamp::Jumped, self.ticks + 12_500).expect("stamp");
        if let Some(kind) = cfg.damage_now() {
            h = damage::inject(kind, mem, &h, &mut || {
                fa.alloc_pages(0).ok().map(|p| p.phys().0)
            })
            .expect("damage");
        }
        self.ticks += 62_500; // 1 ms through the trampoline into the next image
        self.handover = Some(h);
        self.bootargs = next_bootargs(&self.bootargs, &outcome.carried());
        Boot {
            result: Ok(outcome.report.clone()),
            rejected,
            soak,
            record: Some(outcome.record().clone()),
            record_blob: outcome.record_blob(),
        }
    }
}

/// Runs a whole chain; `max_order(n)` picks the image of generation `n`.
fn run_chain(bootargs: &str, generations: u32, max_order: impl Fn(u32) -> u32) -> Vec<Boot> {
    let mut chain = Chain::new(bootargs);
    let mut boots = Vec::new();
    for n in 0..generations {
        let b = chain.boot(max_order(n));
        let failed = b.result.is_err();
        boots.push(b);
        if failed {
            break;
        }
    }
    boots
}

fn reports(boots: &[Boot]) -> Vec<&GenReport> {
    boots
        .iter()
        .map(|b| match &b.result {
            Ok(r) => r,
            Err(f) => panic!("{f}"),
        })
        .collect()
}

/// The checks the soak runner applies to every GEN line, plus the SOAK line.
fn assert_clean_chain(boots: &[Boot], generations: u32, cold: &[u32]) {
    let rs = reports(boots);
    assert_eq!(rs.len(), generations as usize);
    let total = rs[0].total_pages;
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.n, i as u32);
        assert_eq!(r.cold, cold.contains(&r.n), "{r}");
        assert_eq!((r.leaked, r.bad_pages, r.total_pages), (0, 0, total), "{r}");
        assert!(r.preserved >= 6 && r.preserved_pages > 0, "{r}");
        if r.cold {
            assert_eq!(
                (r.restored, r.verified_bytes, r.handover_us),
                (0, 0, 0),
                "{r}"
            );
        } else {
            assert!(r.restored >= 6 && r.verified_bytes > 0, "{r}");
            // Seal → restored: 1 ms to entry, then 30 µs of boot steps and 50 µs of restore.
            assert_eq!(r.handover_us, 1_080, "{r}");
            assert_eq!(
                r.phases,
                Phases {
                    finalize_us: 100,
                    copyout_us: 100,
                    trampoline_us: 800,
                    early_us: 10,
                    reserve_us: 10,
                    ready_us: 10,
                    restore_us: 50,
                },
                "{r}"
            );
            assert_eq!(r.phases.total(), r.handover_us);
        }
    }
    let soak = boots
        .last()
        .and_then(|b| b.soak)
        .expect("SOAK after the last generation");
    let verified: u64 = rs.iter().map(|r| r.verified_bytes).sum();
    assert_eq!(
        soak,
        SoakReport {
            generations,
            cold: cold.len() as u32,
            verified_bytes: verified,
            leaked: 0,
            ok: true
        }
    );
}

#[test]
fn fifty_generations_restore_every_byte_and_leak_nothing() {
    let boots = run_chain(
        "console=ttyAMA0 baton.seed=0x5eed baton.generations=50",
        50,
        |_| 10,
    );
    assert_clean_chain(&boots, 50, &[0]);
    let rs = reports(&boots);
    assert!(rs.iter().map(|r| r.freed).sum::<u64>() > 50);
    assert!(rs.iter().map(|r| r.split).sum::<u64>() > 50);
    // Every kind was recorded, and at least one kept block crossed three generations.
    let kinds: std::collections::BTreeSet<Kind> = boots
        .iter()
        .flat_map(|b| {
            b.record
                .iter()
                .flat_map(|r| r.entries.iter().map(|e| e.kind))
        })
        .collect();
    assert_eq!(kinds.len(), Kind::ALL.len());
    let oldest = boots
        .iter()
        .flat_map(|b| {
            b.record
                .iter()
                .flat_map(|r| r.entries.iter().map(move |e| r.generation - e.fill_gen))
        })
        .max();
    assert!(oldest >= Some(3), "{oldest:?}");
}

#[test]
fn same_seed_replays_the_same_chain() {
    let a = run_chain("baton.seed=7 baton.generations=4", 4, |_| 10);
    let b = run_chain("baton.seed=7 baton.generations=4", 4, |_| 10);
    assert_eq!(reports(&a), reports(&b));
    let c = run_chain("baton.seed=8 baton.generations=4", 4, |_| 10);
    assert_ne!(reports(&a), reports(&c));
}

#[test]
fn order_10_blocks_survive_an_image_that_stops_at_order_8() {
    // A (max order 10) -> B (8) -> A -> ...
    let boots = run_chain("baton.seed=3 baton.generations=13", 13, |n| {
        if n % 2 == 0 {
            10
        } else {
            8
        }
    });
    assert_clean_chain(&boots, 13, &[0]);
    let mut handed_big = 0;
    for pair in boots.windows(2) {
        let (a, b) = (
            pair[0].record.as_ref().expect("record"),
            pair[1].record.as_ref().expect("record"),
        );
        if a.max_order != 10 {
            continue;
        }
        assert_eq!(b.max_order, 8);
        for e in a
            .entries
            .iter()
            .filter(|e| e.kind != Kind::PhysRange && e.order() > 8)
        {
            handed_big += 1;
            // B restored it (its report counts it) and freed it: it is not in B's record.
            assert!(
                !b.entries.iter().any(|x| x.phys == e.phys),
                "{e:?} kept by the order-8 image"
            );
        }
    }
    assert!(
        handed_big >= 3,
        "only {handed_big} order>8 blocks crossed into the order-8 image"
    );
}

#[test]
fn every_damage_kind_makes_the_next_generation_cold_and_the_chain_goes_on() {
    for kind in DamageKind::ALL {
        let args = std::format!(
            "baton.seed=11 baton.generations=7 baton.damage={kind} baton.damage-every=3"
        );
        let boots = run_chain(&args, 7, |_| 10);
        assert_clean_chain(&boots, 7, &[0, 3, 6]);
        for (n, b) in boots.iter().enumerate() {
            let err = b.rejected.as_ref();
            match n {
                3 | 6 => {
                    let ok = match (kind, err) {
                        (DamageKind::LeafBitflip, Some(RestoreError::Checksum { .. })) => true,
                        (
                            DamageKind::WildPointer,
                            Some(RestoreError::NodeOutsideRam { phys, .. }),
                        ) => *phys == damage::WILD_ADDRESS,
                        (
                            DamageKind::BadOrder,
                            Some(RestoreError::BadKey {
                                err: kho::KeyError::OrderTooLarge { order: 31, .. },
                                ..
                            }),
                        ) => true,
                        (
                            DamageKind::BadType,
                            Some(RestoreError::BadKey {
                                err: kho::KeyError::UnknownTypeBits { key },
                                ..
                            }),
                        ) => *key == damage::BAD_TYPE_KEY,
                        (DamageKind::TruncateFdt, Some(RestoreError::KhoFdt { .. })) => true,
                        (
                            DamageKind::ScratchOverlap,
                            Some(RestoreError::NodeOverlaps { level: 5, .. }),
                        ) => true,
                        _ => false,
                    };
                    assert!(ok, "{kind}: generation {n} rejected with {err:?}");
                }
                _ => assert_eq!(err, None, "{kind}: generation {n}"),
            }
        }
    }
}

#[test]
fn a_corrupted_byte_fails_the_next_generation_naming_verify() {
    let mut chain = Chain::new("baton.seed=5 baton.generations=3");
    let b0 = chain.boot(10);
    let e = b0.record.expect("record").entries[1];
    chain.arena.flip_bit(e.phys + e.len - 1, 6);
    let f = chain.boot(10).result.expect_err("corruption not caught");
    assert_eq!((f.generation, f.check), (1, Check::Verify), "{f}");
    assert!(
        f.to_string().starts_with("FAIL gen=1 check=verify detail="),
        "{f}"
    );
}

#[test]
fn a_preserved_page_missing_from_the_record_is_a_leak() {
    let mut chain = Chain::new("baton.seed=6 baton.generations=3");
    chain.leak_one_page = true;
    chain.boot(10).result.expect("generation 0");
    let f = chain.boot(10).result.expect_err("leak not caught");
    assert_eq!((f.generation, f.check), (1, Check::Leak), "{f}");
    assert!(
        f.detail
            .starts_with("1 preserved blocks (1 pages) not in the record"),
        "{f}"
    );
}

#[test]
fn the_next_handover_is_checked_once_after_the_restore_and_a_refusal_preserves_nothing() {
    let mut chain = Chain::new("baton.seed=11 baton.generations=4");
    chain.refuse_next = Some(2);
    chain.boot(10).result.expect("generation 0");
    chain.boot(10).result.expect("generation 1");
    let f = chain.boot(10).result.expect_err("refusal not returned");
    assert_eq!((f.generation, f.check), (2, Check::Handover), "{f}");
    assert_eq!(f.detail, "next image refused (test)");
    assert_eq!(chain.prepared, [0, 1, 2]);
    // The refusal came before the workload freed, allocated or preserved anything.
    assert_eq!(chain.refused_with, [0]);
}

#[test]
fn a_damaged_record_fails_the_next_generation_naming_record() {
    let mut chain = Chain::new("baton.seed=9 baton.generations=3");
    let (at, _) = chain.boot(10).record_blob;
    chain.arena.flip_bit(at + 1, 0); // FDT magic
    let f = chain.boot(10).result.expect_err("record damage not caught");
    assert_eq!((f.generation, f.check), (1, Check::Record), "{f}");
    assert_eq!(f.detail, "record: FDT magic 0xd00cfeed is not 0xd00dfeed");
}

/// Pages of a scaled set of `bytes`.
const fn pages(bytes: u64) -> u64 {
    bytes / 4096
}

#[test]
fn a_scaled_set_survives_every_generation_in_each_shape() {
    for (shape, min_blocks) in [
        ("scatter", pages(4 << 20)),
        ("dense", pages(4 << 20)),
        ("mixed", 8),
    ] {
        let args =
            format!("baton.seed=7 baton.generations=6 baton.preserve=4M baton.shape={shape}");
        let boots = run_chain(&args, 6, |_| 10);
        assert_clean_chain(&boots, 6, &[0]);
        for (n, b) in boots.iter().enumerate() {
            let rec = b.record.as_ref().expect("record");
            assert_eq!(rec.bulk.pages, pages(4 << 20), "{shape} generation {n}");
            assert!(rec.bulk.blocks >= min_blocks, "{shape}: {:?}", rec.bulk);
            let r = reports(&boots)[n];
            if n > 0 {
                // Every block of the set and of the record came back and was verified.
                assert!(r.blocks > rec.bulk.blocks / 2, "{shape}: {r}");
                assert!(r.verified_bytes >= (4 << 20) * 8 / 10, "{shape}: {r}");
            }
        }
    }
}

#[test]
fn a_scaled_block_missing_from_the_handover_fails_the_totals() {
    let mut chain =
        Chain::new("baton.seed=3 baton.generations=3 baton.preserve=1M baton.shape=mixed");
    let first = chain.boot(10);
    assert!(first.result.is_ok());
    // The sealed record claims one more scaled page than the handover holds (same size).
    let mut rec = first.record.expect("record");
    rec.timestamp = chain.ticks - 62_500;
    rec.bulk.pages += 1;
    let bytes = rec.encode().expect("encode");
    assert_eq!(bytes.len() as u64, first.record_blob.1);
    pattern::write_bytes(&chain.arena, first.record_blob.0, &bytes).expect("write");
    let f = chain.boot(10).result.expect_err("totals mismatch");
    assert_eq!(f.check, Check::Accounting, "{f}");
    assert!(f.detail.starts_with("bulk set: found"), "{f}");
}
