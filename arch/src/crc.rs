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
