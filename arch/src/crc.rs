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

/// Words in one group of a page's non-zero summary: one 64-byte line, one summary bit.
pub const SUMMARY_GROUP_WORDS: usize = 8;
/// Groups whose bits [`copy_crc32_summary`] gathers at once: one byte of the summary.
#[cfg(target_arch = "aarch64")]
const RUN_GROUPS: usize = 8;
/// Words in one such run of groups.
#[cfg(target_arch = "aarch64")]
const RUN_WORDS: usize = RUN_GROUPS * SUMMARY_GROUP_WORDS;
/// Most words `copy_crc32_summary` (aarch64) takes: the summary is one u64, a bit per group.
pub const SUMMARY_MAX_WORDS: usize = 64 * SUMMARY_GROUP_WORDS;

/// [`copy_crc32`] of `words` 64-bit words (a tree page) that also returns the copy's
/// non-zero summary: bit `g` set iff words `8g..8g + 8` are not all zero, exactly what kho
/// computes over its copy (`kho::phys::nonzero_groups`). The words go through the vector
/// registers for the copy and the summary (`ldp q`/`stp q`, an OR tree per group, one
/// pairwise-maximum fold per eight groups) and through the general registers for the CRC:
/// about 22 instructions per 64 bytes, against 19 for [`copy_crc32`] plus about 9 for
/// summarising the copy in a second pass (the vector stores take half the instructions of
/// the scalar ones, which pays for loading the words twice). Falls back to [`copy_crc32`]
/// and a scalar summary when a pointer is not 16-aligned or `words` is not a whole number
/// of runs of 64 words up to [`SUMMARY_MAX_WORDS`].
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `8 * words` bytes, the two ranges
/// must not overlap, and nothing else may access `dst` or write `src` during the call.
#[cfg(target_arch = "aarch64")]
pub unsafe fn copy_crc32_summary(
    crc: u32,
    dst: *mut u64,
    src: *const u64,
    words: usize,
) -> (u32, u64) {
    use core::arch::aarch64::{uint64x2_t, vorrq_u64};
    let aligned = (dst as usize).is_multiple_of(16) && (src as usize).is_multiple_of(16);
    if !aligned || !words.is_multiple_of(RUN_WORDS) || words > SUMMARY_MAX_WORDS {
        // SAFETY: the caller's contract, in bytes.
        let c = unsafe { copy_crc32(crc, dst as *mut u8, src as *const u8, 8 * words) };
        // SAFETY: dst now holds `words` initialised words that nothing else accesses.
        let copy = unsafe { core::slice::from_raw_parts(dst as *const u64, words) };
        let summary = copy
            .chunks(SUMMARY_GROUP_WORDS)
            .enumerate()
            .fold(0u64, |m, (g, grp)| {
                m | u64::from(grp.iter().any(|&w| w != 0)) << g
            });
        return (c, summary);
    }
    let mut c = !crc;
    let mut summary = 0u64;
    for run in 0..words / RUN_WORDS {
        let base = run * RUN_WORDS;
        // Group `g` of the run: copied, hashed, and its words ORed to one vector. Called
        // once per group by name below, not in a loop: unrolled, the eight ORs stay in
        // registers until `run_summary`.
        let mut group = |g: usize| {
            let at = base + g * SUMMARY_GROUP_WORDS;
            // SAFETY: words at..at + 8 lie inside both ranges (at + 8 <= words), both
            // pointers 16-aligned (checked above) so every 2-word vector access is aligned;
            // the ranges do not overlap. Plain aligned reads and writes of `uint64x2_t`, not
            // `vld1q`/`vst1q`: those are unaligned accesses, which the strict-alignment
            // target does byte by byte.
            unsafe {
                let (s, d) = (src.add(at), dst.add(at));
                c = crc32_group(c, s);
                let (s, d) = (s as *const uint64x2_t, d as *mut uint64x2_t);
                let v = [s.read(), s.add(1).read(), s.add(2).read(), s.add(3).read()];
                d.write(v[0]);
                d.add(1).write(v[1]);
                d.add(2).write(v[2]);
                d.add(3).write(v[3]);
                vorrq_u64(vorrq_u64(v[0], v[1]), vorrq_u64(v[2], v[3]))
            }
        };
        let ors = [
            group(0),
            group(1),
            group(2),
            group(3),
            group(4),
            group(5),
            group(6),
            group(7),
        ];
        summary |= u64::from(run_summary(&ors)) << (RUN_GROUPS * run);
    }
    (!c, summary)
}

