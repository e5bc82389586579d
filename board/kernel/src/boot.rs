//! `kernel_main`: the boot sequence after the entry code, in five named steps: `start`
//! (FDT -> BootInfo or the default board, console, command line, logger), `announce`
//! (banner, relocation self-check, what the FDT said), `memory_and_kho` (Memblock, the
//! previous image's handover: scratch only before any allocation, MMU, kho's validation or
//! new scratch, frame allocator), `report_ready` (heap self-check, free memory, ready),
//! `run_actions` (a `baton.test=` action, one generation of the handover chain, or a
//! clean exit).
//!
//! Nothing before the console may print; nothing before the handover's scratch areas are
//! known may allocate.

extern crate alloc;

use alloc::vec::Vec;
use arch::ExceptionLevel;
use baton_fdt::FdtError;
use board::boards::{self, BoardFacts, BoardKind};
use board::bootinfo::{BootInfo, ConsoleInfo, LogRange};
use board::cmdline::{self, Cmdline, Escaped, TestAction};
use board::fdt::{self, BootInfoError};
use board::memmap;
use log::{error, info, warn};
use mm::{PhysAddr, PhysRange};

use super::exit::{self, ExitPath};
use super::kho_boot::{self, KhoBoot};
use super::physmem::IdentityMem;
use super::{chain, heap, logger, memory, reloc, scratch_need};

/// Entered from `arch::entry` on the boot CPU at EL1, MMU off, on the kernel stack.
#[no_mangle]
pub extern "C" fn kernel_main(fdt_addr: u64, image_base: u64, entry_el: u64, relocs: u64) -> ! {
    // Where this generation's handover time ends up starting from.
    let entry_ticks = arch::timer::ticks();
    let boot = start(fdt_addr, image_base, entry_el);
    announce(&boot, fdt_addr, relocs);
    let (mem, kb, times) = memory_and_kho(&boot, entry_ticks);
    report_ready(&boot);
    run_actions(&boot, &mem, kb, times)
}

/// What every later step of the boot reads: the FDT's facts, the command line, the entry
/// EL and where the image sits.
struct Boot {
    info: BootInfo<'static>,
    args: Cmdline<'static>,
    el: ExceptionLevel,
    layout: arch::entry::ImageLayout,
    image: PhysRange,
}

/// Step 1: the boot FDT (or the default board), the exit path, the console, the command
/// line and the logger. A malformed FDT ends the boot here.
fn start(fdt_addr: u64, image_base: u64, entry_el: u64) -> Boot {
    arch::exceptions::set_fatal_hook(exit::fatal_exception);
    let layout = arch::entry::image_layout();
    exit::set_guard_page(layout.stack_guard);
    let el = ExceptionLevel::from_number(entry_el).unwrap_or(ExceptionLevel::El1);
    let info = match read_boot_info(fdt_addr, image_base) {
        Ok(info) => info,
        Err(e) => bad_fdt(fdt_addr, image_base, e),
    };
    exit::set_path(ExitPath {
        power_off: info.board.facts().power_off,
        psci: info.psci,
    });
    start_console(info.board.facts(), info.console);
    let args = cmdline::parse(info.bootargs);
    logger::init(args.log_level());
    if args.chain_requested() && info.handover.kho_fdt.is_some() {
        // A warm generation of a chain: its lines up to the restore wait in RAM (the UART
        // would cost the blackout ~16 instructions a byte); `chain` releases them once the
        // handover is restored, and every exit or fatal path sends them first.
        drivers::console::hold();
    }
    let image = PhysRange::new(PhysAddr(image_base), layout.size);
    Boot {
        info,
        args,
        el,
        layout,
        image,
    }
}

/// Step 2: the banner, the relocation self-check, what the FDT said, and every value the
/// command line or the firmware ranges had refused.
fn announce(boot: &Boot, fdt_addr: u64, relocs: u64) {
    let (info, image_base) = (&boot.info, boot.image.start.0);
    let relocated = reloc::check(image_base);
    info!(
        "baton {} on {} ({}), entered at {}, running at EL{}",
        env!("CARGO_PKG_VERSION"),
        info.board.name(),
        info.model,
        boot.el,
        arch::el::current()
    );
    if info.board_source == boards::BoardSource::DefaultNoFdt {
        warn!(
            "no FDT at x0 ({fdt_addr:#x}): using the default board ({})",
            info.board.name()
        );
    }
    info!(
        "loaded at {:#x}, image {:#x} bytes (file + BSS + stacks), {} relocations applied",
        image_base, boot.layout.size, relocs
    );
    log_relocation(&relocated);
    info!(
        "BATON-BOOT board={} el={} load={:#x} reloc_ok={} checksum={:#x}",
        info.board.name(),
        boot.el.number(),
        image_base,
        (relocated.bad == 0) as u8,
        relocated.link_checksum
    );
    print_boot_info(info);
    for e in boot.args.errors() {
        warn!("{e}");
    }
    for w in info.range_warnings() {
        warn!("{w}");
    }
    if info.range_warnings_dropped > 0 {
        warn!(
            "{} more firmware ranges clipped or refused",
            info.range_warnings_dropped
        );
    }
}

