//! Boot-time region allocator (memblock-like).
//!
//! Keeps RAM ranges and reserved ranges in fixed-capacity sorted tables, so it works before
//! any heap exists. It hands out whole pages, top-down by default, and only from the
//! "alloc only in" regions when those are set (a next image allocates only from scratch
//! until handover data is reserved). It never touches memory: it only does arithmetic.

use core::fmt;

use crate::addr::{PhysAddr, PhysRange, PAGE_SIZE};
use crate::error::MmError;

/// Capacity of each memblock table (RAM ranges, reserved ranges, alloc-only regions).
pub(crate) const MEMBLOCK_CAP: usize = 128;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Region {
    start: u64,
    end: u64,
    noinit: bool,
}

const EMPTY: Region = Region {
    start: 0,
    end: 0,
    noinit: false,
};

/// A sorted table of disjoint regions; neighbours of the same kind that touch are merged.
#[derive(Clone)]
struct Table {
    regions: [Region; MEMBLOCK_CAP],
    len: usize,
}

impl Table {
    const fn new() -> Self {
        Table {
            regions: [EMPTY; MEMBLOCK_CAP],
            len: 0,
        }
    }

    fn as_slice(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    fn insert_at(&mut self, i: usize, r: Region) -> Result<(), MmError> {
        if self.len == MEMBLOCK_CAP {
            return Err(MmError::MemblockFull);
        }
        self.regions.copy_within(i..self.len, i + 1);
        self.regions[i] = r;
        self.len += 1;
        Ok(())
    }

    fn remove_at(&mut self, i: usize) {
        self.regions.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    /// Removes `[start, end)` from every region, splitting where needed.
    fn cut(&mut self, start: u64, end: u64) -> Result<(), MmError> {
        let mut i = 0;
        while i < self.len {
            let r = self.regions[i];
            if r.end <= start || r.start >= end {
                i += 1;
                continue;
            }
            let left = (r.start < start).then_some(Region {
                start: r.start,
                end: start,
                noinit: r.noinit,
            });
            let right = (r.end > end).then_some(Region {
                start: end,
                end: r.end,
                noinit: r.noinit,
            });
            match (left, right) {
                (None, None) => self.remove_at(i),
                (Some(l), None) => {
                    self.regions[i] = l;
                    i += 1;
                }
                (None, Some(rt)) => {
                    self.regions[i] = rt;
                    i += 1;
                }
                (Some(l), Some(rt)) => {
                    self.regions[i] = l;
                    self.insert_at(i + 1, rt)?;
                    i += 2;
                }
            }
        }
        Ok(())
    }

    /// Makes `[start, end)` one region of kind `noinit` ("paint" semantics: it overrides the
    /// kind of whatever it covers), merging with touching neighbours of the same kind.
    fn paint(&mut self, start: u64, end: u64, noinit: bool) -> Result<(), MmError> {
        self.cut(start, end)?;
        let i = self.as_slice().partition_point(|r| r.start < start);
        self.insert_at(i, Region { start, end, noinit })?;
        // Merge with the right neighbour, then the left one.
        if i + 1 < self.len
            && self.regions[i + 1].start == end
            && self.regions[i + 1].noinit == noinit
        {
            self.regions[i].end = self.regions[i + 1].end;
            self.remove_at(i + 1);
        }
        if i > 0 && self.regions[i - 1].end == start && self.regions[i - 1].noinit == noinit {
            self.regions[i - 1].end = self.regions[i].end;
            self.remove_at(i);
        }
        Ok(())
    }

    /// Runs `f` on a copy and keeps the result only if it succeeds, so a full table never
    /// leaves a half-applied change behind.
    fn transact(
        &mut self,
        f: impl FnOnce(&mut Table) -> Result<(), MmError>,
    ) -> Result<(), MmError> {
        let mut copy = self.clone();
        f(&mut copy)?;
        *self = copy;
        Ok(())
    }
}

/// The boot-time region allocator: RAM minus reserved ranges, with page granularity.
///
/// RAM ranges are trimmed inward to whole pages; reserved ranges are widened outward to
/// whole pages (a partly reserved page is reserved).
#[derive(Clone)]
pub struct Memblock {
    memory: Table,
    reserved: Table,
    only_in: Table,
    only_in_set: bool,
    bottom_up: bool,
}

impl Default for Memblock {
    fn default() -> Self {
        Self::new()
    }
}

fn checked(r: PhysRange) -> Result<(), MmError> {
    if r.start.0 >= r.end.0 {
        Err(MmError::InvalidRange {
            start: r.start,
            end: r.end,
        })
    } else {
        Ok(())
    }
}

fn outer(r: PhysRange) -> (u64, u64) {
    let (s, e) = r.outer_pfns();
    (s.0 * PAGE_SIZE, e.0.saturating_mul(PAGE_SIZE))
}

impl Memblock {
    /// An empty memblock: no RAM, nothing reserved, allocation top-down.
    pub const fn new() -> Self {
        Memblock {
            memory: Table::new(),
            reserved: Table::new(),
            only_in: Table::new(),
            only_in_set: false,
            bottom_up: false,
        }
    }

    /// Adds a RAM range (trimmed inward to whole pages; a range with no whole page is
    /// accepted and ignored). Overlapping or touching RAM ranges merge.
    pub fn add_memory(&mut self, r: PhysRange) -> Result<(), MmError> {
        checked(r)?;
        let (s, e) = r.inner_pfns();
        if s.0 >= e.0 {
            return Ok(());
        }
        let (start, end) = (s.0 * PAGE_SIZE, e.0 * PAGE_SIZE);
        self.memory.transact(|t| t.paint(start, end, false))
    }

    /// Reserves a range (image, FDT, `/memreserve/`, ...). Its frames become RESERVED in
    /// the `FrameAllocator`. Reserving part of a `reserve_noinit` range makes that part a
    /// plain reservation.
    pub fn reserve(&mut self, r: PhysRange) -> Result<(), MmError> {
        checked(r)?;
        let (start, end) = outer(r);
        self.reserved.transact(|t| t.paint(start, end, false))
    }

    /// Reserves a range whose descriptors another crate (kho) will set: the frames are
    /// RESERVED and carry `PageFlags::NOINIT` in the `FrameAllocator`, with every other
    /// descriptor field zero, until `claim_reserved` or `release_reserved`.
    pub fn reserve_noinit(&mut self, r: PhysRange) -> Result<(), MmError> {
        checked(r)?;
        let (start, end) = outer(r);
        self.reserved.transact(|t| t.paint(start, end, true))
    }

    /// Removes any reservation (plain or noinit) of the pages `r` touches.
    pub fn unreserve(&mut self, r: PhysRange) -> Result<(), MmError> {
        checked(r)?;
        let (start, end) = outer(r);
        self.reserved.transact(|t| t.cut(start, end))
    }

    /// From now on `alloc` only returns memory inside `regions` (e.g. the KHO scratch
    /// areas). An empty slice forbids every allocation.
    pub fn set_alloc_only_in(&mut self, regions: &[PhysRange]) -> Result<(), MmError> {
        let mut t = Table::new();
        for r in regions {
            checked(*r)?;
            let (s, e) = r.inner_pfns();
            if s.0 < e.0 {
                t.paint(s.0 * PAGE_SIZE, e.0 * PAGE_SIZE, false)?;
            }
        }
        self.only_in = t;
        self.only_in_set = true;
        Ok(())
    }

    /// Lifts the restriction of `set_alloc_only_in`.
    pub fn clear_alloc_only_in(&mut self) {
        self.only_in = Table::new();
        self.only_in_set = false;
    }

    /// Chooses where `alloc` searches first: the highest fitting address (default, like
    /// Linux's top-down memblock) or the lowest.
    pub fn set_bottom_up(&mut self, bottom_up: bool) {
        self.bottom_up = bottom_up;
    }

    /// Allocates `size` bytes (rounded up to whole pages, page aligned) from free RAM that
    /// no range of `avoid` (sorted by start, as a validated handover's preserved ranges are)
    /// overlaps, ignoring the alloc-only regions; the lowest such piece. The range becomes
    /// reserved. For the one case where a next image must allocate before its allocator
    /// knows what the previous image preserved, and scratch has no room.
    pub fn alloc_avoiding(
        &mut self,
        size: u64,
        avoid: impl Iterator<Item = PhysRange>,
    ) -> Result<PhysAddr, MmError> {
        let size = size.next_multiple_of(PAGE_SIZE).max(PAGE_SIZE);
        let mut avoid = avoid.peekable();
        let mut found = None;
        'ranges: for free in self.free_ranges() {
            let mut at = free.start.0.next_multiple_of(PAGE_SIZE);
            while at < free.end.0 {
                while avoid.peek().is_some_and(|p| p.end.0 <= at) {
                    avoid.next();
                }
                let next = avoid.peek().copied();
                let limit = next.map_or(free.end.0, |p| p.start.0.clamp(at, free.end.0));
                if limit - at >= size {
                    found = Some(at);
                    break 'ranges;
                }
                match next {
                    Some(p) if p.start.0 < free.end.0 => at = p.end.0.next_multiple_of(PAGE_SIZE),
                    _ => break,
                }
            }
        }
        let at = found.ok_or(MmError::NoRange {
            size,
            align: PAGE_SIZE,
        })?;
        self.reserve(PhysRange::new(PhysAddr(at), size))?;
        Ok(PhysAddr(at))
    }

    /// Allocates `size` bytes (rounded up to whole pages) aligned to `align` (a power of
    /// two; values under `PAGE_SIZE`, including 0, mean `PAGE_SIZE`), ending at or below
    /// `below` when given, inside the alloc-only regions when set. The range becomes
    /// reserved. Top-down unless `set_bottom_up(true)`.
    pub fn alloc(
        &mut self,
        size: u64,
        align: u64,
        below: Option<PhysAddr>,
    ) -> Result<PhysAddr, MmError> {
        if align != 0 && !align.is_power_of_two() {
            return Err(MmError::InvalidAlign { align });
        }
        let align = align.max(PAGE_SIZE);
        let size = match PhysAddr(size).align_up(PAGE_SIZE) {
            Some(s) if s.0 > 0 => s.0,
            _ => {
                return Err(MmError::InvalidRange {
                    start: PhysAddr(0),
                    end: PhysAddr(size),
                })
            }
        };
        let limit = below.map_or(u64::MAX, |b| b.0);
        let mut best: Option<u64> = None;
        let mut consider = |r: PhysRange| {
            let hi = r.end.0.min(limit);
            if hi <= r.start.0 || hi - r.start.0 < size {
                return;
            }
            let cand = if self.bottom_up {
                match r.start.align_up(align) {
                    Some(b) if b.0 <= hi - size => b.0,
                    _ => return,
                }
            } else {
                let top = PhysAddr(hi - size).align_down(align).0;
                if top < r.start.0 {
                    return;
                }
                top
            };
            best = Some(match best {
                None => cand,
                Some(b) if self.bottom_up => b.min(cand),
                Some(b) => b.max(cand),
            });
        };
        for f in self.free_ranges() {
            if self.only_in_set {
                for a in self.only_in.as_slice() {
                    let i = f.intersect(&PhysRange::from_bounds(a.start, a.end));
                    if !i.is_empty() {
                        consider(i);
                    }
                }
            } else {
                consider(f);
            }
        }
        let base = best.ok_or(MmError::NoRange { size, align })?;
        self.reserved
            .transact(|t| t.paint(base, base + size, false))?;
        Ok(PhysAddr(base))
    }

    /// The RAM ranges, ascending, merged.
    pub fn memory(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.memory
            .as_slice()
            .iter()
            .map(|r| PhysRange::from_bounds(r.start, r.end))
    }

    /// Every reserved range (plain and noinit), ascending. Touching ranges of different
    /// kinds are listed separately.
    pub fn reserved(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.reserved
            .as_slice()
            .iter()
            .map(|r| PhysRange::from_bounds(r.start, r.end))
    }

    /// The ranges reserved with `reserve_noinit`, ascending.
    pub fn reserved_noinit(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.reserved
            .as_slice()
            .iter()
            .filter(|r| r.noinit)
            .map(|r| PhysRange::from_bounds(r.start, r.end))
    }

    /// RAM minus reserved ranges, ascending: what the buddy allocator will get.
    pub fn free_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        FreeRanges {
            mem: self.memory.as_slice(),
            res: self.reserved.as_slice(),
            mi: 0,
            ri: 0,
            cursor: None,
        }
    }

