//! From BootInfo to memory: the Memblock of the boot memory map, and the ranges the MMU maps.
//!
//! Target-free. Decides what is reserved at boot (the image with its stacks, the FDT,
//! `/memreserve/`, `/reserved-memory`, the initrd) and what the identity map covers (RAM as
//! normal memory minus the stack guard page; devices outside RAM as device memory).

use mm::{Memblock, MmError, PhysAddr, PhysRange};

use crate::bootinfo::{BootInfo, RangeList};

/// Why a reservation was made, for the memory-map printout.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReserveReason {
    Image,
    Fdt,
    Memreserve,
    ReservedMemory,
    Initrd,
}

impl ReserveReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image+stacks",
            Self::Fdt => "fdt",
            Self::Memreserve => "/memreserve/",
            Self::ReservedMemory => "/reserved-memory",
            Self::Initrd => "initrd",
        }
    }
}

/// Every boot-time reservation with its reason, in a fixed order.
pub fn boot_reservations<'a>(
    info: &'a BootInfo<'_>,
    image: PhysRange,
) -> impl Iterator<Item = (ReserveReason, PhysRange)> + 'a {
    use ReserveReason::*;
    core::iter::once((Image, image))
        .chain(info.fdt.map(|r| (Fdt, r)))
        .chain(info.memreserve.iter().map(|r| (Memreserve, *r)))
        .chain(info.reserved_memory.iter().map(|r| (ReservedMemory, *r)))
        .chain(info.initrd.filter(|r| r.size() > 0).map(|r| (Initrd, r)))
}

/// The whole pages inside `r` as `(start, end)`; empty (`start >= end`) if none, never
/// wrapping (a range in the last page of the address space has none).
fn inner_pages(r: &PhysRange) -> (u64, u64) {
    match r.start.align_up(0x1000) {
        Some(s) => (s.0, r.end.0 & !0xfff),
        None => (0, 0),
    }
}

/// Fills `mb` with the RAM of `info` and reserves everything the image must not allocate.
/// Reservations are page-rounded outward; ones outside RAM are ignored by Memblock.
pub fn fill_memblock(
    mb: &mut Memblock,
    info: &BootInfo<'_>,
    image: PhysRange,
) -> Result<(), MmError> {
    for r in info.memory.iter() {
        // RAM is rounded inward: a partial page is not RAM we can hand out.
        let (start, end) = inner_pages(r);
        if end > start {
            mb.add_memory(PhysRange::new(PhysAddr(start), end - start))?;
        }
    }
    for (_, r) in boot_reservations(info, image) {
        if r.size() > 0 {
            mb.reserve(r.outer_pages())?;
        }
    }
    Ok(())
}

/// RAM ranges to map as normal memory: `info.memory`, page-rounded inward, minus `hole`.
pub fn normal_ranges(info: &BootInfo<'_>, hole: PhysRange) -> RangeList<64> {
    let mut out = RangeList::new();
    for r in info.memory.iter() {
        let (start, end) = inner_pages(r);
        let mut pieces = [(start, end.min(hole.start.0)), (start.max(hole.end.0), end)];
        if hole.size() == 0 || end <= hole.start.0 || start >= hole.end.0 {
            pieces = [(start, end), (0, 0)];
        }
        for (s, e) in pieces {
            if e > s {
                let _ = out.push(PhysRange::new(PhysAddr(s), e - s));
            }
        }
    }
    out
}

/// Device ranges to map: every FDT device range that does not touch RAM and fits the
/// 48-bit identity map. Returns the ranges and how many were skipped.
pub fn device_ranges(
    info: &BootInfo<'_>,
    va_limit: u64,
) -> (RangeList<{ crate::bootinfo::MAX_DEVICES }>, usize) {
    let mut out = RangeList::new();
    let mut skipped = 0;
    for d in info.devices.iter() {
        let d = d.outer_pages();
        if d.end.0 > va_limit || info.memory.iter().any(|m| m.overlaps(&d)) || out.push(d).is_err()
        {
            skipped += 1;
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boards::{BoardKind, BoardSource};
    use crate::bootinfo::default_board_info;

    #[test]
    fn default_board_memblock_keeps_page_zero_and_image_out() {
        let info = default_board_info();
        let mut mb = Memblock::new();
        fill_memblock(
            &mut mb,
            &info,
            PhysRange::new(PhysAddr(0x20_0000), 0x4_2000),
        )
        .unwrap();
        let free: Vec<_> = mb.free_ranges().map(|r| (r.start.0, r.end.0)).collect();
        assert_eq!(free, vec![(0x1000, 0x20_0000), (0x24_2000, 0x3c00_0000)]);
    }

    #[test]
    fn the_guard_page_is_cut_out_of_normal_memory() {
        let mut info = BootInfo::empty(BoardKind::QemuVirt, BoardSource::Compatible);
        info.memory
            .push(PhysRange::new(PhysAddr(0x4000_0000), 0x800_0000))
            .unwrap();
        let n = normal_ranges(&info, PhysRange::new(PhysAddr(0x4030_0000), 0x1000));
        assert_eq!(
            n.as_slice(),
            &[
                PhysRange::new(PhysAddr(0x4000_0000), 0x30_0000),
                PhysRange::new(PhysAddr(0x4030_1000), 0x7cf_f000)
            ]
        );
    }
}