fn log_relocation(r: &reloc::RelocCheck) {
    // The boot tests match these words.
    if r.bad == 0 {
        info!(
            "relocation probe ok: {} pointers, link checksum {:#x}",
            r.pointers, r.link_checksum
        );
    } else {
        error!(
            "relocation probe FAILED: {} of {} pointers wrong",
            r.bad, r.pointers
        );
    }
}

/// Step 3: memory, then kho, then the frame allocator. Memblock first; the previous
/// image's handover restricts early allocations to its scratch before the first one; MMU
/// on; kho validates the handover (or chooses scratch); the frame allocator is built
/// around what it preserved. Any failure ends the boot.
fn memory_and_kho(boot: &Boot, entry_ticks: u64) -> (IdentityMem, KhoBoot, chain::BootTimes) {
    let (info, image, layout) = (&boot.info, boot.image, &boot.layout);
    if let Err(e) = memory::init_memblock(info, image) {
        fail_memory(e);
    }
    // Before the first allocation: a handover restricts early allocations to its scratch.
    let mem = IdentityMem::new(info, layout.stack_guard);
    let early = kho_boot::discover(info, &mem);
    enable_mmu(info, image, layout.stack_guard);
    let mut kb = kho_boot::validate_or_choose_scratch(
        &mem,
        early,
        &handover_avoids(info, image),
        boot.args.kho_scratch.ok(),
        scratch_need::scratch_need(info, layout, &mem),
    )
    .unwrap_or_else(|e| fail_memory(e.into()));
    let validated = arch::timer::ticks();
    init_frames(&mut kb);
    let times = chain::BootTimes {
        entry: entry_ticks,
        validated,
        frames: arch::timer::ticks(),
    };
    (mem, kb, times)
}

fn enable_mmu(info: &BootInfo<'_>, image: PhysRange, stack_guard: u64) {
    let mmu = memory::enable_mmu(info, image, stack_guard).unwrap_or_else(|e| fail_memory(e));
    info!(
        "mmu on: identity map, {} RAM ranges normal WB, {} device ranges nGnRE ({} skipped), {} table pages, stack guard {:#x}",
        mmu.normal, mmu.devices, mmu.skipped_devices, mmu.tables, stack_guard
    );
}

/// What nothing preserved may overlap: the image, the boot FDT, the initrd.
fn handover_avoids(info: &BootInfo<'_>, image: PhysRange) -> Vec<PhysRange> {
    memmap::boot_reservations(info, image)
        .filter(|(why, _)| {
            matches!(
                why,
                memmap::ReserveReason::Image
                    | memmap::ReserveReason::Fdt
                    | memmap::ReserveReason::Initrd
            )
        })
        .map(|(_, r)| r)
        .collect()
}

/// The frame allocator: its storage (the last early allocation), scratch sealed, then
/// built around the preserved blocks.
fn init_frames(kb: &mut KhoBoot) {
    let storage = memory::alloc_frame_storage(kb.reserved.as_ref().map(|r| r.preserved()))
        .unwrap_or_else(|e| fail_memory(e));
    if let Err(e) = kho_boot::seal_scratch(kb) {
        fail_memory(e.into());
    }
    print_memblock();
    let stats = match &kb.reserved {
        Some(r) => memory::init_frames(storage, r.preserved()),
        None => memory::init_frames(storage, mm::PreservedSet::<kho::Block>::new(&[], &[])),
    }
    .unwrap_or_else(|e| fail_memory(e));
    info!(
        "frames: {} total, {} free, {} reserved, {} deferred (max order {})",
        stats.total, stats.free, stats.reserved, stats.deferred, stats.max_order
    );
}

/// Step 4: the heap's self-check and the rest of RAM to the free lists (a chain generation
/// does both itself once it has restored the handover, outside the blackout), and the
/// `ready` line.
fn report_ready(boot: &Boot) {
    if !boot.args.chain_requested() {
        heap::check_and_log();
        let n = memory::init_deferred();
        info!("mm: deferred init: {n} frames to the free lists");
    }
    if let Some(s) = memory::stats() {
        info!(
            "free memory: {} KiB ({} pages) of {} KiB RAM",
            s.free * 4,
            s.free,
            s.total * 4
        );
    }
    let us = arch::timer::uptime_micros();
    info!(
        "baton: ready ({}.{:06} s since the counter started)",
        us / 1_000_000,
        us % 1_000_000
    );
}

