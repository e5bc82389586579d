//! One generation of the handover chain, on the target: restore and run the workload,
//! print its `GEN` line, then either end the chain (`SOAK`, exit) or finalize kho, damage
//! the handover if a test asked for it, and enter the next image.
//!
//! Runs only when `baton.generations=` is on the command line; the sequence is the one
//! `workload` documents (and its host chains model).

extern crate alloc;

use alloc::vec::Vec;

use arch::entry::ImageLayout;
use arch::ExceptionLevel;
use board::bootinfo::BootInfo;
use board::cmdline::Cmdline;
use kho::{Incoming, Kho};
use log::{error, info, warn};
use mm::{FrameAllocator, PhysRange};
use workload::{self, damage, next_bootargs, Check, Clock, Config, Failure, GenOutcome, Stamp};

use super::exit;
use super::heap;
use super::memory::FRAMES;
use super::next_image::{self, Outgoing, Plan};
use super::peer;
use super::physmem::IdentityMem;
use super::warm_boot::KhoBoot;

/// Heap the workload may use while it holds the frame allocator (the heap cannot grow
/// then): records, kho's maps, the outgoing FDT.
const WORKLOAD_HEAP: usize = 4 << 20;

/// Heap per block of the scaled set (`baton.preserve=`): the incoming list, the restored
/// list and kho's outgoing block list, with room to spare.
const BULK_HEAP_PER_BLOCK: usize = 96;

/// Bytes the boot FDT may grow by when the handover rewrites `/chosen` (the KHO FDT and
/// scratch properties, the bootargs with the chain's counters).
const FDT_GROWTH: u64 = 4096;

/// Bytes the next image's command line may add to this one's (the carried counters:
/// `baton.gen=`, `baton.cold=`, `baton.vbytes=`, `baton.leaked=`, each up to 20 digits).
const BOOTARGS_GROWTH: usize = 160;

/// Generic-counter readings of this boot's steps, for the blackout's phases.
pub struct BootTimes {
    /// `kernel_main` entered.
    pub entry: u64,
    /// kho validation done (or the cold-boot scratch chosen).
    pub validated: u64,
    /// Frame allocator built.
    pub frames: u64,
}

fn fail(f: &Failure, status: u32) -> ! {
    error!("{f}");
    exit::exit(status)
}

fn handover_failure(generation: u32, detail: impl core::fmt::Display) -> Failure {
    Failure {
        generation,
        check: Check::Handover,
        detail: alloc::format!("{detail}"),
    }
}