    /// Total bytes of RAM.
    pub fn memory_size(&self) -> u64 {
        self.memory().map(|r| r.size()).sum()
    }
}

impl fmt::Debug for Memblock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memblock")
            .field("memory", &self.memory.as_slice())
            .field("reserved", &self.reserved.as_slice())
            .field("only_in", &(self.only_in_set, self.only_in.as_slice()))
            .finish()
    }
}

/// Iterator over RAM minus reserved: walks both sorted tables once.
struct FreeRanges<'a> {
    mem: &'a [Region],
    res: &'a [Region],
    mi: usize,
    ri: usize,
    cursor: Option<u64>,
}

impl Iterator for FreeRanges<'_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        loop {
            let m = *self.mem.get(self.mi)?;
            let c = self.cursor.unwrap_or(m.start).max(m.start);
            if c >= m.end {
                self.mi += 1;
                self.cursor = None;
                continue;
            }
            // Skip reservations that end before the cursor.
            while self.ri < self.res.len() && self.res[self.ri].end <= c {
                self.ri += 1;
            }
            match self.res.get(self.ri) {
                Some(r) if r.start <= c => {
                    self.cursor = Some(r.end);
                }
                Some(r) if r.start < m.end => {
                    self.cursor = Some(r.end);
                    return Some(PhysRange::from_bounds(c, r.start));
                }
                _ => {
                    self.mi += 1;
                    self.cursor = None;
                    return Some(PhysRange::from_bounds(c, m.end));
                }
            }
        }
    }
}