/// Step 5: what the command line asks for (a `baton.test=` action, a chain generation),
/// then a clean exit that gives back any handover no one claimed.
fn run_actions(boot: &Boot, mem: &IdentityMem, kb: KhoBoot, times: chain::BootTimes) -> ! {
    if let Some(action) = boot.args.test.ok() {
        run_test_action(action, &boot.info, boot.image, boot.el);
    }
    if boot.args.chain_requested() {
        chain::run(
            &boot.info,
            &boot.args,
            &boot.layout,
            boot.el,
            mem,
            kb,
            times,
        );
    }
    if let Some(r) = kb.reserved {
        release_unclaimed(r);
    }
    exit::exit(board::status::SUCCESS)
}

/// Without a chain no one claims the previous image's preserved blocks: give them back.
fn release_unclaimed(r: kho::Reserved) {
    heap::reserve(256 << 10, mm::MAX_ORDER);
    let mut frames = memory::FRAMES.lock();
    let Some(fa) = frames.as_mut() else { return };
    let released = r.attach(fa).and_then(|mut i| {
        let blocks = i.release_unclaimed(fa)?;
        Ok((blocks, i.finish(fa)?))
    });
    match released {
        Ok((blocks, pages)) => info!(
            "kho: no client claimed the handover: released {blocks} blocks and {pages} metadata pages"
        ),
        Err(e) => error!("kho: releasing the unclaimed handover: {e}"),
    }
}

/// Reads x0: the parsed tree if it has the FDT magic, the default board (rpi4) if it has
/// not and the image sits where a Pi loader puts it (below 1 GiB), or the check it failed.
fn read_boot_info(fdt_addr: u64, image_base: u64) -> Result<BootInfo<'static>, BootInfoError> {
    let mut first = [0u8; 4];
    for (i, b) in first.iter_mut().enumerate() {
        // SAFETY: x0 came from the loader; with the MMU off any RAM or ROM address reads
        // without side effects. A wild x0 faults, which the exception path reports.
        *b = unsafe { core::ptr::read_volatile((fdt_addr as usize + i) as *const u8) };
    }
    if !fdt::has_magic(first) {
        if image_base < DEFAULT_BOARD_LOAD_LIMIT {
            return Ok(board::bootinfo::default_board_info());
        }
        return Err(BootInfoError::Fdt(FdtError::BadMagic {
            magic: u32::from_be_bytes(first),
        }));
    }
    if !fdt_addr.is_multiple_of(4) {
        return Err(BootInfoError::Misaligned { addr: fdt_addr });
    }
    // SAFETY: the magic is there, so the loader put an FDT header at x0; 40 bytes of it
    // are readable.
    let hdr =
        unsafe { core::slice::from_raw_parts(fdt_addr as usize as *const u8, fdt::HEADER_SIZE) };
    let h = fdt::check_header(hdr)?;
    // SAFETY: the header check bounds totalsize (<= 2 MiB); the loader placed the whole
    // tree there, and it stays reserved (never written) for the image's life.
    let buf = unsafe {
        core::slice::from_raw_parts(fdt_addr as usize as *const u8, h.totalsize as usize)
    };
    let info = fdt::parse_limited(buf, fdt_addr, arch::cpuid::addressable_limit())?;
    fdt::check_usable(&info)?;
    Ok(info)
}

/// Without an FDT, only an image loaded below this address (the Pi firmware and QEMU
/// raspi4b load at 0x20_0000) falls back to the default board; above it (QEMU virt's RAM
/// starts at 1 GiB) a missing magic is reported as a bad FDT.
const DEFAULT_BOARD_LOAD_LIMIT: u64 = 0x4000_0000;

/// A malformed FDT: report it on the console of the board the load address suggests, exit.
fn bad_fdt(fdt_addr: u64, image_base: u64, e: BootInfoError) -> ! {
    // virt loads at 0x4020_0000 (RAM starts at 1 GiB); a Pi loads at 0x20_0000.
    let facts = if image_base >= DEFAULT_BOARD_LOAD_LIMIT {
        &boards::QEMU_VIRT
    } else {
        &boards::RPI4
    };
    let console = facts.fallback_uart.map(|base| ConsoleInfo {
        base,
        clock_hz: facts.uart_clock_hz,
    });
    exit::set_path(ExitPath {
        power_off: facts.power_off,
        psci: None,
    });
    start_console(facts, console);
    logger::init(log::LevelFilter::Info);
    error!("FDT error: {e} (FDT at {fdt_addr:#x})");
    error!(
        "cannot continue without a valid device tree; stopping (board guessed from load address {image_base:#x}: {})",
        facts.name
    );
    exit::exit(board::status::BAD_FDT)
}