/// Continues the inverted CRC state `c` over the eight words at `s` (little-endian, as
/// stored). In assembly so that the compiler cannot turn these general-register loads into
/// lane moves out of the vector loads of the same words (two instructions per pair of words
/// instead of one `ldp`).
///
/// # Safety
/// `s` must be 8-aligned and valid for reads of eight words.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn crc32_group(mut c: u32, s: *const u64) -> u32 {
    // SAFETY: the caller's contract: 64 readable, aligned bytes at `s`; the CRC32
    // instructions are present (`crc32_update`); only `c` and the two scratch registers
    // change, no flags, no stack, no memory written.
    unsafe {
        core::arch::asm!(
            "ldp {a}, {b}, [{s}]",
            "crc32x {c:w}, {c:w}, {a}",
            "crc32x {c:w}, {c:w}, {b}",
            "ldp {a}, {b}, [{s}, #16]",
            "crc32x {c:w}, {c:w}, {a}",
            "crc32x {c:w}, {c:w}, {b}",
            "ldp {a}, {b}, [{s}, #32]",
            "crc32x {c:w}, {c:w}, {a}",
            "crc32x {c:w}, {c:w}, {b}",
            "ldp {a}, {b}, [{s}, #48]",
            "crc32x {c:w}, {c:w}, {a}",
            "crc32x {c:w}, {c:w}, {b}",
            s = in(reg) s,
            c = inout(reg) c,
            a = out(reg) _,
            b = out(reg) _,
            options(readonly, nostack, preserves_flags),
        );
    }
    c
}

/// The summary byte of one run: bit `g` set iff `ors[g]` (the OR of group `g`'s words,
/// two lanes) is not zero. Unsigned pairwise maxima of the 32-bit halves fold each group
/// to one lane (non-zero iff any half was), a test against itself turns a lane into all
/// ones or zero, and a sum of per-lane weights makes the byte.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn run_summary(ors: &[core::arch::aarch64::uint64x2_t; RUN_GROUPS]) -> u8 {
    use core::arch::aarch64::{
        uint16x8_t, vaddvq_u16, vandq_u16, vcombine_u16, vmovn_u32, vpmaxq_u32,
        vreinterpretq_u32_u64, vtstq_u32,
    };
    /// Lane `g`'s bit in the summary byte.
    const WEIGHTS: [u16; RUN_GROUPS] = [1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: NEON arithmetic only (every AArch64 core has it); `[u16; 8]` and `uint16x8_t`
    // are the same 16 bytes, any bit pattern valid (a value transmute, no unaligned load).
    unsafe {
        let weights: uint16x8_t = core::mem::transmute(WEIGHTS);
        let pair = |a, b| vpmaxq_u32(vreinterpretq_u32_u64(a), vreinterpretq_u32_u64(b));
        let lo = vpmaxq_u32(pair(ors[0], ors[1]), pair(ors[2], ors[3]));
        let hi = vpmaxq_u32(pair(ors[4], ors[5]), pair(ors[6], ors[7]));
        let set = vcombine_u16(vmovn_u32(vtstq_u32(lo, lo)), vmovn_u32(vtstq_u32(hi, hi)));
        vaddvq_u16(vandq_u16(set, weights)) as u8
    }
}
