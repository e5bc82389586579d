//! Cache maintenance: by virtual address to the point of coherency, the whole I-cache, and
//! the whole D-cache by set/way.
//!
//! QEMU's TCG does not model caches, so nothing here can be tested there: every sequence
//! follows the architecture's rules (docs/hardware.md) and the ordering is spelled out.
//! Never changes SCTLR; callers decide when caches are on.

/// Smallest D-cache line in bytes, from CTR_EL0.DminLine (log2 of words).
#[cfg(target_arch = "aarch64")]
pub fn dcache_line_size() -> usize {
    let ctr: u64;
    // SAFETY: CTR_EL0 is readable at EL1 and has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

#[cfg(target_arch = "aarch64")]
macro_rules! by_va {
    ($insn:literal, $start:expr, $len:expr) => {{
        let line = dcache_line_size() as u64;
        let mut addr = ($start as u64) & !(line - 1);
        let end = ($start as u64) + ($len as u64);
        // Sixteen lines per loop trip (the whole image is invalidated at every boot, and
        // the next image cleaned at every handover): the operation and one add per line,
        // one compare and branch per sixteen.
        while addr + 16 * line <= end {
            // SAFETY: the caller guarantees the range is mapped (the sixteen lines end at or
            // before `end`); DC by VA has no other effect.
            unsafe {
                core::arch::asm!(
                    ".rept 16",
                    concat!("dc ", $insn, ", {a}"),
                    "add {a}, {a}, {l}",
                    ".endr",
                    a = inout(reg) addr,
                    l = in(reg) line,
                    options(nostack)
                )
            };
        }
        while addr < end {
            // SAFETY: the caller guarantees the range is mapped; DC by VA has no other effect.
            unsafe { core::arch::asm!(concat!("dc ", $insn, ", {}"), in(reg) addr, options(nostack)) };
            addr += line;
        }
        // SAFETY: a barrier only orders the maintenance above before what follows.
        unsafe { core::arch::asm!("dsb sy", options(nostack)) };
    }};
}

/// Cleans `[start, start + len)` to the point of coherency: memory then holds what the
/// caches held, so an observer with caches off (the next image before its MMU is on) sees it.
///
/// # Safety
/// The range must be mapped, and no other agent may write it concurrently.
#[cfg(target_arch = "aarch64")]
pub unsafe fn clean_to_poc(start: u64, len: u64) {
    by_va!("cvac", start, len);
}

/// Cleans and invalidates `[start, start + len)` to the point of coherency.
///
/// # Safety
/// As for [`clean_to_poc`].
#[cfg(target_arch = "aarch64")]
pub unsafe fn clean_invalidate_to_poc(start: u64, len: u64) {
    by_va!("civac", start, len);
}

/// Invalidates `[start, start + len)` to the point of coherency, discarding any cached
/// copy: the next cached read comes from memory. For memory written with the caches off
/// (the boot protocol only promises the loader *cleaned* the Image: a stale clean line may
/// still sit in a cache and would shadow what was written with the caches off).
///
/// # Safety
/// As for [`clean_to_poc`], and no cache may hold dirty data of the range that anyone needs
/// (true while the D-cache has been off since entry: nothing could dirty a line). Whole lines
/// are invalidated, so the same holds for the lines the range's ends share with neighbours.
#[cfg(target_arch = "aarch64")]
pub unsafe fn invalidate_to_poc(start: u64, len: u64) {
    by_va!("ivac", start, len);
}

/// Invalidates the whole instruction cache to the point of unification.
#[cfg(target_arch = "aarch64")]
pub fn invalidate_icache_all() {
    // SAFETY: invalidating the I-cache only costs refetches.
    unsafe { core::arch::asm!("ic iallu", "dsb nsh", "isb", options(nostack)) };
}

/// Cleans and invalidates every data/unified cache level by set/way, innermost first.
///
/// Only valid on a single running core with no other coherent master caching our memory,
/// which is baton's situation at handover (secondaries never released). Used after the
/// D-cache is disabled, so that no dirty line can later be written back over the next image.
#[cfg(target_arch = "aarch64")]
pub fn clean_invalidate_dcache_all() {
    let clidr: u64;
    // SAFETY: reading ID registers has no side effect.
    unsafe { core::arch::asm!("mrs {}, clidr_el1", out(reg) clidr, options(nomem, nostack)) };
    let loc = (clidr >> 24) & 0x7; // level of coherence
    for level in 0..loc {
        let ctype = (clidr >> (level * 3)) & 0x7;
        if ctype < 2 {
            continue; // no cache or I-cache only at this level
        }
        let ccsidr: u64;
        // SAFETY: CSSELR selects which CCSIDR we read; the isb makes the selection visible.
        unsafe {
            core::arch::asm!("msr csselr_el1, {}", "isb", "mrs {}, ccsidr_el1",
                in(reg) level << 1, out(reg) ccsidr, options(nostack));
        }
        let line_shift = (ccsidr & 0x7) + 4;
        let ways = ((ccsidr >> 3) & 0x3ff) + 1;
        let sets = ((ccsidr >> 13) & 0x7fff) + 1;
        let way_shift = (ways as u32 - 1).leading_zeros();
        // Way outer, set inner: the operand of the next set is the last one plus one set
        // step, so the inner loop is the operation, one add and (every sixteenth) a branch.
        let set_step = 1u64 << line_shift;
        for way in 0..ways {
            let first = (way << way_shift) | (level << 1);
            let end = first + sets * set_step;
            let mut op = first;
            while op + 16 * set_step <= end {
                // SAFETY: DC CISW on a valid set/way operand (sets below the count CCSIDR
                // gives) only writes back and drops a line.
                unsafe {
                    core::arch::asm!(
                        ".rept 16",
                        "dc cisw, {o}",
                        "add {o}, {o}, {s}",
                        ".endr",
                        o = inout(reg) op,
                        s = in(reg) set_step,
                        options(nostack)
                    )
                };
            }
            while op < end {
                // SAFETY: as above.
                unsafe { core::arch::asm!("dc cisw, {}", in(reg) op, options(nostack)) };
                op += set_step;
            }
        }
    }
    // SAFETY: barriers only order the maintenance.
    unsafe { core::arch::asm!("msr csselr_el1, xzr", "dsb sy", "isb", options(nostack)) };
}
