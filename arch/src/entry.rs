//! The arm64 `Image` header and the first instructions of every boot.
//!
//! Owns everything that runs before Rust: the 64-byte header the loaders read, the drop from
//! EL3 to EL2 and from EL2 to EL1 (installing the EL2 stub on the way), FP/SIMD enable, the
//! pristine copy of the loaded file (the next image of a self-handover), the
//! self-relocation pass over `.rela.dyn`, BSS clearing, both stacks and `VBAR_EL1`. It must
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

/// SCTLR_EL1 with only its RES1 bits (29, 28, 23, 22, 20, 11): MMU, caches and alignment
/// checking off, little-endian. Written whole, so nothing the firmware left survives.
pub const SCTLR_EL1_RES1: u64 = 0x30d0_0800;
/// SCTLR_EL2 with only its RES1 bits: MMU and caches off at EL2 (the stub never maps memory).
pub const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// HCR_EL2: RW = 1 (EL1 is AArch64); no traps, no virtualization of anything else.
pub const HCR_EL2_RW: u64 = 1 << 31;
/// CPTR_EL2 RES1 bits with TFP = 0: FP/SIMD is not trapped to EL2.
pub const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;
/// CNTHCTL_EL2: EL1PCTEN | EL1PCEN, EL1 may read the physical counter and use its timer.
pub const CNTHCTL_EL2_EL1_ACCESS: u64 = 0b11;
/// SCR_EL3: RES1 (bits 4, 5), NS (bit 0), HCE (bit 8, HVC enabled), RW (bit 10, EL2 AArch64).
pub const SCR_EL3_VALUE: u64 = (1 << 0) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 10);
/// SPSR for an `eret` into EL2h with D, A, I, F masked.
pub const SPSR_EL2H_MASKED: u64 = 0x3c9;
/// SPSR for an `eret` into EL1h with D, A, I, F masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// CPACR_EL1.FPEN = 0b11: FP/SIMD instructions do not trap at EL1 or EL0.
pub const CPACR_EL1_FPEN: u64 = 0b11 << 20;

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
    // Keep a pristine copy of the Image file before anything (relocation, .data writes)
    // changes the loaded bytes: a self-handover enters this copy. Both ends are 8-aligned.
    // memcpy and memset (arch::mem) are leaf functions that need no stack and keep x19-x22.
    adrp    x0, __copy_start
    add     x0, x0, :lo12:__copy_start
    mov     x1, x20                 // source: the loaded file
    adrp    x2, __file_end
    add     x2, x2, :lo12:__file_end
    sub     x2, x2, x20             // length: the file
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
    add     x4, x4, x20
    str     x4, [x20, x2]
    add     x22, x22, #1
    b       4b
5:
    // An unexpected relocation type: the image was linked wrongly. Nothing can print yet;
    // park the CPU with the offending r_info in x3 for a debugger.
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
    /// The pristine copy of the file the entry code made (`file_size` bytes).
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
        copy: core::ptr::addr_of!(__copy_start) as u64,
    }
}
