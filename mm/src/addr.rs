//! Physical addresses, frame numbers and physical ranges.
//!
//! Plain value types shared by every other module and by the crates that use `mm`. They
//! never dereference anything: a `PhysAddr` is a number, not a pointer.

use core::fmt;

/// Log2 of the frame size.
pub const PAGE_SHIFT: u32 = 12;
/// Size of one frame (4 KiB).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// A physical frame number: a physical address shifted right by [`PAGE_SHIFT`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pfn(pub u64);

/// A physical address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

impl Pfn {
    /// The physical address of the first byte of this frame.
    pub const fn phys(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }

    /// The frame `n` frames after this one.
    pub const fn add(self, n: u64) -> Pfn {
        Pfn(self.0 + n)
    }

    /// Whether this frame number is a multiple of `1 << order` (a block of that order may
    /// start here).
    pub const fn is_aligned(self, order: u32) -> bool {
        order < 64 && self.0 & ((1u64 << order) - 1) == 0
    }
}

impl PhysAddr {
    /// The frame that holds this address.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }

    /// Whether the address is a multiple of `align` (`align` must be a power of two; an
    /// `align` of 0 counts as 1).
    pub const fn is_aligned(self, align: u64) -> bool {
        align <= 1 || self.0 & (align - 1) == 0
    }

    /// The address rounded down to a multiple of the power of two `align`.
    pub const fn align_down(self, align: u64) -> PhysAddr {
        if align <= 1 {
            self
        } else {
            PhysAddr(self.0 & !(align - 1))
        }
    }

    /// The address rounded up to a multiple of the power of two `align`, or `None` on
    /// overflow.
    pub const fn align_up(self, align: u64) -> Option<PhysAddr> {
        if align <= 1 {
            return Some(self);
        }
        match self.0.checked_add(align - 1) {
            Some(v) => Some(PhysAddr(v & !(align - 1))),
            None => None,
        }
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A half-open physical range `[start, end)`: the one range type of baton (mm, kho and the
/// board layer all use it). Ordered by start, then end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysRange {
    /// First byte of the range.
    pub start: PhysAddr,
    /// First byte after the range.
    pub end: PhysAddr,
}

impl PhysRange {
    /// The range of `size` bytes starting at `start` (saturating at the top of the address
    /// space).
    pub const fn new(start: PhysAddr, size: u64) -> Self {
        PhysRange {
            start,
            end: PhysAddr(start.0.saturating_add(size)),
        }
    }

    /// The range `[start, end)` given by its two ends.
    pub const fn from_bounds(start: u64, end: u64) -> Self {
        PhysRange {
            start: PhysAddr(start),
            end: PhysAddr(end),
        }
    }

    /// Size in bytes (0 for an empty or inverted range).
    pub const fn size(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }

    /// Whether `addr` lies inside the range.
    pub const fn contains(&self, addr: PhysAddr) -> bool {
        self.start.0 <= addr.0 && addr.0 < self.end.0
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }

    /// Whether `other` lies entirely inside this range.
    pub const fn contains_range(&self, other: &PhysRange) -> bool {
        self.start.0 <= other.start.0 && other.end.0 <= self.end.0
    }

    /// The bytes both ranges share (possibly empty).
    pub fn intersect(&self, other: &PhysRange) -> PhysRange {
        let start = if self.start.0 > other.start.0 {
            self.start
        } else {
            other.start
        };
        let end = if self.end.0 < other.end.0 {
            self.end
        } else {
            other.end
        };
        PhysRange { start, end }
    }

    /// The smallest range of whole frames covering this one (the start is rounded down and
    /// the end up, saturating at the last frame boundary of the address space).
    pub const fn outer_pages(&self) -> PhysRange {
        let end = match self.end.align_up(PAGE_SIZE) {
            Some(e) => e,
            None => PhysAddr(!(PAGE_SIZE - 1)),
        };
        PhysRange {
            start: self.start.align_down(PAGE_SIZE),
            end,
        }
    }

    /// The whole frames inside the range, as `[first, end)` frame numbers (the start is
    /// rounded up and the end down).
    pub fn inner_pfns(&self) -> (Pfn, Pfn) {
        let first = self
            .start
            .align_up(PAGE_SIZE)
            .map_or(u64::MAX >> PAGE_SHIFT, |a| a.0 >> PAGE_SHIFT);
        let end = self.end.0 >> PAGE_SHIFT;
        (Pfn(first), Pfn(end.max(first)))
    }

    /// Every frame that the range touches, as `[first, end)` frame numbers (the start is
    /// rounded down and the end up).
    pub fn outer_pfns(&self) -> (Pfn, Pfn) {
        let first = self.start.0 >> PAGE_SHIFT;
        let end = self
            .end
            .align_up(PAGE_SIZE)
            .map_or(1u64 << (64 - PAGE_SHIFT), |a| a.0 >> PAGE_SHIFT);
        (Pfn(first), Pfn(end.max(first)))
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}
