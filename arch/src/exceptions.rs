//! Exception vectors at EL1 and the EL2 stub vectors.
//!
//! Owns `VBAR_EL1`'s table and the register frame it saves. A synchronous exception from the
//! semihosting trap (`hlt #0xf000` when QEMU runs without `-semihosting`) is resumed with an
//! error result; every other exception is fatal: the registered fatal hook gets the frame,
//! prints it and exits with a failure status. Never allocates, never takes a lock.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Registers saved on exception entry, in the order the vector stub stores them.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct ExceptionFrame {
    /// x0..x30.
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    /// The interrupted code's stack pointer (the kernel runs on SP_EL0).
    pub sp: u64,
}

/// Bytes the vector stub reserves for an [`ExceptionFrame`].
pub const FRAME_SIZE: usize = 288;
const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == FRAME_SIZE);

/// Which of the 16 vectors was taken.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VectorKind(pub u64);

impl VectorKind {
    /// "Synchronous, current EL, SP0", ..., in `VBAR` order.
    pub fn describe(self) -> &'static str {
        const NAMES: [&str; 16] = [
            "synchronous, current EL, SP0",
            "IRQ, current EL, SP0",
            "FIQ, current EL, SP0",
            "SError, current EL, SP0",
            "synchronous, current EL, SPx",
            "IRQ, current EL, SPx",
            "FIQ, current EL, SPx",
            "SError, current EL, SPx",
            "synchronous, lower EL, AArch64",
            "IRQ, lower EL, AArch64",
            "FIQ, lower EL, AArch64",
            "SError, lower EL, AArch64",
            "synchronous, lower EL, AArch32",
            "IRQ, lower EL, AArch32",
            "FIQ, lower EL, AArch32",
            "SError, lower EL, AArch32",
        ];
        NAMES
            .get(self.0 as usize)
            .copied()
            .unwrap_or("unknown vector")
    }

    /// Synchronous exception taken from the current EL (either stack).
    pub fn is_sync_current(self) -> bool {
        self.0 == 0 || self.0 == 4
    }
}

/// Exception class (ESR bits 31:26) in words.
pub fn exception_class_name(esr: u64) -> &'static str {
    match (esr >> 26) & 0x3f {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "WFI/WFE trapped",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC from AArch64",
        0x16 => "HVC from AArch64",
        0x17 => "SMC from AArch64",
        0x18 => "MSR/MRS/system instruction trapped",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, current EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, current EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK instruction",
        _ => "other exception class",
    }
}

/// The encoding of `hlt #0xf000`, the A64 semihosting trap.
pub const HLT_SEMIHOSTING: u32 = 0xd45e_0000;

/// What the fatal hook gets: the frame and the vector it came through. It must not return.
pub type FatalHook = fn(&ExceptionFrame, VectorKind) -> !;

static FATAL_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the function that reports a fatal exception and exits.
pub fn set_fatal_hook(hook: FatalHook) {
    FATAL_HOOK.store(hook as usize, Ordering::SeqCst);
}

#[cfg(target_arch = "aarch64")]
#[no_mangle]
extern "C" fn baton_exception(frame: &mut ExceptionFrame, kind: u64) {
    let kind = VectorKind(kind);
    let ec = (frame.esr >> 26) & 0x3f;
    if kind.is_sync_current() && ec == 0 && frame.elr.is_multiple_of(4) {
        // SAFETY: ELR points at the instruction that trapped, in our own mapped text.
        let insn = unsafe { core::ptr::read_volatile(frame.elr as *const u32) };
        if insn == HLT_SEMIHOSTING {
            crate::semihosting::mark_missing();
            frame.x[0] = u64::MAX;
            frame.elr += 4;
            return;
        }
    }
    let hook = FATAL_HOOK.load(Ordering::SeqCst);
    if hook != 0 {
        // SAFETY: FATAL_HOOK only ever holds a `FatalHook` stored by `set_fatal_hook`.
        let hook: FatalHook = unsafe { core::mem::transmute::<usize, FatalHook>(hook) };
        hook(frame, kind);
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    r#"
.macro BATON_VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       baton_exc_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global baton_el1_vectors
baton_el1_vectors:
    BATON_VECTOR 0
    BATON_VECTOR 1
    BATON_VECTOR 2
    BATON_VECTOR 3
    BATON_VECTOR 4
    BATON_VECTOR 5
    BATON_VECTOR 6
    BATON_VECTOR 7
    BATON_VECTOR 8
    BATON_VECTOR 9
    BATON_VECTOR 10
    BATON_VECTOR 11
    BATON_VECTOR 12
    BATON_VECTOR 13
    BATON_VECTOR 14
    BATON_VECTOR 15

baton_exc_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #248]
    mrs     x2, esr_el1
    mrs     x3, far_el1
    stp     x2, x3, [sp, #264]
    mrs     x2, sp_el0
    str     x2, [sp, #280]
    mov     x0, sp
    bl      baton_exception
    ldp     x2, x3, [sp, #248]      // the handler may have moved ELR past a trapped hlt
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #{frame}
    eret

// EL2 stub: the only thing EL2 does after boot is serve one HVC from EL1, "enter this image
// at EL2 with the MMU off" (see `el::HVC_ENTER_AT_EL2`). Anything else returns -1.
.balign 0x800
.global baton_el2_vectors
baton_el2_vectors:
    .balign 0x80
    b       .                       // synchronous, current EL, SP0
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .                       // synchronous, current EL, SPx
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       baton_el2_hvc           // synchronous, lower EL, AArch64: the HVC
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .
    .balign 0x80
    b       .

baton_el2_hvc:
    mrs     x9, esr_el2
    ubfx    x10, x9, #26, #6
    cmp     x10, #0x16              // EC = HVC from AArch64
    b.ne    1f
    ldr     x10, ={hvc_enter}
    cmp     x0, x10
    b.ne    1f
    // x1 = entry, x2 = FDT. EL2's MMU and caches were never turned on (SCTLR_EL2 = RES1).
    ldr     x10, ={sctlr_el2}
    msr     sctlr_el2, x10
    msr     elr_el2, x1
    mov     x10, #{spsr_el2h}
    msr     spsr_el2, x10
    msr     vbar_el2, xzr           // the next image installs its own vectors
    ic      iallu
    tlbi    alle2
    tlbi    vmalls12e1
    dsb     sy
    isb
    mov     x0, x2
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    eret
1:
    mov     x0, #-1
    eret
"#,
    frame = const FRAME_SIZE,
    hvc_enter = const crate::el::HVC_ENTER_AT_EL2,
    sctlr_el2 = const crate::entry::SCTLR_EL2_RES1,
    spsr_el2h = const crate::entry::SPSR_EL2H_MASKED,
);