fn start_console(facts: &BoardFacts, console: Option<ConsoleInfo>) {
    let Some(c) = console else { return };
    if let Some(gpio) = facts.gpio_base {
        // SAFETY: board facts name the BCM2711 GPIO block of this board; MMU off or mapped.
        unsafe { drivers::bcm2711_gpio::uart0_pins_alt0(gpio) };
    }
    // SAFETY: the FDT (or the board facts) say a PL011 is at this address; nothing else
    // drives it.
    let _ = unsafe { drivers::console::init(c.base, c.clock_hz) };
}

fn print_boot_info(info: &BootInfo<'_>) {
    if let Some(f) = info.fdt {
        info!("fdt: {} ({} bytes)", LogRange(f), f.size());
    }
    info!(
        "bootargs: \"{}\", stdout-path: \"{}\"",
        Escaped(info.bootargs),
        info.stdout_path
    );
    match info.console {
        Some(c) => info!(
            "console: pl011 at {:#x}, {} Hz clock, 115200 8N1",
            c.base,
            c.clock_hz.unwrap_or(0)
        ),
        None => warn!("console: no PL011 found"),
    }
    info!(
        "psci: {}, timer: {} Hz{}",
        info.psci.map_or("none", |m| m.name()),
        arch::timer::frequency(),
        match info.timer.and_then(|t| t.clock_frequency) {
            Some(_) => " (FDT clock-frequency ignored)",
            None => "",
        }
    );
    for r in info.memory.iter() {
        info!("memory: {} {:>6} MiB", LogRange(*r), r.size() >> 20);
    }
    if let Some(r) = info.initrd {
        info!("initrd: {}", LogRange(r));
    }
    if info.board == BoardKind::Generic {
        warn!("unknown board: console and power-off come from the FDT only");
    }
}

fn print_memblock() {
    let mb = memory::MEMBLOCK.lock();
    for r in mb.reserved() {
        info!("reserved: {}", LogRange(r));
    }
    let free: u64 = mb.free_ranges().map(|r| r.size()).sum();
    info!(
        "memblock: {} KiB RAM, {} KiB free before the frame allocator",
        mb.memory_size() / 1024,
        free / 1024
    );
}

fn fail_memory(e: memory::MemError) -> ! {
    error!("memory setup failed: {e}");
    exit::exit(board::status::NO_MEMORY)
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buf = core::hint::black_box([depth; 64]);
    if depth == u64::MAX {
        return 0;
    }
    buf[3].wrapping_add(recurse(depth + 1))
}

/// Lives in `.data` (non-zero initialiser), which a re-entry does not reload: the second
/// boot of the same image in memory sees what the first one wrote.
static mut REENTRY_MARK: u64 = REENTRY_FIRST;
const REENTRY_FIRST: u64 = 0xba70_0001;

fn run_test_action(action: TestAction, info: &BootInfo<'_>, image: PhysRange, el: ExceptionLevel) {
    match action {
        TestAction::Fault => {
            warn!("baton.test=fault: reading unmapped address 0xdead0000000");
            // SAFETY: deliberately unsound: the exception path must report this and exit.
            let v = unsafe { core::ptr::read_volatile(0x0dea_d000_0000 as *const u64) };
            info!("unreachable: read {v:#x}");
        }
        TestAction::Panic => panic!("deliberate panic (baton.test=panic)"),
        TestAction::Reenter => {
            // SAFETY: single core, no interrupts: nothing else touches the mark.
            let mark = unsafe { core::ptr::addr_of!(REENTRY_MARK).read_volatile() };
            if mark != REENTRY_FIRST {
                info!("baton.test=reenter: re-entered through jump_to_image at {el}");
                return;
            }
            // SAFETY: as above.
            unsafe { core::ptr::addr_of_mut!(REENTRY_MARK).write_volatile(REENTRY_FIRST + 1) };
            let fdt = info.fdt.map_or(0, |f| f.start.0);
            info!(
                "baton.test=reenter: jumping to {:#x} with x0 = {fdt:#x} at {}",
                image.start.0,
                el.handover_target()
            );
            drivers::console::flush();
            // SAFETY: the image and FDT are RAM, identity mapped; cleaning them to PoC makes
            // them visible with the MMU off; this is the image we are running (it is
            // re-entered from its first byte, as a loader would).
            unsafe {
                arch::cache::clean_to_poc(image.start.0, image.size());
                if let Some(f) = info.fdt {
                    arch::cache::clean_to_poc(f.start.0, f.size());
                }
                arch::handover::jump_to_image(image.start.0, fdt, el);
            }
        }
        TestAction::StackOverflow => {
            warn!("baton.test=stack-overflow: recursing into the guard page");
            info!("unreachable: {}", recurse(0));
        }
    }
}
