//! Leaving the image: exit status through semihosting when QEMU offers it, else PSCI
//! SYSTEM_OFF (virt) or the BCM2711 watchdog (Pi 4). Also the panic handler and the fatal
//! exception hook, which print what happened and exit non-zero.
//!
//! The fatal paths only use the emergency console writer (it steals the console lock), and
//! only `try_lock` the exit path: a fatal path never waits for a lock.

use arch::{ExceptionFrame, PsciMethod};
use board::boards::PowerOff;
use board::status as code;
use drivers::console::write_fmt_emergency as emerg;

/// How to power off, known once the board is.
#[derive(Copy, Clone)]
pub struct ExitPath {
    pub power_off: PowerOff,
    pub psci: Option<PsciMethod>,
}

/// Set before the MMU is on: an `EarlyMutex`, not a `spin::Once` (no exclusives there).
static EXIT_PATH: arch::EarlyMutex<Option<ExitPath>> = arch::EarlyMutex::new(None);
static GUARD_PAGE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

/// Records the board's power-off path (first call wins).
pub fn set_path(path: ExitPath) {
    EXIT_PATH.lock().get_or_insert(path);
}

/// Records the stack guard page, so a fault in it is reported as a stack overflow.
pub fn set_guard_page(addr: u64) {
    GUARD_PAGE.store(addr, core::sync::atomic::Ordering::Relaxed);
}

/// Ends the run with `status` (0 = success). Never returns.
pub fn exit(status: u32) -> ! {
    drivers::console::flush();
    arch::semihosting::exit(status);
    // Semihosting is missing: power off the board's own way (no status reaches anyone).
    // Held only inside `set_path`, which cannot fault: a held lock means no path is known.
    let path = EXIT_PATH.try_lock().and_then(|p| *p);
    if let Some(p) = path {
        match p.power_off {
            PowerOff::Psci => {
                if let Some(m) = p.psci {
                    arch::psci::call(m, arch::psci::SYSTEM_OFF);
                }
            }
            // SAFETY: pm_base is the PM block of this board (board facts), device mapped or
            // reached with the MMU off.
            PowerOff::Bcm2711Watchdog { pm_base } => unsafe {
                drivers::bcm2711_pm::power_off(pm_base)
            },
        }
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let us = arch::timer::uptime_micros();
    match info.location() {
        Some(l) => emerg(format_args!(
            "[{:5}.{:06}] PANIC at {}:{}:{}: {}\n",
            us / 1_000_000,
            us % 1_000_000,
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => emerg(format_args!("PANIC: {}\n", info.message())),
    }
    exit(code::PANIC)
}

/// The fatal exception hook: prints ESR/ELR/FAR/SPSR and every register, then exits.
pub fn fatal_exception(f: &ExceptionFrame, kind: arch::exceptions::VectorKind) -> ! {
    emerg(format_args!(
        "\n!!! EXCEPTION ({}): {}\n",
        kind.describe(),
        arch::exceptions::exception_class_name(f.esr)
    ));
    emerg(format_args!(
        "    ESR_EL1 {:#018x}  ELR_EL1 {:#018x}\n    FAR_EL1 {:#018x}  SPSR_EL1 {:#018x}  SP {:#018x}\n",
        f.esr, f.elr, f.far, f.spsr, f.sp
    ));
    let guard = GUARD_PAGE.load(core::sync::atomic::Ordering::Relaxed);
    if f.far >= guard && f.far - guard < 4096 {
        emerg(format_args!(
            "    FAR is in the stack guard page: kernel stack overflow\n"
        ));
    }
    for row in 0..8 {
        let mut line = [0u64; 4];
        let n = if row == 7 { 3 } else { 4 };
        line[..n].copy_from_slice(&f.x[row * 4..row * 4 + n]);
        emerg(format_args!("   "));
        for (i, v) in line[..n].iter().enumerate() {
            emerg(format_args!(" x{:<2} {:#018x}", row * 4 + i, v));
        }
        emerg(format_args!("\n"));
    }
    exit(code::EXCEPTION)
}
