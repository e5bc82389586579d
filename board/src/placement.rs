//! Where the next image, its device tree and its initrd go: first fit inside the parts of
//! scratch this image never used.
//!
//! Target free and host-tested; the kernel (`board/kernel`, `next_image`) copies the bytes. Scratch is
//! the only memory the next image may touch before its kho has reserved what was preserved,
//! so everything it reads at entry lives there: the Image on a 2 MiB boundary plus its
//! `text_offset` with `image_size` bytes free behind it, the FDT and the initrd.

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

use mm::{Memblock, PhysAddr, PhysRange};

use baton_image::{ImageHeader, IMAGE_ALIGN};

/// Alignment of the device tree and the initrd copies (a page: both get reserved whole).
pub const BLOB_ALIGN: u64 = 4096;

/// Scratch minus what memblock has reserved in it: the parts no one used this boot. Call it
/// after the last early allocation inside scratch, before scratch is reserved whole.
pub fn free_scratch(scratch: &[PhysRange], mb: &Memblock) -> Vec<PhysRange> {
    let mut out = Vec::new();
    for f in mb.free_ranges() {
        for s in scratch {
            let start = f.start.0.max(s.start.0);
            let end = f.end.0.min(s.end.0);
            if start < end {
                out.push(PhysRange {
                    start: PhysAddr(start),
                    end: PhysAddr(end),
                });
            }
        }
    }
    out.sort_unstable();
    out
}

/// There is no room left in free scratch for something the next image needs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NoRoom {
    /// What was being placed.
    pub what: &'static str,
    /// Bytes it needs.
    pub size: u64,
    /// Largest free piece of scratch left.
    pub largest: u64,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "placement: no room in scratch for the {} ({:#x} bytes; largest free piece {:#x})",
            self.what, self.size, self.largest
        )
    }
}

/// First-fit placement over free scratch; every placed range is taken out of the free list,
/// so nothing placed overlaps anything else placed or anything in use.
#[derive(Clone, Debug)]
pub struct Placer {
    free: Vec<PhysRange>,
}

impl Placer {
    /// Places inside `free` (any order, non-overlapping).
    pub fn new(mut free: Vec<PhysRange>) -> Self {
        free.retain(|r| r.start < r.end);
        free.sort_unstable();
        Placer { free }
    }

    /// What is still free.
    pub fn free(&self) -> &[PhysRange] {
        &self.free
    }

    fn largest(&self) -> u64 {
        self.free
            .iter()
            .map(|r| r.end.0 - r.start.0)
            .max()
            .unwrap_or(0)
    }

    /// Takes `[at, at + size)` out of free piece `i` (it must lie inside).
    fn take(&mut self, i: usize, at: u64, size: u64) {
        let r = self.free[i];
        self.free.remove(i);
        if at + size < r.end.0 {
            self.free.insert(
                i,
                PhysRange {
                    start: PhysAddr(at + size),
                    end: r.end,
                },
            );
        }
        if r.start < PhysAddr(at) {
            self.free.insert(
                i,
                PhysRange {
                    start: r.start,
                    end: PhysAddr(at),
                },
            );
        }
    }

    /// The lowest `base + offset` (base a multiple of `align`) with `size` free bytes from it.
    fn place_at(
        &mut self,
        what: &'static str,
        size: u64,
        align: u64,
        offset: u64,
    ) -> Result<u64, NoRoom> {
        let no_room = |p: &Self| NoRoom {
            what,
            size,
            largest: p.largest(),
        };
        if size == 0 || !align.is_power_of_two() || offset >= align {
            return Err(no_room(self));
        }
        for i in 0..self.free.len() {
            let r = self.free[i];
            let Some(mut base) = r
                .start
                .0
                .saturating_sub(offset)
                .checked_next_multiple_of(align)
            else {
                continue;
            };
            if base + offset < r.start.0 {
                base += align;
            }
            let at = base + offset;
            if at.checked_add(size).is_some_and(|e| e <= r.end.0) {
                self.take(i, at, size);
                return Ok(at);
            }
        }
        Err(no_room(self))
    }

    /// Where the next image's first byte goes: a 2 MiB boundary plus its `text_offset`,
    /// with `image_size` bytes free from there.
    pub fn place_image(&mut self, h: &ImageHeader) -> Result<u64, NoRoom> {
        self.place_at("next image", h.image_size, IMAGE_ALIGN, h.text_offset)
    }

