//! What the CPU reports about its own address space: the physical address range
//! (ID_AA64MMFR0_EL1.PARange), combined with the identity map's VA limit.
//!
//! Read-only: reads one ID register, writes nothing. The decoding is plain data and builds
//! on the host; board code gets the limit as a value and never reads registers itself.

use crate::mmu::VA_LIMIT;

/// Bits of physical address for a PARange encoding (Arm ARM, ID_AA64MMFR0_EL1); an
/// encoding the architecture has not defined yet is taken as the largest known (52).
pub const fn pa_bits(parange: u64) -> u32 {
    match parange {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// First address the identity map cannot reach on this CPU: `2^PA bits`, at most
/// [`VA_LIMIT`]. RAM or devices at or above it are unusable whatever the firmware says.
pub fn addressable_limit() -> u64 {
    (1u64 << pa_bits(parange())).min(VA_LIMIT)
}

#[cfg(target_arch = "aarch64")]
fn parange() -> u64 {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange)
}

/// The host has no such register: a 48-bit CPU, the common case.
#[cfg(not(target_arch = "aarch64"))]
fn parange() -> u64 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parange_encodings_decode_to_bits() {
        assert_eq!(pa_bits(0), 32);
        assert_eq!(pa_bits(2), 40);
        assert_eq!(pa_bits(5), 48);
        assert_eq!(pa_bits(6), 52);
        assert_eq!(pa_bits(15), 52);
        assert_eq!(addressable_limit(), 1 << 48);
    }
}
