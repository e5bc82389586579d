//! `memcpy`, `memset`, `memcmp` and `bcmp` for the target, in assembly, in place of
//! compiler_builtins' weak ones.
//!
//! The target builds with strict alignment (the MMU may be off, where every access is Device
//! memory and an unaligned one faults), so the portable versions move and compare a byte or
//! one word per loop trip: about one instruction per byte, most of the handover's copies,
//! tree-page reads and zeroing. These move 64 bytes per trip with 8-byte aligned `ldp`/`stp`
//! once both pointers are aligned, and never make an unaligned access: pointers that cannot
//! be aligned together take the byte loop. Leaf functions: no stack, only x0-x11 (and w-
//! views) and the flags, so the entry code may call them before it has a stack.

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    r#"
.section .text.baton_mem, "ax"

// void *memcpy(void *dst = x0, const void *src = x1, size_t n = x2): returns dst.
.global memcpy
.type memcpy, %function
.p2align 4
memcpy:
    mov     x3, x0                  // x3 = write cursor; x0 stays the return value
    eor     x4, x0, x1
    tst     x4, #7
    b.ne    3f                      // src and dst not alignable together: bytes
0:  tst     x1, #7                  // bytes until both are 8-aligned
    b.eq    1f
    cbz     x2, 4f
    ldrb    w4, [x1], #1
    strb    w4, [x3], #1
    sub     x2, x2, #1
    b       0b
1:  cmp     x2, #64                 // 64 bytes per trip
    b.lo    2f
    ldp     x4, x5, [x1]
    ldp     x6, x7, [x1, #16]
    ldp     x8, x9, [x1, #32]
    ldp     x10, x11, [x1, #48]
    add     x1, x1, #64
    stp     x4, x5, [x3]
    stp     x6, x7, [x3, #16]
    stp     x8, x9, [x3, #32]
    stp     x10, x11, [x3, #48]
    add     x3, x3, #64
    sub     x2, x2, #64
    b       1b
2:  cmp     x2, #8                  // then words
    b.lo    3f
    ldr     x4, [x1], #8
    str     x4, [x3], #8
    sub     x2, x2, #8
    b       2b
3:  cbz     x2, 4f                  // then bytes
    ldrb    w4, [x1], #1
    strb    w4, [x3], #1
    sub     x2, x2, #1
    b       3b
4:  ret
.size memcpy, . - memcpy

// void *memset(void *dst = x0, int c = w1, size_t n = x2): returns dst.
.global memset
.type memset, %function
.p2align 4
memset:
    mov     x3, x0
    and     x1, x1, #0xff
    mov     x4, #0x0101010101010101
    mul     x4, x1, x4              // x4 = the byte in every lane
0:  tst     x3, #7                  // bytes until dst is 8-aligned
    b.eq    1f
    cbz     x2, 4f
    strb    w4, [x3], #1
    sub     x2, x2, #1
    b       0b
1:  cmp     x2, #64
    b.lo    2f
    stp     x4, x4, [x3]
    stp     x4, x4, [x3, #16]
    stp     x4, x4, [x3, #32]
    stp     x4, x4, [x3, #48]
    add     x3, x3, #64
    sub     x2, x2, #64
    b       1b
2:  cmp     x2, #8
    b.lo    3f
    str     x4, [x3], #8
    sub     x2, x2, #8
    b       2b
3:  cbz     x2, 4f
    strb    w4, [x3], #1
    sub     x2, x2, #1
    b       3b
4:  ret
.size memset, . - memset

// int memcmp(const void *a = x0, const void *b = x1, size_t n = x2): the difference of the
// first differing bytes (as unsigned char), 0 if none. bcmp: the same (any non-zero).
.global memcmp
.type memcmp, %function
.global bcmp
.type bcmp, %function
.p2align 4
memcmp:
bcmp:
    eor     x4, x0, x1
    tst     x4, #7
    b.ne    3f
0:  tst     x0, #7                  // bytes until both are 8-aligned
    b.eq    2f
    cbz     x2, 5f
    ldrb    w4, [x0], #1
    ldrb    w5, [x1], #1
    subs    w4, w4, w5
    b.ne    4f
    sub     x2, x2, #1
    b       0b
2:  cmp     x2, #8                  // words while they are equal
    b.lo    3f
    ldr     x4, [x0]
    ldr     x5, [x1]
    cmp     x4, x5
    b.ne    3f                      // a difference in this word: the byte loop finds it
    add     x0, x0, #8
    add     x1, x1, #8
    sub     x2, x2, #8
    b       2b
3:  cbz     x2, 5f
    ldrb    w4, [x0], #1
    ldrb    w5, [x1], #1
    subs    w4, w4, w5
    b.ne    4f
    sub     x2, x2, #1
    b       3b
4:  mov     w0, w4
    ret
5:  mov     w0, #0
    ret
.size memcmp, . - memcmp
"#
);
