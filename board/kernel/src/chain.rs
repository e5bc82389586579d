//! One generation of the handover chain, on the target: restore and run the workload,
//! print its `GEN` line, then either end the chain (`SOAK`, exit) or finalize kho, damage
//! the handover if a test asked for it, and enter the next image.
//!
//! Runs only when `baton.generations=` is on the command line; the sequence is the one
//! `workload` documents (and its host chains model). Talks to the workload only through
//! its interface (`workload::Generation`, `workload::GenOutcome`), never its internals.

extern crate alloc;

use core::fmt::Display;

use arch::entry::ImageLayout;
use arch::ExceptionLevel;
use board::bootinfo::BootInfo;
use board::cmdline::Cmdline;
use board::placement::NoRoom;
use kho::bootfdt::RewritePlan;
use kho::{Incoming, Kho};
use log::{error, info, warn};
use mm::FrameAllocator;
use workload::{Clock, Failure, GenOutcome, Generation};

use super::exit;
use super::heap;
use super::kho_boot::KhoBoot;
use super::memory::FRAMES;
use super::next_image::{self, NextImageError, Outgoing, Plan};
use super::peer::{self, OutFormat, Peer};
use super::physmem::IdentityMem;
use super::scratch_need::{self, Placement};

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

/// What the jump enters, and where it goes: chosen and placed before the generation's work,
/// with what the check of the outgoing device tree proved (its rewrite at the jump reuses it).
struct Next {
    plan: Plan,
    placement: Placement,
    fdt: RewritePlan,
}

/// What `baton.handover-format=` and `baton.kho-test=` asked for.
#[derive(Copy, Clone)]
struct PeerOptions {
    format: Option<OutFormat>,
    kho_test: Option<u64>,
}

fn fail(f: &Failure, status: u32) -> ! {
    error!("{f}");
    exit::exit(status)
}

/// The value, or the generation's `check=handover` failure naming `e`, and exit `status`.
fn or_fail<T, E: Display>(r: Result<T, E>, generation: u32, status: u32) -> T {
    r.unwrap_or_else(|e| fail(&Failure::handover(generation, e), status))
}

/// Runs this boot's generation; never returns (next image, or exit). Every refusal that
/// can be known before the work comes first: the values now, the next image and outgoing
/// device tree right after the restore (they prepare the next handover, not this one's
/// blackout), before the workload frees, allocates or preserves anything.
#[allow(clippy::too_many_arguments)]
pub fn run(
    info: &BootInfo<'_>,
    args: &Cmdline<'_>,
    layout: &ImageLayout,
    el: ExceptionLevel,
    mem: &IdentityMem,
    mut kb: KhoBoot,
    times: BootTimes,
) -> ! {
    let gen = Generation::from_cmdline(args, mm::MAX_ORDER)
        .unwrap_or_else(|f| fail(&f, board::status::WORKLOAD_FAILED));
    let opts = peer_options(args, &gen);
    check_set_fits(&gen, &kb);
    reserve_heap(&gen, info, mem);

    let mut frames = FRAMES.lock();
    let Some(fa) = frames.as_mut() else {
        fail(
            &Failure::handover(gen.number(), "frame allocator not up"),
            board::status::NO_MEMORY,
        )
    };
    let reserved = kb.reserved.take();
    let mut next = None;
    let mut choose = || {
        if !gen.is_last() {
            next = Some(choose_next(info, layout, mem, &kb, &gen));
        }
        Ok(())
    };
    let (mut out, mut peer, mut outcome) =
        run_workload(&gen, fa, mem, reserved, &kb.scratch, times, &mut choose);
    if gen.is_last() {
        end_chain(&outcome)
    }
    let Some(next) = next else {
        fail(
            &Failure::handover(gen.number(), "next image not checked before the work"),
            board::status::NEXT_IMAGE,
        )
    };

    let format = peer::out_format(opts.format, next.plan.next.header.stamp.is_some());
    or_fail(
        peer::before_finalize(
            &mut peer,
            fa,
            mem,
            &mut out,
            format,
            opts.kho_test,
            gen.seed(),
        ),
        gen.number(),
        board::status::WORKLOAD_FAILED,
    );
    let sealed = Sealed {
        gen: &gen,
        outcome: &mut outcome,
        peer: &peer,
        format,
    };
    hand_over(info, el, mem, fa, &mut out, sealed, &next)
}

