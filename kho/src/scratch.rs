//! Scratch areas: memory that never holds preserved blocks, where the next image boots.
//!
//! Owns the size policy (the size `kho_scratch=` asked for, or a default), the choice of areas
//! through `mm::Memblock`, and the scratch array's encoding. Parsing a previous image's array is
//! in `validate`, with the other checks on untrusted input.

use alloc::vec::Vec;
use mm::PhysRange;

/// Smallest default scratch area.
pub const MIN_DEFAULT_SCRATCH: u64 = 32 << 20;
/// Alignment and granule of scratch areas: 4 MiB, the largest buddy block of a Linux next
/// image (its deferred page init frees scratch in such blocks and looks at their buddies, so
/// Linux aligns its own scratch so); the next image itself goes on a 2 MiB boundary.
pub const SCRATCH_ALIGN: u64 = 4 << 20;

/// Scratch a Linux next image needs for its early boot, `ram_total` bytes of RAM: Linux
/// allocates only in scratch until it has reserved what was preserved, and by then it has
/// its memory map (64 bytes per 4 KiB page, 16 MiB per GiB), page tables, log buffers and
/// DMA bounce buffers. Twice the memory map, as Linux's own default sizes its scratch at
/// twice its early footprint, plus 64 MiB for the rest; 4 MiB aligned.
pub fn linux_early_bytes(ram_total: u64) -> u64 {
    let memmap = ram_total / (PAGE_SIZE_BYTES / LINUX_PAGE_STRUCT);
    (64 << 20) + (2 * memmap).next_multiple_of(SCRATCH_ALIGN)
}

/// Bytes per page and per Linux `struct page`, for [`linux_early_bytes`].
const PAGE_SIZE_BYTES: u64 = mm::PAGE_SIZE;
const LINUX_PAGE_STRUCT: u64 = 64;

/// Scratch size for this boot: `asked` (`kho_scratch=`, already parsed and at most
/// `board::cmdline::MAX_SIZE`) if given, else `max(32 MiB, ram / 32)`; always rounded up
/// to 2 MiB and at most a quarter of RAM.
pub fn scratch_size(asked: Option<u64>, ram_total: u64) -> u64 {
    let size = asked.unwrap_or((ram_total / 32).max(MIN_DEFAULT_SCRATCH));
    let cap = (ram_total / 4) & !(SCRATCH_ALIGN - 1);
    // A size that cannot be rounded up is larger than any cap: the cap it is.
    size.checked_next_multiple_of(SCRATCH_ALIGN)
        .unwrap_or(u64::MAX)
        .min(cap.max(SCRATCH_ALIGN))
}

/// Chooses one scratch area of `size` bytes (4 MiB aligned) and reserves it in `mb`, so
/// nothing allocated before the buddy allocator exists, and nothing preserved, lands there.
pub fn choose_scratch(mb: &mut mm::Memblock, size: u64) -> Result<PhysRange, mm::MmError> {
    let size = size.next_multiple_of(SCRATCH_ALIGN);
    let start = mb.alloc(size, SCRATCH_ALIGN, None)?;
    Ok(PhysRange::new(start, size))
}

/// The scratch array's bytes: `(address, size)` pairs of little-endian u64.
pub fn encode_scratch_array(areas: &[PhysRange]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 * areas.len());
    for a in areas {
        v.extend_from_slice(&a.start.0.to_le_bytes());
        v.extend_from_slice(&a.size().to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_policy() {
        assert_eq!(scratch_size(Some(16 << 20), 1 << 30), 16 << 20);
        assert_eq!(scratch_size(Some(3 << 20), 1 << 30), 4 << 20);
        assert_eq!(scratch_size(None, 1 << 30), 32 << 20);
        assert_eq!(scratch_size(None, 4 << 30), 128 << 20);
        assert_eq!(scratch_size(Some(1 << 30), 128 << 20), 32 << 20);
    }

    #[test]
    fn a_size_that_cannot_round_up_is_capped_not_wrapped() {
        // Finding 4: next_multiple_of wrapped 2^64-1 to 0 ("kho_scratch= gives 0 MiB").
        assert_eq!(scratch_size(Some(u64::MAX), 1 << 30), 256 << 20);
    }
}
