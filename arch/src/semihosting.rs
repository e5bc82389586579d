//! Arm semihosting calls through `hlt #0xf000` (QEMU `-semihosting`).
//!
//! Owns the "semihosting is missing" flag that the exception handler sets when the trap
//! instruction is undefined (no debugger, no `-semihosting`): every call then returns
//! `None` instead of hanging. Never used for anything but exit and early messages.

use core::sync::atomic::{AtomicBool, Ordering};

static MISSING: AtomicBool = AtomicBool::new(false);

/// Whether a semihosting call trapped as an undefined instruction (QEMU without
/// `-semihosting`, or real hardware without a debugger).
pub fn missing() -> bool {
    MISSING.load(Ordering::Relaxed)
}

/// Called by the exception vector when the semihosting trap was undefined.
#[cfg(target_arch = "aarch64")]
pub(crate) fn mark_missing() {
    MISSING.store(true, Ordering::Relaxed);
}

/// SYS_EXIT operation number.
pub const SYS_EXIT: u64 = 0x18;
/// SYS_WRITE0 operation number (write a NUL-terminated string to the debug console).
pub const SYS_WRITE0: u64 = 0x04;
/// `ADP_Stopped_ApplicationExit`: the reason code that carries an exit status.
pub const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Performs semihosting call `op` with parameter `arg`; `None` if semihosting is missing.
///
/// # Safety
/// `arg` must be what `op` expects (for pointer arguments: mapped, readable memory).
#[cfg(target_arch = "aarch64")]
pub unsafe fn call(op: u64, arg: u64) -> Option<u64> {
    if missing() {
        return None;
    }
    let ret: u64;
    // SAFETY: the caller vouches for `arg`; if the trap is undefined, the EL1 vector resumes
    // after it with x0 = u64::MAX and sets MISSING.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") op => ret, in("x1") arg, options(nostack));
    }
    if missing() {
        None
    } else {
        Some(ret)
    }
}

/// Ends the QEMU process with `code` as its exit status. Returns only if semihosting is
/// missing.
#[cfg(target_arch = "aarch64")]
pub fn exit(code: u32) {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
    // SAFETY: SYS_EXIT reads the two-word block, which lives on our stack for the call.
    unsafe {
        call(SYS_EXIT, block.as_ptr() as u64);
    }
}
