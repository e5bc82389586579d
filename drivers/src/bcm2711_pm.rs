//! BCM2711 power management watchdog: power off (or reset) the SoC.
//!
//! Owns nothing but the sequence: mark "halt" in PM_RSTS's partition field (the firmware and
//! QEMU read partition 63 as "stay off"), arm the watchdog with a short timeout and request a
//! full reset. Every write carries the PM password.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

register_structs! {
    /// The watchdog part of the PM block.
    pub PmRegisters {
        (0x00 => _reserved0),
        /// PM_RSTC: reset control; WRCFG (bits 5:4) = 0b10 requests a full reset on expiry.
        (0x1c => pub rstc: ReadWrite<u32>),
        /// PM_RSTS: reset status; the boot partition number is spread over the even bits 0..10.
        (0x20 => pub rsts: ReadWrite<u32>),
        /// PM_WDOG: watchdog timeout in 16 µs ticks (bits 19:0).
        (0x24 => pub wdog: ReadWrite<u32>),
        (0x28 => @END),
    }
}

/// Every PM write must carry this in bits 31:24.
pub const PM_PASSWORD: u32 = 0x5a00_0000;
/// WRCFG field mask in PM_RSTC.
pub const RSTC_WRCFG_MASK: u32 = 0x30;
/// WRCFG = full reset.
pub const RSTC_WRCFG_FULL_RESET: u32 = 0x20;
/// Partition 63 spread over PM_RSTS's even bits: "halt" for the firmware.
pub const RSTS_PARTITION_HALT: u32 = 0x555;
/// All partition bits of PM_RSTS.
pub const RSTS_PARTITION_MASK: u32 = 0x555;
/// A short watchdog timeout (10 ticks, 160 µs).
pub const WDOG_SHORT: u32 = 10;

/// Spreads a 6-bit partition number over PM_RSTS's even bits.
pub const fn rsts_partition(n: u32) -> u32 {
    let mut out = 0;
    let mut bit = 0;
    while bit < 6 {
        out |= ((n >> bit) & 1) << (2 * bit);
        bit += 1;
    }
    out
}

const _: () = assert!(rsts_partition(63) == RSTS_PARTITION_HALT);

/// Powers the SoC off through the watchdog. Returns only if the hardware ignores it.
///
/// # Safety
/// `base` must be the BCM2711 PM block (0xfe100000 on a Pi 4), device mapped.
pub unsafe fn power_off(base: u64) {
    // SAFETY: the caller guarantees the PM block at `base`.
    let pm = unsafe { &*(base as usize as *const PmRegisters) };
    let rsts = pm.rsts.get() & !RSTS_PARTITION_MASK;
    pm.rsts.set(PM_PASSWORD | rsts | RSTS_PARTITION_HALT);
    restart(pm);
}

/// Resets the SoC through the watchdog.
///
/// # Safety
/// As for [`power_off`].
pub unsafe fn reset(base: u64) {
    // SAFETY: the caller guarantees the PM block at `base`.
    let pm = unsafe { &*(base as usize as *const PmRegisters) };
    restart(pm);
}

fn restart(pm: &PmRegisters) {
    pm.wdog.set(PM_PASSWORD | WDOG_SHORT);
    let rstc = pm.rstc.get() & !RSTC_WRCFG_MASK;
    pm.rstc.set(PM_PASSWORD | rstc | RSTC_WRCFG_FULL_RESET);
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_bits_are_spread_over_even_positions() {
        assert_eq!(super::rsts_partition(0), 0);
        assert_eq!(super::rsts_partition(1), 0b1);
        assert_eq!(super::rsts_partition(2), 0b100);
        assert_eq!(super::rsts_partition(63), 0x555);
    }
}