/// The generation's work: attach the handover, start the outgoing one, carry what the
/// workload does not own, run the workload (`before_work` after its restore) and print its
/// `GEN` line.
fn run_workload<'m>(
    gen: &Generation,
    fa: &mut FrameAllocator<'_>,
    mem: &'m IdentityMem,
    reserved: Option<kho::Reserved>,
    scratch: &[mm::PhysRange],
    times: BootTimes,
    before_work: &mut dyn FnMut() -> Result<(), Failure>,
) -> (Kho<&'m IdentityMem>, Peer, GenOutcome) {
    let (n, status) = (gen.number(), board::status::WORKLOAD_FAILED);
    let incoming = attach(reserved, fa);
    let ready = arch::timer::ticks();
    let mut out = or_fail(
        Kho::new(mem, fa, scratch.to_vec()).map_err(|e| alloc::format!("kho: {e}")),
        n,
        status,
    );
    // What the workload does not own (a Linux kernel's memory, an earlier image's carry
    // list) is carried into `out` first; the workload sees only its own handover.
    let (incoming, peer) = or_fail(
        peer::receive(incoming, fa, mem, &mut out, n, gen.client_names()),
        n,
        status,
    );
    let clock = Clock {
        boot_ticks: times.entry,
        freq: arch::timer::frequency(),
        validated: times.validated,
        frames: times.frames,
        ready,
        now: arch::timer::ticks,
    };
    let outcome = gen
        .run(fa, mem, incoming, &mut out, &clock, before_work)
        .unwrap_or_else(|f| fail(&f, status));
    // The handover is restored: what the boot held back (a warm boot's log) goes out now.
    drivers::console::release();
    info!("{}", outcome.report);
    // The heap's self-check, after the restore (outside the blackout); `reserve_heap` left
    // room for it, since the heap cannot grow while the frame allocator is held.
    heap::check_and_log();
    (out, peer, outcome)
}

/// The peer options, checked before any work like every other value.
fn peer_options(args: &Cmdline<'_>, gen: &Generation) -> PeerOptions {
    let status = board::status::WORKLOAD_FAILED;
    PeerOptions {
        format: or_fail(
            peer::format_asked(&args.handover_format),
            gen.number(),
            status,
        ),
        kho_test: or_fail(peer::kho_test_asked(&args.kho_test), gen.number(), status),
    }
}

/// The scaled set must fit the RAM this image can use: refused now, by name, not after
/// allocating all of it. Free RAM counts deferred frames; the previous generation's
/// preserved blocks are the set it restores.
fn check_set_fits(gen: &Generation, kb: &KhoBoot) {
    let free = super::memory::stats().map_or(0, |s| (s.free + s.deferred) * mm::PAGE_SIZE);
    let incoming: u64 = kb.reserved.as_ref().map_or(0, |r| r.preserved_bytes());
    if let Err(f) = gen.check_ram(free, incoming) {
        fail(&f, board::status::WORKLOAD_FAILED);
    }
}

/// Everything about the next image that can be refused before the generation's work: the
/// outgoing device tree must be writable, the next image valid, the scratch `kho_scratch=`
/// chose big enough, and the one placement must fit. Logs the choice.
fn choose_next(
    info: &BootInfo<'_>,
    layout: &ImageLayout,
    mem: &IdentityMem,
    kb: &KhoBoot,
    gen: &Generation,
) -> Next {
    let (n, status) = (gen.number(), board::status::NEXT_IMAGE);
    // Before anything is preserved: a device tree the handover cannot write would lose the
    // generation's preserved set at the jump.
    let fdt = or_fail(check_outgoing_fdt(info, mem), n, status);
    let plan = or_fail(next_image::plan(info, layout, mem), n, status);
    // kho_scratch= chose less scratch than the next generation needs (its images, frame
    // allocator storage and early allocations).
    if let Some((scratch, needs)) = kb.short {
        let short = NoRoom {
            what: "next generation (images, frame allocator storage, early allocations)",
            size: needs,
            largest: scratch,
        };
        fail(&Failure::handover(n, NextImageError::Place(short)), status);
    }
    let fdt_size = info.fdt.map_or(0, |f| f.size());
    let placement = or_fail(
        scratch_need::place(&plan, &kb.free_scratch, fdt_size).map_err(NextImageError::Place),
        n,
        status,
    );
    let stamp = plan.next.header.stamp;
    info!(
        "chain: generation {} of {}, next image: {} at {:#x} ({} bytes, stamp {})",
        n,
        gen.generations(),
        plan.next.source,
        plan.next.at,
        plan.next.len,
        match (stamp, plan.next.source) {
            (None, _) => alloc::string::String::from("none"),
            (Some(c), next_image::Source::OwnCopy) =>
                alloc::format!("{c:#010x}, checked at the copy"),
            (Some(c), _) => alloc::format!("{c:#010x} ok"),
        }
    );
    Next {
        plan,
        placement,
        fdt,
    }
}

/// Reserves the heap the workload asks for while it holds the frame allocator.
///
/// The next-handover check runs while the workload holds the frame allocator too: room for
/// it when there is a next image.
fn reserve_heap(gen: &Generation, info: &BootInfo<'_>, mem: &IdentityMem) {
    let check = if gen.is_last() {
        0
    } else {
        next_check_heap(info, mem)
    };
    let want = gen.heap_budget() + heap::SELF_CHECK_BYTES + check;
    let got = heap::reserve(want, mm::MAX_ORDER);
    if got < want {
        warn!(
            "chain: heap reserve got {} of {} KiB",
            got / 1024,
            want / 1024
        );
    }
}

