//! BCM2711 power management watchdog: power off (or reset) the SoC.
//!
//! Owns nothing but the sequence: mark "halt" in PM_RSTS's partition field (the firmware and
//! QEMU read partition 63 as "stay off"), arm the watchdog with a short timeout and request a
//! full reset. Every write carries the PM password.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::ReadWrite;
use tock_registers::{register_bitfields, register_structs};

// The PM watchdog is not described in the BCM2711 ARM peripherals manual; the layout is the
// BCM2835 one that the Pi firmware, Linux's bcm2835 watchdog driver and QEMU's raspi
// machines share. Every write to a PM register must carry the password in bits 31:24.
register_bitfields! {u32,
    /// PM_RSTC: reset control.
    pub PM_RSTC [
        /// PASSWD (bits 31:24): must read 0x5a on every write, or the write is ignored.
        PASSWD OFFSET(24) NUMBITS(8) [
            Key = 0x5a
        ],
        /// WRCFG (bits 5:4): what happens when the watchdog expires.
        WRCFG OFFSET(4) NUMBITS(2) [
            Clear = 0b00,
            FullReset = 0b10
        ]
    ],
    /// PM_RSTS: reset status; the boot partition the firmware reads after a reset is a
    /// 6-bit number spread over the even bits 0, 2, ..., 10.
    pub PM_RSTS [
        /// PASSWD (bits 31:24): must read 0x5a on every write.
        PASSWD OFFSET(24) NUMBITS(8) [
            Key = 0x5a
        ],
        /// Partition number bit 5 (register bit 10).
        PART5 OFFSET(10) NUMBITS(1) [],
        /// Partition number bit 4 (register bit 8).
        PART4 OFFSET(8) NUMBITS(1) [],
        /// Partition number bit 3 (register bit 6).
        PART3 OFFSET(6) NUMBITS(1) [],
        /// Partition number bit 2 (register bit 4).
        PART2 OFFSET(4) NUMBITS(1) [],
        /// Partition number bit 1 (register bit 2).
        PART1 OFFSET(2) NUMBITS(1) [],
        /// Partition number bit 0 (register bit 0).
        PART0 OFFSET(0) NUMBITS(1) []
    ],
    /// PM_WDOG: the watchdog counter.
    pub PM_WDOG [
        /// PASSWD (bits 31:24): must read 0x5a on every write.
        PASSWD OFFSET(24) NUMBITS(8) [
            Key = 0x5a
        ],
        /// TIME (bits 19:0): ticks of 16 µs until the watchdog expires.
        TIME OFFSET(0) NUMBITS(20) []
    ]
}

register_structs! {
    /// The watchdog part of the PM block.
    pub PmRegisters {
        (0x00 => _reserved0),
        /// PM_RSTC: reset control.
        (0x1c => pub rstc: ReadWrite<u32, PM_RSTC::Register>),
        /// PM_RSTS: reset status (the boot partition).
        (0x20 => pub rsts: ReadWrite<u32, PM_RSTS::Register>),
        /// PM_WDOG: watchdog timeout.
        (0x24 => pub wdog: ReadWrite<u32, PM_WDOG::Register>),
        (0x28 => @END),
    }
}

/// Every PM write must carry this in bits 31:24.
pub const PM_PASSWORD: u32 = PM_RSTC::PASSWD::Key.value;
/// Partition 63 (every partition bit set) in PM_RSTS: "halt" for the firmware and QEMU.
pub const RSTS_PARTITION_HALT: u32 = rsts_partition(63);
/// All partition bits of PM_RSTS.
pub const RSTS_PARTITION_MASK: u32 = PM_RSTS::PART0::SET.value
    | PM_RSTS::PART1::SET.value
    | PM_RSTS::PART2::SET.value
    | PM_RSTS::PART3::SET.value
    | PM_RSTS::PART4::SET.value
    | PM_RSTS::PART5::SET.value;
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

const _: () = assert!(RSTS_PARTITION_HALT == RSTS_PARTITION_MASK);

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
    pm.wdog
        .write(PM_WDOG::PASSWD::Key + PM_WDOG::TIME.val(WDOG_SHORT));
    // WRCFG replaced, every other bit kept as read; the password or-ed in.
    let rstc = PM_RSTC::WRCFG::FullReset.modify(pm.rstc.get());
    pm.rstc.set(PM_PASSWORD | rstc);
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

    /// The named fields give the masks the raw constants had.
    #[test]
    fn named_pm_fields_are_the_old_masks() {
        use super::*;
        assert_eq!(PM_PASSWORD, 0x5a00_0000);
        assert_eq!(PM_RSTC::WRCFG.mask << PM_RSTC::WRCFG.shift, 0x30);
        assert_eq!(PM_RSTC::WRCFG::FullReset.value, 0x20);
        assert_eq!(RSTS_PARTITION_MASK, 0x555);
        assert_eq!(RSTS_PARTITION_HALT, 0x555);
        assert_eq!(
            (PM_WDOG::PASSWD::Key + PM_WDOG::TIME.val(WDOG_SHORT)).value,
            0x5a00_000a
        );
        // The read-modify-write of PM_RSTC: WRCFG replaced, other bits kept.
        assert_eq!(PM_RSTC::WRCFG::FullReset.modify(0x0000_0f3f), 0x0000_0f2f);
    }
}
