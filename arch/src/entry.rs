//! The arm64 `Image` header and the first instructions of every boot.
//!
//! Owns everything that runs before Rust: the 64-byte header the loaders read, the drop from
//! EL3 to EL2 and from EL2 to EL1 (installing the EL2 stub on the way), FP/SIMD enable, the
//! pristine copy of the part of the loaded file that relocation changes (with the text,
//! which nothing writes, the next image of a self-handover), the self-relocation pass over
//! `.rela.dyn`, BSS clearing, both stacks and `VBAR_EL1`. It must
//! never use an absolute address: every address is formed PC-relative (`adr`/`adrp`), because
//! the image runs wherever a loader put it on a 2 MiB boundary.
//!
//! The image hands over to `kernel_main(fdt, image_base, entry_el, relocations)`, which the
//! image binary defines (`#[no_mangle] extern "C"`). It must not return.

/// Image header flags: little-endian (bit 0 = 0), 4 KiB pages (bits 1-2 = 1), placement
/// anywhere in memory (bit 3 = 1).
pub const IMAGE_FLAGS: u64 = (1 << 1) | (1 << 3);
/// The Image magic, "ARM\x64" read as a little-endian word.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Offset of `image_size` inside the header.
pub const IMAGE_SIZE_OFFSET: usize = 16;
/// `R_AARCH64_RELATIVE`: the only dynamic relocation a static PIE of this image may carry.
pub const R_AARCH64_RELATIVE: u32 = 1027;

// Every value the entry code writes to a system register, composed from named fields
// (aarch64-cpu's definitions, and `crate::regs` for the bits it leaves unnamed). The
// assembly takes them as `const` operands; `tests` pins each one to its old literal.
use crate::regs::{self, bits};
use aarch64_cpu::registers::{
    CNTHCTL_EL2, CPACR_EL1, HCR_EL2, SCR_EL3, SCTLR_EL1, SCTLR_EL2, SPSR_EL2,
};

/// SCTLR_EL1 with the MMU, caches and alignment checking off, little-endian, and every
/// EL0 trap on; only the RES1 bits set. Written whole, so nothing the firmware left survives.
pub const SCTLR_EL1_RES1: u64 = bits(&[
    SCTLR_EL1::M::Disable,
    SCTLR_EL1::A::Disable,
    SCTLR_EL1::C::NonCacheable,
    SCTLR_EL1::SA::Disable,
    SCTLR_EL1::SA0::Disable,
    SCTLR_EL1::NAA::Disable,
    SCTLR_EL1::UMA::Trap,
    SCTLR_EL1::I::NonCacheable,
    SCTLR_EL1::DZE::Trap,
    SCTLR_EL1::UCT::Trap,
    SCTLR_EL1::NTWI::Trap,
    SCTLR_EL1::NTWE::Trap,
    SCTLR_EL1::WXN::Disable,
    SCTLR_EL1::E0E::LittleEndian,
    SCTLR_EL1::EE::LittleEndian,
    SCTLR_EL1::UCI::Trap,
]) | SCTLR_EL1_RES1_BITS;

/// The SCTLR_EL1 bits Armv8.0 makes RES1 (part of every value written to SCTLR_EL1).
pub const SCTLR_EL1_RES1_BITS: u64 = bits(&[
    regs::SCTLR_EL1_RES1::LSMAOE::SET,
    regs::SCTLR_EL1_RES1::NTLSMD::SET,
    regs::SCTLR_EL1_RES1::SPAN::SET,
    regs::SCTLR_EL1_RES1::EIS::SET,
    regs::SCTLR_EL1_RES1::TSCXT::SET,
    regs::SCTLR_EL1_RES1::EOS::SET,
]);

/// SCTLR_EL2 with only its RES1 bits: MMU and caches off at EL2 (the stub never maps memory).
pub const SCTLR_EL2_RES1: u64 = bits(&[
    SCTLR_EL2::M::Disable,
    SCTLR_EL2::A::Disable,
    SCTLR_EL2::C::NonCacheable,
    SCTLR_EL2::SA::Disable,
    SCTLR_EL2::EOS::IsSynch,
    SCTLR_EL2::I::NonCacheable,
    SCTLR_EL2::WXN::Disable,
    SCTLR_EL2::IESB::Disable,
    SCTLR_EL2::EIS::IsSynch,
    SCTLR_EL2::EE::Little,
]) | bits(&[
    regs::SCTLR_EL2_RES1::BIT29::SET,
    regs::SCTLR_EL2_RES1::BIT28::SET,
    regs::SCTLR_EL2_RES1::BIT23::SET,
    regs::SCTLR_EL2_RES1::BIT18::SET,
    regs::SCTLR_EL2_RES1::BIT16::SET,
    regs::SCTLR_EL2_RES1::BIT5::SET,
    regs::SCTLR_EL2_RES1::BIT4::SET,
]);

