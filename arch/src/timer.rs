//! The generic timer: the physical counter and its frequency.
//!
//! Read-only; never programs a timer interrupt.

/// Counter ticks since the counter started (QEMU: since the machine started).
#[cfg(target_arch = "aarch64")]
pub fn ticks() -> u64 {
    use aarch64_cpu::registers::{Readable, CNTPCT_EL0};
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter frequency in Hz (CNTFRQ_EL0, set by firmware or QEMU).
#[cfg(target_arch = "aarch64")]
pub fn frequency() -> u64 {
    use aarch64_cpu::registers::{Readable, CNTFRQ_EL0};
    CNTFRQ_EL0.get()
}

/// Converts ticks at `freq` Hz to microseconds without overflow for any realistic uptime.
pub fn ticks_to_micros(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        return 0;
    }
    ((ticks as u128 * 1_000_000) / freq as u128) as u64
}

/// Microseconds since the counter started.
#[cfg(target_arch = "aarch64")]
pub fn uptime_micros() -> u64 {
    ticks_to_micros(ticks(), frequency())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_convert_at_qemu_and_pi_frequencies() {
        assert_eq!(super::ticks_to_micros(62_500_000, 62_500_000), 1_000_000);
        assert_eq!(super::ticks_to_micros(54, 54_000_000), 1);
        assert_eq!(super::ticks_to_micros(5, 0), 0);
    }
}
