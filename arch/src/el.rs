//! Exception levels: which EL the image was entered at, and the EL2 stub's calling protocol.
//!
//! Policy (docs/hardware.md): the kernel always runs at EL1. Entered at EL3, it becomes a
//! non-secure EL2 first; entered at EL2, it leaves a stub vector table at EL2 whose only
//! service is `HVC_ENTER_AT_EL2`, so the next image can be entered at EL2 again.

/// x0 of the one HVC the EL2 stub serves: "eret to x1 at EL2h, MMU off, x0 = x2, x1..x3 = 0".
pub const HVC_ENTER_AT_EL2: u64 = 0xba70_e1e2;

/// An exception level the image may be entered at.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExceptionLevel {
    El1,
    El2,
    El3,
}

impl ExceptionLevel {
    /// From the number the entry code passes (`CurrentEL >> 2`).
    pub fn from_number(n: u64) -> Option<Self> {
        match n {
            1 => Some(Self::El1),
            2 => Some(Self::El2),
            3 => Some(Self::El3),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Self::El1 => 1,
            Self::El2 => 2,
            Self::El3 => 3,
        }
    }

    /// The EL the next image is entered at: EL2 if we were entered at EL2 or above (an EL3
    /// entry was turned into EL2 before anything else ran), EL1 otherwise.
    pub fn handover_target(self) -> Self {
        match self {
            Self::El1 => Self::El1,
            Self::El2 | Self::El3 => Self::El2,
        }
    }
}

impl core::fmt::Display for ExceptionLevel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "EL{}", self.number())
    }
}

/// The EL the CPU runs at now (always 1 after entry).
#[cfg(target_arch = "aarch64")]
pub fn current() -> u8 {
    use aarch64_cpu::registers::{CurrentEL, Readable};
    CurrentEL.read(CurrentEL::EL) as u8
}
