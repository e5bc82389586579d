//! `BootInfo`: the result of the one FDT walk, and the small fixed-capacity types it uses.
//! Ranges are `mm::PhysRange`, the one range type.
//!
//! Plain data, no heap (it is built before the heap exists). Strings borrow from the FDT,
//! which stays reserved in memory for the image's whole life.

use arch::PsciMethod;
use baton_fdt::ChosenHandover;
use mm::PhysRange;

use crate::boards::{
    BoardKind, BoardSource, RPI4, RPI4_DEFAULT_RAM, RPI4_PERIPHERALS, RPI4_SPIN_TABLE_PAGE,
    RPI4_UART0,
};

/// Shows a range the way the boot log does: `[first-last]`, both inclusive, at least nine
/// hex digits (the QEMU tests match these lines).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LogRange(pub PhysRange);

impl core::fmt::Display for LogRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "[{:#011x}-{:#011x}]",
            self.0.start.0,
            self.0.end.0.wrapping_sub(1)
        )
    }
}

/// A list of at most `N` ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeList<const N: usize> {
    items: [PhysRange; N],
    len: usize,
}

/// The list is full.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ListFull;

impl<const N: usize> RangeList<N> {
    pub const fn new() -> Self {
        Self {
            items: [PhysRange::from_bounds(0, 0); N],
            len: 0,
        }
    }

    pub fn push(&mut self, r: PhysRange) -> Result<(), ListFull> {
        let slot = self.items.get_mut(self.len).ok_or(ListFull)?;
        *slot = r;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[PhysRange] {
        &self.items[..self.len]
    }

    pub fn iter(&self) -> core::slice::Iter<'_, PhysRange> {
        self.as_slice().iter()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of all sizes.
    pub fn total(&self) -> u64 {
        self.iter().map(|r| r.size()).sum()
    }

    /// Sorts by start and merges overlapping or touching ranges.
    pub fn sort_and_merge(&mut self) {
        let s = &mut self.items[..self.len];
        s.sort_unstable();
        let mut out = 0;
        for i in 0..self.len {
            let r = self.items[i];
            if out > 0 && r.start <= self.items[out - 1].end {
                let prev = &mut self.items[out - 1];
                prev.end = prev.end.max(r.end);
            } else {
                self.items[out] = r;
                out += 1;
            }
        }
        self.len = out;
    }
}

impl<const N: usize> Default for RangeList<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The console UART.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConsoleInfo {
    /// CPU physical address of the PL011 (after `ranges` translation).
    pub base: u64,
    /// UART reference clock; `None` means "leave the firmware's setup alone".
    pub clock_hz: Option<u32>,
}

/// The generic timer as the FDT describes it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerInfo {
    /// `clock-frequency` if the FDT overrides CNTFRQ_EL0 (broken firmware only).
    pub clock_frequency: Option<u32>,
}

/// What is wrong with a range the firmware gave.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RangeIssue {
    /// `start + size` wraps past 2^64.
    Wraps,
    /// It reaches at or above the first address this CPU and identity map cannot reach.
    AboveLimit { limit: u64 },
}

/// A firmware range baton clipped or refused, for the boot log (the boot goes on with
/// what was valid).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RangeWarning<'a> {
    /// The node (or `/memreserve/`) it came from.
    pub node: &'a str,
    pub start: u64,
    pub size: u64,
    pub issue: RangeIssue,
    /// What was kept; `None`: refused whole.
    pub kept: Option<PhysRange>,
}

impl core::fmt::Display for RangeWarning<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "firmware range {} [{:#x} size {:#x}] ",
            self.node, self.start, self.size
        )?;
        match self.issue {
            RangeIssue::Wraps => write!(f, "wraps past 2^64")?,
            RangeIssue::AboveLimit { limit } => {
                write!(f, "reaches above the addressable limit {limit:#x}")?
            }
        }
        match self.kept {
            Some(k) => write!(f, ": clipped to {}", LogRange(k)),
            None => write!(f, ": refused"),
        }
    }
}

/// Most range warnings kept (later ones are counted).
pub const MAX_RANGE_WARNINGS: usize = 8;

/// Capacity of the memory list.
pub const MAX_MEMORY: usize = 32;
/// Capacity of each reserved list.
pub const MAX_RESERVED: usize = 32;
/// Capacity of the device list (page-rounded MMIO windows for the MMU).
pub const MAX_DEVICES: usize = 160;