/// HCR_EL2: EL1 is AArch64; no stage 2, no trap, no routing of anything to EL2 (every other
/// field is 0, E2H and TGE included).
pub const HCR_EL2_RW: u64 = bits(&[
    HCR_EL2::RW::EL1IsAarch64,
    HCR_EL2::E2H::DisableOsAtEl2,
    HCR_EL2::TGE::DisableTrapGeneralExceptionsToEl2,
    HCR_EL2::VM::Disable,
]);

/// CPTR_EL2 (E2H = 0): FP/SIMD not trapped to EL2 (TFP = 0); SVE and SME stay trapped (baton
/// uses neither); CPACR_EL1 and trace accesses not trapped; RES1 bits set.
pub const CPTR_EL2_NO_TRAPS: u64 = bits(&[
    regs::CPTR_EL2::TCPAC::CLEAR,
    regs::CPTR_EL2::TTA::CLEAR,
    regs::CPTR_EL2::RES1_13::SET,
    regs::CPTR_EL2::TSM::SET,
    regs::CPTR_EL2::TFP::DontTrap,
    regs::CPTR_EL2::RES1_9::SET,
    regs::CPTR_EL2::TZ::SET,
    regs::CPTR_EL2::RES1_LOW::SET,
]);

/// CNTHCTL_EL2: EL1 may read the physical counter and use the physical timer.
pub const CNTHCTL_EL2_EL1_ACCESS: u64 =
    bits(&[CNTHCTL_EL2::EL1PCTEN::SET, CNTHCTL_EL2::EL1PCEN::SET]);

/// SCR_EL3: EL2 non-secure and AArch64, HVC enabled, SMC left enabled, no interrupt or
/// external abort routed to EL3; RES1 bits set.
pub const SCR_EL3_VALUE: u64 =
    bits(&[
        SCR_EL3::NS::NonSecure,
        SCR_EL3::IRQ::NotTaken,
        SCR_EL3::FIQ::NotTaken,
        SCR_EL3::EA::NotTaken,
        SCR_EL3::SMD::SmcEnabled,
        SCR_EL3::HCE::HvcEnabled,
        SCR_EL3::RW::NextELIsAarch64,
    ]) | bits(&[regs::SCR_EL3_RES1::BIT4::SET, regs::SCR_EL3_RES1::BIT5::SET]);

/// SPSR for an `eret` into EL2h with D, A, I, F masked. SPSR_EL3 (written with it on the
/// way down from EL3) has the same layout as SPSR_EL2 for these fields.
pub const SPSR_EL2H_MASKED: u64 = bits(&[
    SPSR_EL2::D::Masked,
    SPSR_EL2::A::Masked,
    SPSR_EL2::I::Masked,
    SPSR_EL2::F::Masked,
    SPSR_EL2::M::EL2h,
]);

/// SPSR_EL2 for an `eret` into EL1h with D, A, I, F masked.
pub const SPSR_EL1H_MASKED: u64 = bits(&[
    SPSR_EL2::D::Masked,
    SPSR_EL2::A::Masked,
    SPSR_EL2::I::Masked,
    SPSR_EL2::F::Masked,
    SPSR_EL2::M::EL1h,
]);

/// CPACR_EL1: FP/SIMD instructions do not trap at EL1 or EL0 (FPEN = 0b11).
pub const CPACR_EL1_FPEN: u64 = bits(&[CPACR_EL1::FPEN::TrapNothing]);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       baton_primary           // code0: branch over the header
    .long   0                       // code1
    .quad   0                       // text_offset: load at a 2 MiB boundary + 0
    .quad   __image_size            // image_size: file, BSS and stacks (link-time constant)
    .quad   {flags}                 // flags: LE, 4 KiB, anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   {magic}                 // "ARM\x64"
    .long   0                       // res5 (no PE/COFF header)

