//! PSCI calls (SYSTEM_OFF, SYSTEM_RESET) through the conduit the FDT names.
//!
//! Owns nothing; a call either does not return or reports the PSCI error code.

/// How PSCI is reached, from the FDT's `/psci` `method` property.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

impl PsciMethod {
    /// From the `method` property string.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "hvc" => Some(Self::Hvc),
            "smc" => Some(Self::Smc),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hvc => "hvc",
            Self::Smc => "smc",
        }
    }
}

/// PSCI 0.2 SYSTEM_OFF function id.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// PSCI 0.2 SYSTEM_RESET function id.
pub const SYSTEM_RESET: u32 = 0x8400_0009;

/// Issues PSCI function `id` with no arguments; returns the (error) result if it returns.
#[cfg(target_arch = "aarch64")]
pub fn call(method: PsciMethod, id: u32) -> i64 {
    let mut x0 = id as u64;
    match method {
        // SAFETY: a PSCI call with no arguments touches no memory of ours.
        PsciMethod::Hvc => unsafe {
            core::arch::asm!("hvc #0", inout("x0") x0, out("x1") _, out("x2") _, out("x3") _,
                options(nostack))
        },
        // SAFETY: as above.
        PsciMethod::Smc => unsafe {
            core::arch::asm!("smc #0", inout("x0") x0, out("x1") _, out("x2") _, out("x3") _,
                options(nostack))
        },
    }
    x0 as i64
}
