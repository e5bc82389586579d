//! The trampoline into the next image.
//!
//! `jump_to_image` turns the MMU and D-cache off, cleans and invalidates the D-cache,
//! invalidates the I-cache and TLB and branches to the next image with the arm64 boot
//! protocol's registers (x0 = FDT, x1..x3 = 0), at the EL this image was entered at: directly
//! at EL1, or through the EL2 stub's HVC. Owns no state. Everything the next image reads
//! with its MMU off (image, FDT, handover data) must have been cleaned to PoC by the caller.

#[cfg(target_arch = "aarch64")]
use crate::el::ExceptionLevel;

/// Enters the next image. Never returns.
///
/// # Safety
/// `entry` must be the first byte of a valid arm64 Image placed on a 2 MiB boundary in RAM
/// (identity mapped), `fdt` a valid FDT; both cleaned to PoC. This code and its stack must be
/// identity mapped (baton maps VA = PA). Interrupts must be quiesced; no other core runs.
#[cfg(target_arch = "aarch64")]
pub unsafe fn jump_to_image(entry: u64, fdt: u64, entered_at: ExceptionLevel) -> ! {
    use crate::entry::SCTLR_EL1_RES1;
    // MMU and D-cache off first: after this no new dirty line can be created.
    // SAFETY: VA = PA everywhere, so the next instruction fetch is at the same address.
    unsafe {
        core::arch::asm!("msr daifset, #0xf", "msr sctlr_el1, {s}", "isb",
            s = in(reg) SCTLR_EL1_RES1, options(nostack));
    }
    crate::cache::clean_invalidate_dcache_all();
    crate::cache::invalidate_icache_all();
    // SAFETY: with the MMU off, dropping every EL1 translation is harmless.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb sy", "isb", options(nostack)) };
    match entered_at.handover_target() {
        ExceptionLevel::El2 | ExceptionLevel::El3 => {
            // SAFETY: the EL2 stub installed at entry serves exactly this call and erets into
            // `entry` at EL2; it never returns here.
            unsafe {
                core::arch::asm!("hvc #0", in("x0") crate::el::HVC_ENTER_AT_EL2,
                    in("x1") entry, in("x2") fdt, options(noreturn));
            }
        }
        ExceptionLevel::El1 => {
            // SAFETY: the caller guarantees `entry` is a valid Image; registers follow the
            // boot protocol.
            unsafe {
                core::arch::asm!("mov x1, xzr", "mov x2, xzr", "mov x3, xzr", "br x4",
                    in("x4") entry, in("x0") fdt, options(noreturn));
            }
        }
    }
}