.section .text.boot, "ax"
baton_primary:
    msr     daifset, #0xf           // no interrupts until someone asks for them
    mov     x19, x0                 // x19 = FDT (or whatever the loader left in x0)
    adrp    x20, _start             // x20 = where we actually run (2 MiB aligned)
    add     x20, x20, :lo12:_start
    mrs     x21, CurrentEL
    ubfx    x21, x21, #2, #2        // x21 = entry EL (1, 2 or 3)
    cmp     x21, #3
    b.ne    1f
    // EL3: become a non-secure EL2 and continue there.
    ldr     x0, ={scr_el3}
    msr     scr_el3, x0
    mov     x0, #{spsr_el2h}
    msr     spsr_el3, x0
    adr     x0, 2f
    msr     elr_el3, x0
    isb
    eret
1:
    cmp     x21, #2
    b.ne    3f
2:
    // EL2 (entered there, or dropped from EL3): make EL1 AArch64, give it the timers and
    // FP, install the stub vectors that later re-enter EL2 for the handover, then drop.
    ldr     x0, ={sctlr_el2}
    msr     sctlr_el2, x0
    ldr     x0, ={hcr_el2}
    msr     hcr_el2, x0
    mov     x0, #{cnthctl}
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr        // virtual counter == physical counter
    ldr     x0, ={cptr_el2}
    msr     cptr_el2, x0
    msr     hstr_el2, xzr
    msr     vttbr_el2, xzr
    adrp    x0, baton_el2_vectors
    add     x0, x0, :lo12:baton_el2_vectors
    msr     vbar_el2, x0
    ldr     x0, ={sctlr_el1}
    msr     sctlr_el1, x0
    mov     x0, #{spsr_el1h}
    msr     spsr_el2, x0
    adr     x0, 3f
    msr     elr_el2, x0
    isb
    eret
3:
    // EL1 from here on. MMU and caches off, FP/SIMD on before any Rust instruction.
    ldr     x0, ={sctlr_el1}
    msr     sctlr_el1, x0
    ldr     x0, ={cpacr}
    msr     cpacr_el1, x0
    isb
    // Keep a pristine copy of the part of the Image file that relocation and .data writes
    // change (`__copy_from` to the end) before anything changes it: with the text before
    // `__copy_from`, which nothing writes, it is the next image of a self-handover. Both
    // ends are 8-aligned. memcpy and memset (arch::mem) are leaf functions that need no
    // stack and keep x19-x23.
    adrp    x0, __copy_start
    add     x0, x0, :lo12:__copy_start
    adrp    x1, __copy_from         // source: the loaded file from __copy_from on
    add     x1, x1, :lo12:__copy_from
    sub     x23, x1, x20            // x23 = offset of __copy_from in the file
    adrp    x2, __file_end
    add     x2, x2, :lo12:__file_end
    sub     x2, x2, x1              // length: the rest of the file
    bl      memcpy
11:
    // Apply R_AARCH64_RELATIVE relocations: *(base + offset) = base + addend. The link
    // address is 0, so the displacement is the run address itself.
    adrp    x0, __rela_start
    add     x0, x0, :lo12:__rela_start
    adrp    x1, __rela_end
    add     x1, x1, :lo12:__rela_end
    mov     x22, #0                 // x22 = number of relocations applied
4:
    cmp     x0, x1
    b.hs    6f
    ldp     x2, x3, [x0], #16       // r_offset, r_info
    ldr     x4, [x0], #8            // r_addend
    cmp     w3, #{r_relative}       // type lives in the low 32 bits of r_info
    b.ne    5f
    cmp     x2, x23                 // a target before __copy_from would change the text
    b.lo    5f                      // the pristine copy leaves out: linked wrongly too
    add     x4, x4, x20
    str     x4, [x20, x2]
    add     x22, x22, #1
    b       4b
5:
    // An unexpected relocation type, or a target outside the copied part: the image was
    // linked wrongly. Nothing can print yet; park the CPU with the offending r_offset and
    // r_info in x2 and x3 for a debugger.
    wfe
    b       5b
6:
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    mov     x1, #0
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
    sub     x2, x2, x0
    bl      memset