/// Runs this boot's generation; never returns (next image, or exit).
#[allow(clippy::too_many_arguments)]
pub fn run(
    info: &BootInfo<'_>,
    args: &Cmdline<'_>,
    layout: &ImageLayout,
    el: ExceptionLevel,
    mem: &IdentityMem,
    kb: KhoBoot,
    times: BootTimes,
) -> ! {
    let cfg = match Config::from_cmdline(args, mm::MAX_ORDER) {
        Ok(c) => c,
        Err(e) => fail(&e.to_failure(), board::status::WORKLOAD_FAILED),
    };
    // The peer options are checked before any work, like every other value.
    let (asked_format, kho_test) = match (
        peer::format_asked(&args.handover_format),
        peer::kho_test_asked(&args.kho_test),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(d), _) | (_, Err(d)) => fail(
            &handover_failure(cfg.generation, d),
            board::status::WORKLOAD_FAILED,
        ),
    };
    // The scaled set must fit the RAM this image can use: refused now, by name, not after
    // allocating all of it.
    if cfg.bulk.is_some() {
        if let Err(e) = cfg.check_ram(usable_for_set(&kb)) {
            fail(&e.to_failure(), board::status::WORKLOAD_FAILED);
        }
    }
    // Before anything is preserved: the outgoing device tree must be one the handover can
    // write, or the generation would lose its preserved set at the jump.
    if !cfg.is_last() {
        if let Err(e) = check_outgoing_fdt(info, mem) {
            fail(
                &handover_failure(cfg.generation, e),
                board::status::NEXT_IMAGE,
            );
        }
    }
    // Check the next image before doing any work: a refused image stops the chain here.
    let plan = if cfg.is_last() {
        None
    } else {
        match next_image::plan(info, layout, mem) {
            Ok(p) => {
                // kho_scratch= chose less scratch than the next generation needs (its
                // images, frame allocator storage and early allocations): refuse now.
                if let Some((scratch, needs)) = kb.short {
                    fail(
                        &handover_failure(
                            cfg.generation,
                            next_image::NextImageError::Place(board::placement::NoRoom {
                                what: "next generation (images, frame allocator storage, early allocations)",
                                size: needs,
                                largest: scratch,
                            }),
                        ),
                        board::status::NEXT_IMAGE,
                    );
                }
                // Refuse now, before the generation's work, if scratch cannot hold what
                // the handover will place there (the next image at a 2 MiB boundary, the
                // image it passes on); the FDT is placed at the jump.
                let mut placer = board::placement::Placer::new(kb.free_scratch.clone());
                let fdt = info.fdt.map_or(0, |f| f.size()) + FDT_GROWTH;
                let room = placer
                    .place_image(&p.next.header)
                    .and_then(|_| match p.pass_on {
                        Some(po) => placer.place_blob("initrd", po.len).map(|_| ()),
                        None => Ok(()),
                    })
                    .and_then(|_| placer.place_blob("device tree", fdt).map(|_| ()));
                if let Err(e) = room {
                    fail(
                        &handover_failure(cfg.generation, next_image::NextImageError::Place(e)),
                        board::status::NEXT_IMAGE,
                    );
                }
                info!(
                    "chain: generation {} of {}, next image: {} at {:#x} ({} bytes, stamp {})",
                    cfg.generation,
                    cfg.generations,
                    p.next.source,
                    p.next.at,
                    p.next.len,
                    p.next
                        .header
                        .stamp
                        .map_or(alloc::string::String::from("none"), |c| alloc::format!(
                            "{c:#010x} ok"
                        ))
                );
                Some(p)
            }
            Err(e) => fail(
                &handover_failure(cfg.generation, e),
                board::status::NEXT_IMAGE,
            ),
        }
    };
    // The scaled set needs its block lists on both sides of the handover.
    let want = WORKLOAD_HEAP
        + cfg
            .bulk
            .map_or(0, |s| s.max_blocks() as usize * BULK_HEAP_PER_BLOCK);
    let got = heap::reserve(want, mm::MAX_ORDER);
    if got < want {
        warn!(
            "chain: heap reserve got {} of {} KiB",
            got / 1024,
            want / 1024
        );
    }
    let mut frames = FRAMES.lock();
    let Some(fa) = frames.as_mut() else {
        fail(
            &handover_failure(cfg.generation, "frame allocator not up"),
            board::status::NO_MEMORY,
        )
    };
    let incoming = attach(kb.reserved, fa);
    let ready = arch::timer::ticks();
    let mut out = match Kho::new(mem, fa, kb.scratch.clone()) {
        Ok(k) => k,
        Err(e) => fail(
            &handover_failure(cfg.generation, alloc::format!("kho: {e}")),
            board::status::WORKLOAD_FAILED,
        ),
    };
    // What the workload does not own (a Linux kernel's memory, an earlier image's carry
    // list) is carried into `out` first; the workload sees only its own handover.
    let own = [workload::record::CLIENT_NAME];
    let (incoming, mut peer) =
        match peer::receive(incoming, fa, mem, &mut out, cfg.generation, &own) {
            Ok(x) => x,
            Err(d) => fail(
                &handover_failure(cfg.generation, d),
                board::status::WORKLOAD_FAILED,
            ),
        };
    let clock = Clock {
        boot_ticks: times.entry,
        freq: arch::timer::frequency(),
        validated: times.validated,
        frames: times.frames,
        ready,
        now: arch::timer::ticks,
    };
    let mut outcome = match workload::run_generation(&cfg, fa, mem, incoming, &mut out, &clock) {
        Ok(o) => o,
        Err(f) => fail(&f, board::status::WORKLOAD_FAILED),
    };
    info!("{}", outcome.report);
    let Some(plan) = plan else {
        let soak = outcome.soak();
        info!("{soak}");
        exit::exit(if soak.ok {
            board::status::SUCCESS
        } else {
            board::status::WORKLOAD_FAILED
        })
    };
    let format = peer::out_format(asked_format, plan.next.header.stamp.is_some());
    if let Err(d) = peer::before_finalize(&mut peer, fa, mem, &mut out, format, kho_test, cfg.seed)
    {
        fail(
            &handover_failure(cfg.generation, d),
            board::status::WORKLOAD_FAILED,
        );
    }
    hand_over(
        info,
        el,
        mem,
        &cfg,
        fa,
        &mut out,
        &mut outcome,
        &plan,
        &kb.free_scratch,
        (&peer, format),
    )
}

