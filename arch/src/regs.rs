//! Field definitions for the system-register bits `aarch64-cpu` leaves unnamed, and the
//! const helper that turns a list of named field values into the number assembly needs.
//!
//! Owns no state and touches no register: it only names bits (Arm ARM DDI 0487, section D19,
//! one note per field) so that `entry`, `mmu` and the EL2 stub compose every value they write
//! from names. Values used from assembly stay `const u64`; tests pin each one to the literal it
//! replaced, so the bits written never change behind a rename.

use tock_registers::fields::FieldValue;
use tock_registers::{register_bitfields, RegisterLongName};

/// The bits of `fields` or-ed together; `const`, so assembly operands can be built from names.
/// Fields of one register never overlap, so or-ing is the same as tock-registers' `+`.
pub const fn bits<R: RegisterLongName>(fields: &[FieldValue<u64, R>]) -> u64 {
    let mut out = 0;
    let mut i = 0;
    while i < fields.len() {
        out |= fields[i].value;
        i += 1;
    }
    out
}

register_bitfields! {u64,
    /// SCTLR_EL1 bits that Armv8.0 defines as RES1 and later extensions give a meaning whose
    /// value 1 keeps the Armv8.0 behaviour (aarch64-cpu names none of them).
    pub SCTLR_EL1_RES1 [
        /// LSMAOE (bit 29): AArch32 load/store multiple keep their atomicity and ordering.
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// nTLSMD (bit 28): AArch32 load/store multiple to Device memory do not trap.
        NTLSMD OFFSET(28) NUMBITS(1) [],
        /// SPAN (bit 23): PSTATE.PAN is left unchanged on taking an exception to EL1.
        SPAN OFFSET(23) NUMBITS(1) [],
        /// EIS (bit 22): taking an exception to EL1 is context synchronizing.
        EIS OFFSET(22) NUMBITS(1) [],
        /// TSCXT (bit 20): EL0 access to SCXTNUM_EL0 traps (FEAT_CSV2).
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// EOS (bit 11): an exception return from EL1 is context synchronizing.
        EOS OFFSET(11) NUMBITS(1) [],
    ],

    /// SCTLR_EL2 bits (with HCR_EL2.E2H = 0) that are RES1 in Armv8.0 and that aarch64-cpu
    /// does not name (it names EIS and EOS).
    pub SCTLR_EL2_RES1 [
        /// Bit 29 (LSMAOE when E2H = 1): RES1 with E2H = 0.
        BIT29 OFFSET(29) NUMBITS(1) [],
        /// Bit 28 (nTLSMD when E2H = 1): RES1 with E2H = 0.
        BIT28 OFFSET(28) NUMBITS(1) [],
        /// Bit 23 (SPAN when E2H = 1): RES1 with E2H = 0.
        BIT23 OFFSET(23) NUMBITS(1) [],
        /// Bit 18 (nTWE when E2H = 1): RES1 with E2H = 0.
        BIT18 OFFSET(18) NUMBITS(1) [],
        /// Bit 16 (nTWI when E2H = 1): RES1 with E2H = 0.
        BIT16 OFFSET(16) NUMBITS(1) [],
        /// Bit 5 (CP15BEN when E2H = 1): RES1 with E2H = 0.
        BIT5 OFFSET(5) NUMBITS(1) [],
        /// Bit 4 (SA0 when E2H = 1): RES1 with E2H = 0.
        BIT4 OFFSET(4) NUMBITS(1) [],
    ],

    /// CPTR_EL2 with HCR_EL2.E2H = 0 (aarch64-cpu names only TAM).
    pub CPTR_EL2 [
        /// TCPAC (bit 31): EL1 accesses to CPACR_EL1 trap to EL2.
        TCPAC OFFSET(31) NUMBITS(1) [],
        /// TTA (bit 20): trace register accesses trap to EL2.
        TTA OFFSET(20) NUMBITS(1) [],
        /// Bit 13: RES1.
        RES1_13 OFFSET(13) NUMBITS(1) [],
        /// TSM (bit 12): SME instructions trap to EL2 (RES1 without FEAT_SME).
        TSM OFFSET(12) NUMBITS(1) [],
        /// TFP (bit 10): FP/SIMD instructions trap to EL2.
        TFP OFFSET(10) NUMBITS(1) [
            DontTrap = 0,
            Trap = 1
        ],
        /// Bit 9: RES1.
        RES1_9 OFFSET(9) NUMBITS(1) [],
        /// TZ (bit 8): SVE instructions trap to EL2 (RES1 without FEAT_SVE).
        TZ OFFSET(8) NUMBITS(1) [],
        /// Bits 7:0: RES1.
        RES1_LOW OFFSET(0) NUMBITS(8) [],
    ],

    /// SCR_EL3 bits aarch64-cpu does not name.
    pub SCR_EL3_RES1 [
        /// Bit 5: RES1.
        BIT5 OFFSET(5) NUMBITS(1) [],
        /// Bit 4: RES1.
        BIT4 OFFSET(4) NUMBITS(1) [],
    ],
}
