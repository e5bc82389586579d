//! CRC-32 (IEEE 802.3, the polynomial of zlib and crc32fast) on the Armv8 CRC32 instructions.
//!
//! Owns one function with crc32fast's calling convention (the running CRC of what came before,
//! 0 for nothing, in and out), so that kho's metadata checksum and the Image build stamp can
//! be computed here and checked anywhere else with crc32fast. Reads its input with aligned
//! 8-byte loads only: the target builds with strict alignment (the MMU may be off), where an
//! unaligned `u64` read compiles to eight byte loads. Never writes memory.

/// Continues the CRC-32 `crc` (of the bytes before) over `bytes`: `crc32_update(0, b)` is
/// `crc32fast::hash(b)`, and `crc32_update(crc32_update(0, a), b)` the CRC of `a` then `b`.
#[cfg(target_arch = "aarch64")]
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    use core::arch::aarch64::{__crc32b, __crc32d};
    let mut c = !crc;
    // Bytes up to the first 8-aligned address, then words, then the tail.
    let head = bytes.as_ptr().align_offset(8).min(bytes.len());
    let (pre, rest) = bytes.split_at(head);
    for &b in pre {
        // SAFETY: the image is built with `+crc` (.cargo/config.toml): every core baton
        // runs on (Cortex-A72, BCM2711) implements the CRC32 instructions.
        c = unsafe { __crc32b(c, b) };
    }
    let words = rest.len() / 8;
    let base = rest.as_ptr() as *const u64;
    let mut i = 0;
    while i + 8 <= words {
        for k in 0..8 {
            // SAFETY: `base` is 8-aligned (split above) and word i + k < words lies inside
            // `rest`; CRC32 instructions as above.
            c = unsafe { __crc32d(c, u64::from_le(base.add(i + k).read())) };
        }
        i += 8;
    }
    while i < words {
        // SAFETY: as in the unrolled loop.
        c = unsafe { __crc32d(c, u64::from_le(base.add(i).read())) };
        i += 1;
    }
    for &b in &rest[words * 8..] {
        // SAFETY: CRC32 instructions as above.
        c = unsafe { __crc32b(c, b) };
    }
    !c
}

/// Copies `len` bytes from `src` to `dst` and continues the CRC-32 `crc` over them (as
/// [`crc32_update`] would over the copied bytes): one read of the source instead of a copy
/// and a second pass to hash. Words when both pointers are 8-aligned, else a plain copy and
/// then [`crc32_update`] over the destination.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, the two ranges must
/// not overlap, and nothing else may access `dst` during the call.
#[cfg(target_arch = "aarch64")]
pub unsafe fn copy_crc32(crc: u32, dst: *mut u8, src: *const u8, len: usize) -> u32 {
    use core::arch::aarch64::__crc32d;
    if !(dst as usize).is_multiple_of(8) || !(src as usize).is_multiple_of(8) {
        // SAFETY: the caller's contract, as stated above.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
        // SAFETY: dst now holds len initialised bytes that nothing else accesses.
        return crc32_update(crc, unsafe { core::slice::from_raw_parts(dst, len) });
    }
    let mut c = !crc;
    let words = len / 8;
    let (s, d) = (src as *const u64, dst as *mut u64);
    let mut i = 0;
    // Sixteen words (128 bytes) per trip: the loop's pointer and counter updates, compare
    // and branch (five instructions) come once per 32 loads, stores and CRC steps instead
    // of once per 16 (22 instructions per 64 bytes became ~18.5; the next image and every
    // tree page go through here at each handover).
    while i + 16 <= words {
        // Sixteen words loaded before any is stored (the pointers may alias as far as the
        // compiler knows): the loads and the stores then pair up (`ldp`/`stp`).
        // SAFETY: both pointers are 8-aligned and words i..i + 16 lie inside both ranges
        // (the caller's contract); `[u64; 16]` needs only 8-byte alignment.
        let w = unsafe { (s.add(i) as *const [u64; 16]).read() };
        // SAFETY: as above; the ranges do not overlap.
        unsafe { (d.add(i) as *mut [u64; 16]).write(w) };
        for x in w {
            // SAFETY: CRC32 instructions: see `crc32_update`.
            c = unsafe { __crc32d(c, u64::from_le(x)) };
        }
        i += 16;
    }
    while i < words {
        // SAFETY: as in the unrolled loop.
        unsafe {
            let w = s.add(i).read();
            d.add(i).write(w);
            c = __crc32d(c, u64::from_le(w));
        }
        i += 1;
    }
    let done = 8 * words;
    // SAFETY: the tail lies inside both ranges; then dst holds it, initialised and unshared.
    let tail = unsafe {
        core::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done);
        core::slice::from_raw_parts(dst.add(done), len - done)
    };
    crc32_update(!c, tail)
}