/// Bytes the scaled preserved set may take: free RAM (deferred frames included), plus
/// the previous generation's preserved blocks (the set it restores), less the heap the
/// chain keeps for itself.
fn usable_for_set(kb: &KhoBoot) -> u64 {
    let free = super::memory::stats().map_or(0, |s| (s.free + s.deferred) * mm::PAGE_SIZE);
    let incoming: u64 = kb
        .reserved
        .as_ref()
        .map_or(0, |r| r.preserved().map(|p| p.size()).sum());
    (free + incoming).saturating_sub(WORKLOAD_HEAP as u64)
}

/// The rewrite the jump will do, tried now on the boot FDT with worst-case values.
fn check_outgoing_fdt(
    info: &BootInfo<'_>,
    mem: &IdentityMem,
) -> Result<(), next_image::NextImageError> {
    let boot_fdt = info.fdt.ok_or(next_image::NextImageError::NoFdt)?;
    // SAFETY: the boot FDT is reserved and never written.
    let bytes = unsafe { mem.bytes(boot_fdt.start.0, boot_fdt.size()) }
        .ok_or(next_image::NextImageError::NoFdt)?;
    let highest = info.memory.iter().map(|r| r.end.0).max().unwrap_or(0);
    kho::bootfdt::check_rewritable(bytes, highest, info.bootargs.len() + BOOTARGS_GROWTH)
        .map_err(next_image::NextImageError::Fdt)
}

/// Attaches the reserved handover to the frame allocator; a failure is logged and the
/// generation runs cold (the blocks stay reserved: nothing is handed out twice).
fn attach(reserved: Option<kho::Reserved>, fa: &mut FrameAllocator<'_>) -> Option<Incoming> {
    match reserved?.attach(fa) {
        Ok(i) => Some(i),
        Err(e) => {
            error!("kho: attaching the reserved handover: {e}; booting cold");
            None
        }
    }
}

/// Seals the record, finalizes kho, damages the handover if asked, and jumps. Returns only
/// through `exit`.
#[allow(clippy::too_many_arguments)]
fn hand_over(
    info: &BootInfo<'_>,
    el: ExceptionLevel,
    mem: &IdentityMem,
    cfg: &Config,
    fa: &mut FrameAllocator<'_>,
    out: &mut Kho<&IdentityMem>,
    outcome: &mut GenOutcome,
    plan: &Plan,
    free_scratch: &[PhysRange],
    (peer, format): (&peer::Peer, peer::OutFormat),
) -> ! {
    let n = cfg.generation;
    if let Err(f) = outcome.seal(mem, arch::timer::ticks()) {
        fail(&f, board::status::WORKLOAD_FAILED);
    }
    let mut h = match peer::finalize(peer, fa, out, format) {
        Ok(h) => h,
        Err(e) => fail(
            &handover_failure(n, alloc::format!("kho finalize: {e}")),
            board::status::WORKLOAD_FAILED,
        ),
    };
    let slot = outcome.timing_slot();
    if let Err(f) = workload::stamp(mem, slot, Stamp::Finalized, arch::timer::ticks()) {
        fail(&f, board::status::WORKLOAD_FAILED);
    }
    if let Some(kind) = cfg.damage_now() {
        warn!("baton.damage={kind}: damaging the outgoing handover before the jump (test)");
        let mut page = || fa.alloc_pages(0).ok().map(|p| p.phys().0);
        h = match damage::inject(kind, mem, &h, &mut page) {
            Ok(h) => h,
            Err(e) => fail(
                &handover_failure(n, alloc::format!("damage {kind}: {e}")),
                board::status::WORKLOAD_FAILED,
            ),
        };
    }
    let args = next_bootargs(info.bootargs, &outcome.carried());
    let blobs: Vec<(u64, u64)> = alloc::vec![outcome.record_blob()];
    let e = next_image::jump(
        mem,
        out,
        plan,
        &Outgoing {
            info,
            el,
            handover: h,
            bootargs: &args,
            blobs: &blobs,
            free_scratch,
            timing_slot: slot,
        },
    );
    fail(&handover_failure(n, e), board::status::NEXT_IMAGE)
}