/// Heap the next-handover check needs beyond the boot FDT's own blocks: the plan, the
/// worst-case command line, the next image's checks and their messages.
const NEXT_CHECK_HEAP_BASE: usize = 64 << 10;
/// Heap per byte of the boot FDT's structure and strings blocks that the check may hold at
/// once: the strict parse's nodes and properties, the full writer's output, the splice's.
const NEXT_CHECK_HEAP_PER_FDT_BYTE: usize = 8;

/// Heap for `choose_next`, from the boot FDT's header (a tree without one, or with one the
/// check refuses before parsing, needs only the base).
fn next_check_heap(info: &BootInfo<'_>, mem: &IdentityMem) -> usize {
    let Some(fdt) = info.fdt else {
        return NEXT_CHECK_HEAP_BASE;
    };
    // SAFETY: the boot FDT is reserved and never written.
    let bytes = unsafe { mem.bytes(fdt.start.0, fdt.size()) }.unwrap_or(&[]);
    let used = kho::check_fdt_header(bytes, bytes.len()).map_or(0, |h| {
        h.size_dt_struct as usize + h.size_dt_strings as usize
    });
    NEXT_CHECK_HEAP_BASE + NEXT_CHECK_HEAP_PER_FDT_BYTE * used
}

/// The last generation: print `SOAK` and exit with its verdict.
fn end_chain(outcome: &GenOutcome) -> ! {
    let soak = outcome.soak();
    info!("{soak}");
    exit::exit(if soak.ok {
        board::status::SUCCESS
    } else {
        board::status::WORKLOAD_FAILED
    })
}

/// The rewrite the jump will do, tried now on the boot FDT with worst-case values; the plan
/// lets the jump skip parsing the same bytes again (it proves them the same by CRC-32).
fn check_outgoing_fdt(
    info: &BootInfo<'_>,
    mem: &IdentityMem,
) -> Result<RewritePlan, NextImageError> {
    let boot_fdt = info.fdt.ok_or(NextImageError::NoFdt)?;
    // SAFETY: the boot FDT is reserved and never written.
    let bytes =
        unsafe { mem.bytes(boot_fdt.start.0, boot_fdt.size()) }.ok_or(NextImageError::NoFdt)?;
    let highest = info.memory.iter().map(|r| r.end.0).max().unwrap_or(0);
    kho::bootfdt::plan_rewrite(
        bytes,
        highest,
        info.bootargs.len() + BOOTARGS_GROWTH,
        Some(arch::crc::crc32_update),
    )
    .map_err(NextImageError::Fdt)
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

/// A generation that ran and is ready to hand over: the workload's side and the peer's.
struct Sealed<'a> {
    gen: &'a Generation,
    outcome: &'a mut GenOutcome,
    peer: &'a Peer,
    format: OutFormat,
}

/// Seals the record, finalizes kho, damages the handover if asked, and jumps. Returns only
/// through `exit`.
fn hand_over(
    info: &BootInfo<'_>,
    el: ExceptionLevel,
    mem: &IdentityMem,
    fa: &mut FrameAllocator<'_>,
    out: &mut Kho<&IdentityMem>,
    s: Sealed<'_>,
    next: &Next,
) -> ! {
    let (n, status) = (s.gen.number(), board::status::WORKLOAD_FAILED);
    if let Err(f) = s.outcome.seal(mem, arch::timer::ticks()) {
        fail(&f, status);
    }
    let h = or_fail(
        peer::finalize(s.peer, fa, out, s.format).map_err(|e| alloc::format!("kho finalize: {e}")),
        n,
        status,
    );
    if let Err(f) = s.outcome.stamp_finalized(mem, arch::timer::ticks()) {
        fail(&f, status);
    }
    if let Some(kind) = s.gen.damage_now() {
        warn!("baton.damage={kind}: damaging the outgoing handover before the jump (test)");
    }
    let mut page = || fa.alloc_pages(0).ok().map(|p| p.phys().0);
    let h = s
        .gen
        .damage(mem, h, &mut page)
        .unwrap_or_else(|f| fail(&f, status));
    let args = s.outcome.next_bootargs(info.bootargs);
    let blobs = s.outcome.blobs();
    let outcome = &*s.outcome;
    let before_jump = |ticks| outcome.stamp_jumped(mem, ticks);
    let e = next_image::jump(
        mem,
        out,
        &next.plan,
        &Outgoing {
            info,
            el,
            handover: h,
            bootargs: &args,
            blobs: &blobs,
            placement: next.placement,
            fdt_plan: &next.fdt,
            before_jump: &before_jump,
        },
    );
    fail(&Failure::handover(n, e), board::status::NEXT_IMAGE)
}