/// Everything the image learns from the FDT (or the default board), gathered in one walk.
#[derive(Clone, Debug)]
pub struct BootInfo<'a> {
    pub board: BoardKind,
    pub board_source: BoardSource,
    /// The root `model`, or the board's name.
    pub model: &'a str,
    /// Where the FDT is (address, totalsize); `None` on the default board.
    pub fdt: Option<PhysRange>,
    /// RAM ranges (`/memory*` `reg`, zero-sized entries dropped), sorted and merged.
    pub memory: RangeList<MAX_MEMORY>,
    /// `/memreserve/` entries.
    pub memreserve: RangeList<MAX_RESERVED>,
    /// `/reserved-memory` children with a `reg`.
    pub reserved_memory: RangeList<MAX_RESERVED>,
    /// MMIO ranges (every translatable `reg` outside memory), page-rounded, merged.
    pub devices: RangeList<MAX_DEVICES>,
    /// `/chosen/bootargs` up to its first NUL, any bytes (`cmdline::parse` reads it).
    pub bootargs: &'a [u8],
    pub stdout_path: &'a str,
    /// `linux,initrd-start` .. `linux,initrd-end`.
    pub initrd: Option<PhysRange>,
    pub console: Option<ConsoleInfo>,
    pub psci: Option<PsciMethod>,
    pub timer: Option<TimerInfo>,
    /// `/chosen` handover properties, raw: kho decodes them (`kho::bootfdt::decode_handover`,
    /// the one decoder, with kho's named errors); the board layer never interprets them.
    pub handover: ChosenHandover<'a>,
    /// Firmware ranges clipped or refused (the first [`MAX_RANGE_WARNINGS`]).
    pub range_warnings: [Option<RangeWarning<'a>>; MAX_RANGE_WARNINGS],
    /// Range warnings beyond those kept.
    pub range_warnings_dropped: usize,
}

impl<'a> BootInfo<'a> {
    /// An empty BootInfo for `board`.
    pub fn empty(board: BoardKind, source: BoardSource) -> Self {
        Self {
            board,
            board_source: source,
            model: board.name(),
            fdt: None,
            memory: RangeList::new(),
            memreserve: RangeList::new(),
            reserved_memory: RangeList::new(),
            devices: RangeList::new(),
            bootargs: &[],
            stdout_path: "",
            initrd: None,
            console: None,
            psci: None,
            timer: None,
            handover: ChosenHandover::default(),
            range_warnings: [None; MAX_RANGE_WARNINGS],
            range_warnings_dropped: 0,
        }
    }

    /// Records a range warning (counted if the list is full).
    pub fn warn_range(&mut self, w: RangeWarning<'a>) {
        match self.range_warnings.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(w),
            None => self.range_warnings_dropped += 1,
        }
    }

    /// The range warnings kept.
    pub fn range_warnings(&self) -> impl Iterator<Item = &RangeWarning<'a>> {
        self.range_warnings.iter().flatten()
    }
}

/// The default board when x0 holds no FDT: a Raspberry Pi 4 (the only loader baton meets
/// that passes no FDT is the Pi firmware / QEMU `-M raspi4b` without `-dtb`).
pub fn default_board_info() -> BootInfo<'static> {
    let mut info = BootInfo::empty(BoardKind::Rpi4, BoardSource::DefaultNoFdt);
    info.model = "Raspberry Pi 4 (default board, no FDT)";
    // Capacity is at least 1 everywhere; these pushes cannot fail.
    let _ = info.memory.push(RPI4_DEFAULT_RAM);
    let _ = info.memreserve.push(RPI4_SPIN_TABLE_PAGE);
    let _ = info.devices.push(RPI4_PERIPHERALS);
    info.console = Some(ConsoleInfo {
        base: RPI4_UART0,
        clock_hz: RPI4.uart_clock_hz,
    });
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm::PhysAddr;

    #[test]
    fn merge_joins_touching_and_overlapping_regions() {
        let mut l: RangeList<8> = RangeList::new();
        for r in [
            (0x3000, 0x1000),
            (0x1000, 0x1000),
            (0x2000, 0x1000),
            (0x1800, 0x10),
            (0x8000, 0x10),
        ] {
            l.push(PhysRange::new(PhysAddr(r.0), r.1)).unwrap();
        }
        l.sort_and_merge();
        assert_eq!(
            l.as_slice(),
            &[
                PhysRange::new(PhysAddr(0x1000), 0x3000),
                PhysRange::new(PhysAddr(0x8000), 0x10)
            ]
        );
    }

    #[test]
    fn a_full_list_refuses_more() {
        let mut l: RangeList<1> = RangeList::new();
        l.push(PhysRange::new(PhysAddr(0), 1)).unwrap();
        assert_eq!(l.push(PhysRange::new(PhysAddr(1), 1)), Err(ListFull));
    }

    #[test]
    fn default_board_reserves_the_spin_table_page() {
        let info = default_board_info();
        assert_eq!(
            info.memreserve.as_slice(),
            &[PhysRange::new(PhysAddr(0), 0x1000)]
        );
        assert_eq!(info.console.map(|c| c.base), Some(0xfe20_1000));
        assert_eq!(info.board, BoardKind::Rpi4);
    }
}