8:
    // SP_EL1 is the exception stack; the kernel runs on SP_EL0 so that an overflow into
    // the guard page can still be reported from a good stack.
    adrp    x0, __exc_stack_top
    add     x0, x0, :lo12:__exc_stack_top
    mov     sp, x0
    msr     spsel, #0
    adrp    x0, __stack_top
    add     x0, x0, :lo12:__stack_top
    mov     sp, x0
    adrp    x0, baton_el1_vectors
    add     x0, x0, :lo12:baton_el1_vectors
    msr     vbar_el1, x0
    isb
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    mov     x3, x22
    bl      kernel_main
9:
    wfe
    b       9b
"#,
    flags = const IMAGE_FLAGS,
    magic = const IMAGE_MAGIC,
    scr_el3 = const SCR_EL3_VALUE,
    spsr_el2h = const SPSR_EL2H_MASKED,
    spsr_el1h = const SPSR_EL1H_MASKED,
    sctlr_el2 = const SCTLR_EL2_RES1,
    sctlr_el1 = const SCTLR_EL1_RES1,
    hcr_el2 = const HCR_EL2_RW,
    cnthctl = const CNTHCTL_EL2_EL1_ACCESS,
    cptr_el2 = const CPTR_EL2_NO_TRAPS,
    cpacr = const CPACR_EL1_FPEN,
    r_relative = const R_AARCH64_RELATIVE,
);

/// Where the image runs and how big it is in memory, from the linker's symbols.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// Run address of the first header byte.
    pub base: u64,
    /// Bytes from `base` to the end of the stacks (the header's `image_size`).
    pub size: u64,
    /// The stack guard page (unmapped once the MMU is on).
    pub stack_guard: u64,
    /// The kernel stack, `[bottom, top)`.
    pub stack_bottom: u64,
    pub stack_top: u64,
    /// Length of the Image file (the bytes a loader copied).
    pub file_size: u64,
    /// Offset in the file from which the entry code made the pristine copy: the bytes
    /// before it are never written (no relocation lands there), so the file is those bytes
    /// at `base` followed by the copy.
    pub copy_from: u64,
    /// The pristine copy of the file from `copy_from` on (`file_size - copy_from` bytes).
    pub copy: u64,
}

/// The image's layout at its run address.
#[cfg(target_arch = "aarch64")]
pub fn image_layout() -> ImageLayout {
    extern "C" {
        static _start: u8;
        static __image_end: u8;
        static __stack_guard: u8;
        static __stack_bottom: u8;
        static __stack_top: u8;
        static __file_end: u8;
        static __copy_start: u8;
        static __copy_from: u8;
    }
    // Taking the address of a linker symbol is PC-relative (adrp/add), never relocated.
    let base = core::ptr::addr_of!(_start) as u64;
    let end = core::ptr::addr_of!(__image_end) as u64;
    ImageLayout {
        base,
        size: end - base,
        stack_guard: core::ptr::addr_of!(__stack_guard) as u64,
        stack_bottom: core::ptr::addr_of!(__stack_bottom) as u64,
        stack_top: core::ptr::addr_of!(__stack_top) as u64,
        file_size: core::ptr::addr_of!(__file_end) as u64 - base,
        copy_from: core::ptr::addr_of!(__copy_from) as u64 - base,
        copy: core::ptr::addr_of!(__copy_start) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each named composition writes exactly the bits of the literal it replaced.
    #[test]
    fn entry_register_values_are_the_old_literals() {
        assert_eq!(SCTLR_EL1_RES1, 0x30d0_0800);
        assert_eq!(SCTLR_EL1_RES1_BITS, 0x30d0_0800);
        assert_eq!(SCTLR_EL2_RES1, 0x30c5_0830);
        assert_eq!(HCR_EL2_RW, 1 << 31);
        assert_eq!(CPTR_EL2_NO_TRAPS, 0x33ff);
        assert_eq!(CNTHCTL_EL2_EL1_ACCESS, 0b11);
        assert_eq!(
            SCR_EL3_VALUE,
            (1 << 0) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 10)
        );
        assert_eq!(SPSR_EL2H_MASKED, 0x3c9);
        assert_eq!(SPSR_EL1H_MASKED, 0x3c5);
        assert_eq!(CPACR_EL1_FPEN, 0b11 << 20);
    }
}