    /// A page-aligned home for `size` bytes (FDT, initrd).
    pub fn place_blob(&mut self, what: &'static str, size: u64) -> Result<u64, NoRoom> {
        self.place_at(what, size.next_multiple_of(BLOB_ALIGN), BLOB_ALIGN, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm::{PhysAddr, PhysRange};

    const MIB: u64 = 1 << 20;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange {
            start: PhysAddr(start),
            end: PhysAddr(end),
        }
    }

    fn header(text_offset: u64, image_size: u64) -> ImageHeader {
        ImageHeader {
            text_offset,
            image_size,
            flags: 0b1010,
            stamp: None,
        }
    }

    #[test]
    fn free_scratch_is_scratch_minus_reservations() {
        let mut mb = Memblock::new();
        mb.add_memory(PhysRange::new(PhysAddr(0x4000_0000), 64 * MIB))
            .expect("ram");
        // The running image and a page table inside scratch.
        mb.reserve(PhysRange::new(PhysAddr(0x4200_0000), 0x6_2000))
            .expect("image");
        mb.reserve(PhysRange::new(PhysAddr(0x43ff_f000), 0x1000))
            .expect("table");
        let scratch = [r(0x4200_0000, 0x4400_0000)];
        assert_eq!(
            free_scratch(&scratch, &mb),
            vec![r(0x4206_2000, 0x43ff_f000)]
        );
    }

    #[test]
    fn image_goes_on_the_next_2mib_boundary_after_the_running_one() {
        let mut p = Placer::new(vec![r(0x4206_2000, 0x4600_0000)]);
        let at = p.place_image(&header(0, 0x6_3000)).expect("room");
        assert_eq!(at, 0x4220_0000);
        let at2 = p.place_image(&header(0x8_0000, 0x10_0000)).expect("room");
        assert_eq!(
            at2, 0x4208_0000,
            "an earlier 2 MiB boundary + text_offset fits"
        );
        // The blobs fill the gaps first fit, never overlapping what was placed.
        let fdt = p.place_blob("fdt", 0x1_0001).expect("room");
        assert_eq!(fdt, 0x4206_2000);
        for w in p.free().windows(2) {
            assert!(w[0].end <= w[1].start);
        }
        assert!(p
            .free()
            .iter()
            .all(|f| f.end <= PhysAddr(at) || f.start >= PhysAddr(at + 0x6_3000)));
    }

    #[test]
    fn text_offset_fits_before_the_free_start() {
        // Free from 0x4208_0000: base 0x4200_0000 + 0x80000 is exactly the start.
        let mut p = Placer::new(vec![r(0x4208_0000, 0x4400_0000)]);
        assert_eq!(
            p.place_image(&header(0x8_0000, 0x1000)).expect("room"),
            0x4208_0000
        );
    }

    #[test]
    fn no_room_names_what_and_how_much() {
        let mut p = Placer::new(vec![r(0x4000_1000, 0x4010_0000)]);
        let e = p
            .place_image(&header(0, 0x1000))
            .expect_err("no 2 MiB boundary");
        assert_eq!(e.what, "next image");
        assert_eq!(e.largest, 0xff000);
        assert!(format!("{e}").starts_with("placement: no room"));
        assert!(p.place_blob("fdt", 0x20_0000).is_err());
        assert_eq!(p.place_blob("fdt", 0).map_err(|e| e.size), Err(0));
    }

    #[test]
    fn placements_never_overlap() {
        let mut p = Placer::new(vec![
            r(0x4000_0000, 0x4100_0000),
            r(0x4300_0000, 0x4500_0000),
        ]);
        let mut got = Vec::new();
        for i in 0..40u64 {
            let size = 0x1000 * (1 + i * 7 % 13);
            if let Ok(a) = p.place_blob("blob", size) {
                got.push(r(a, a + size.next_multiple_of(BLOB_ALIGN)));
            }
        }
        if let Ok(a) = p.place_image(&header(0, 0x30_0000)) {
            got.push(r(a, a + 0x30_0000));
        }
        got.sort_unstable();
        for w in got.windows(2) {
            assert!(w[0].end <= w[1].start, "{:?} overlaps {:?}", w[0], w[1]);
        }
    }
}
