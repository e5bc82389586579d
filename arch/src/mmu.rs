//! Identity-map page tables (VA = PA, 4 KiB granule, 48-bit VA, four levels) and MMU enable.
//!
//! The builder is target-free: it writes descriptors into tables handed out by a
//! [`TableAlloc`], so the host tests it against an arena. It never maps a range twice and
//! never replaces a block with a table; callers give it disjoint ranges. `enable` (target
//! only) programs MAIR/TCR/TTBR0, invalidates the TLB and turns on the MMU and caches.

/// Memory type of a mapping; the value is the MAIR_EL1 attribute index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MemAttr {
    /// Device-nGnRE: MMIO. Never executable.
    Device = 0,
    /// Normal, inner/outer write-back, read/write-allocate, inner shareable: RAM.
    Normal = 1,
}

use crate::regs::bits;
use aarch64_cpu::registers::{MAIR_EL1, SCTLR_EL1};
use tock_registers::register_bitfields;

/// MAIR_EL1: attr0 = Device-nGnRE, attr1 = Normal write-back non-transient read/write-allocate
/// (inner and outer), attr2 = Normal non-cacheable (spare).
pub const MAIR_VALUE: u64 = bits(&[
    MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck,
    MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc,
    MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    MAIR_EL1::Attr2_Normal_Outer::NonCacheable,
    MAIR_EL1::Attr2_Normal_Inner::NonCacheable,
]);

/// SCTLR_EL1 once the identity map is live: MMU, D- and I-cache on, SP alignment checks on,
/// data alignment checks off, W^X off, little-endian, EL0 cache maintenance, WFE/WFI, CTR
/// and DC ZVA not trapped, EL0 DAIF access trapped; the Armv8.0 RES1 bits set. Written once.
pub const SCTLR_EL1_MMU_ON: u64 = bits(&[
    SCTLR_EL1::M::Enable,
    SCTLR_EL1::A::Disable,
    SCTLR_EL1::C::Cacheable,
    SCTLR_EL1::SA::Enable,
    SCTLR_EL1::SA0::Enable,
    SCTLR_EL1::NAA::Disable,
    SCTLR_EL1::UMA::Trap,
    SCTLR_EL1::I::Cacheable,
    SCTLR_EL1::DZE::DontTrap,
    SCTLR_EL1::UCT::DontTrap,
    SCTLR_EL1::NTWI::DontTrap,
    SCTLR_EL1::NTWE::DontTrap,
    SCTLR_EL1::WXN::Disable,
    SCTLR_EL1::E0E::LittleEndian,
    SCTLR_EL1::EE::LittleEndian,
    SCTLR_EL1::UCI::DontTrap,
]) | crate::entry::SCTLR_EL1_RES1_BITS;

register_bitfields! {u64,
    /// A VMSAv8-64 stage 1 descriptor, 4 KiB granule: table (levels 0-2), block (levels 1-2)
    /// or page (level 3). Only the fields the identity map uses.
    STAGE1_DESCRIPTOR [
        /// UXN (bit 54): not executable at EL0.
        UXN OFFSET(54) NUMBITS(1) [],
        /// PXN (bit 53): not executable at EL1.
        PXN OFFSET(53) NUMBITS(1) [],
        /// Output address, or next-level table address (bits 47:12).
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        /// AF (bit 10): access flag; set up front so no access-flag fault is taken.
        AF OFFSET(10) NUMBITS(1) [],
        /// SH (bits 9:8): shareability of Normal memory.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// AttrIndx (bits 4:2): which MAIR_EL1 attribute applies (see [`MemAttr`]).
        ATTR_INDX OFFSET(2) NUMBITS(3) [],
        /// Bit 1: next-level table (levels 0-2) or page (level 3); 0 is a block.
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        /// Bit 0: the descriptor is valid.
        VALID OFFSET(0) NUMBITS(1) []
    ]
}

use STAGE1_DESCRIPTOR as DESC;
/// The output-address bits of a descriptor (47:12).
const ADDR_MASK: u64 = DESC::OUTPUT_ADDR.mask << DESC::OUTPUT_ADDR.shift;
const ENTRIES: usize = 512;
/// Highest address + 1 the 48-bit identity map can hold.
pub const VA_LIMIT: u64 = 1 << 48;

/// Why a mapping could not be made.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table allocator ran out of pages.
    OutOfTables,
    /// `[start, end)` is not 4 KiB aligned or is empty.
    Misaligned { start: u64, end: u64 },
    /// The range reaches beyond the 48-bit address space.
    BeyondVaLimit { end: u64 },
    /// `addr` is already mapped (ranges passed to the builder must be disjoint).
    AlreadyMapped { addr: u64 },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfTables => write!(f, "page-table allocator is out of pages"),
            Self::Misaligned { start, end } => {
                write!(
                    f,
                    "range {start:#x}..{end:#x} is empty or not 4 KiB aligned"
                )
            }
            Self::BeyondVaLimit { end } => write!(f, "range end {end:#x} is beyond 48-bit VA"),
            Self::AlreadyMapped { addr } => write!(f, "{addr:#x} is already mapped"),
        }
    }
}

/// Source of zeroed, page-aligned table pages.
pub trait TableAlloc {
    /// A zeroed 4 KiB page; returns its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// The table at physical address `pa` (one this allocator handed out).
    fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES];
}

/// Builds one identity map.
pub struct PageTableBuilder {
    root: u64,
    tables: usize,
}

fn level_shift(level: u32) -> u32 {
    12 + 9 * (3 - level)
}

impl PageTableBuilder {
    /// A builder with an empty root (level 0) table.
    pub fn new<A: TableAlloc>(alloc: &mut A) -> Result<Self, MapError> {
        let root = alloc.alloc_table().ok_or(MapError::OutOfTables)?;
        Ok(Self { root, tables: 1 })
    }

    /// Physical address of the root table (TTBR0_EL1).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Number of table pages used so far.
    pub fn tables_used(&self) -> usize {
        self.tables
    }

    /// Maps `[start, end)` to itself with `attr`, using 1 GiB and 2 MiB blocks where the
    /// alignment allows and 4 KiB pages elsewhere.
    pub fn map<A: TableAlloc>(
        &mut self,
        alloc: &mut A,
        start: u64,
        end: u64,
        attr: MemAttr,
    ) -> Result<(), MapError> {
        if start >= end || !start.is_multiple_of(4096) || !end.is_multiple_of(4096) {
            return Err(MapError::Misaligned { start, end });
        }
        if end > VA_LIMIT {
            return Err(MapError::BeyondVaLimit { end });
        }
        self.map_level(alloc, self.root, 0, start, end, attr)
    }

    fn map_level<A: TableAlloc>(
        &mut self,
        alloc: &mut A,
        table: u64,
        level: u32,
        start: u64,
        end: u64,
        attr: MemAttr,
    ) -> Result<(), MapError> {
        let shift = level_shift(level);
        let size = 1u64 << shift;
        let mut va = start;
        while va < end {
            let idx = ((va >> shift) & 0x1ff) as usize;
            if level >= 1 && va.is_multiple_of(size) {
                // A run of whole blocks (pages at level 3) in this one table (the parent
                // bounded [start, end) to it): one loop over the entries, the descriptor's
                // fields computed once; the same checks as one entry at a time below.
                let whole = ((end - va) >> shift).min((ENTRIES - idx) as u64) as usize;
                if whole > 0 {
                    let fields = leaf_descriptor(0, level, attr);
                    let t = alloc.table(table);
                    for (i, e) in t[idx..idx + whole].iter_mut().enumerate() {
                        let pa = va + ((i as u64) << shift);
                        if *e != 0 {
                            return Err(MapError::AlreadyMapped { addr: pa });
                        }
                        *e = pa | fields;
                    }
                    va += (whole as u64) << shift;
                    continue;
                }
            }
            let chunk_end = core::cmp::min(end, (va & !(size - 1)) + size);
            let entry = alloc.table(table)[idx];
            let whole = va.is_multiple_of(size) && chunk_end - va == size;
            if level >= 1 && whole {
                if entry != 0 {
                    return Err(MapError::AlreadyMapped { addr: va });
                }
                alloc.table(table)[idx] = leaf_descriptor(va, level, attr);
            } else {
                let next = if entry == 0 {
                    let t = alloc.alloc_table().ok_or(MapError::OutOfTables)?;
                    self.tables += 1;
                    alloc.table(table)[idx] = table_descriptor(t);
                    t
                } else if DESC::TYPE.is_set(entry) && level < 3 {
                    entry & ADDR_MASK
                } else {
                    return Err(MapError::AlreadyMapped { addr: va });
                };
                self.map_level(alloc, next, level + 1, va, chunk_end, attr)?;
            }
            va = chunk_end;
        }
        Ok(())
    }

    /// Walks the tables for `va`: the output address and attribute, or `None` if unmapped.
    pub fn translate<A: TableAlloc>(&self, alloc: &mut A, va: u64) -> Option<(u64, MemAttr)> {
        let mut table = self.root;
        for level in 0..4 {
            let shift = level_shift(level);
            let entry = alloc.table(table)[((va >> shift) & 0x1ff) as usize];
            if !DESC::VALID.is_set(entry) {
                return None;
            }
            let is_table = DESC::TYPE.is_set(entry) && level < 3;
            if !is_table {
                let base = entry & ADDR_MASK & !((1u64 << shift) - 1);
                let attr = if DESC::ATTR_INDX.read(entry) == MemAttr::Device as u64 {
                    MemAttr::Device
                } else {
                    MemAttr::Normal
                };
                return Some((base | (va & ((1u64 << shift) - 1)), attr));
            }
            table = entry & ADDR_MASK;
        }
        None
    }
}

/// A table descriptor pointing at the next-level table at `pa`.
fn table_descriptor(pa: u64) -> u64 {
    pa | (DESC::VALID::SET + DESC::TYPE::TableOrPage).value
}

/// A block (levels 1-2) or page (level 3) descriptor mapping `pa` with `attr`: RAM is inner
/// shareable and executable at EL1 only; devices are never executable.
fn leaf_descriptor(pa: u64, level: u32, attr: MemAttr) -> u64 {
    let kind = if level == 3 {
        DESC::TYPE::TableOrPage
    } else {
        DESC::TYPE::Block
    };
    let common = DESC::VALID::SET + kind + DESC::AF::SET + DESC::ATTR_INDX.val(attr as u64);
    let fields = match attr {
        MemAttr::Normal => common + DESC::SH::InnerShareable + DESC::UXN::SET,
        MemAttr::Device => common + DESC::PXN::SET + DESC::UXN::SET,
    };
    pa | fields.value
}

/// Turns the MMU on at EL1 with the identity map rooted at `root`, D- and I-caches on.
///
/// # Safety
/// The tables must map all code, stacks and data in use (identity), must be in memory (not
/// only in a cache), and nothing may rely on the MMU being off afterwards.
#[cfg(target_arch = "aarch64")]
pub unsafe fn enable(root: u64) {
    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{Readable, Writeable, ID_AA64MMFR0_EL1, TCR_EL1, TTBR0_EL1};
    MAIR_EL1.set(MAIR_VALUE);
    // Physical address size: what the CPU supports, capped at 48 bits (our VA size).
    let ips = core::cmp::min(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange), 0b101);
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(16)
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::IPS.val(ips),
    );
    TTBR0_EL1.set_baddr(root);
    // Invalidate every stale EL1 translation and the I-cache before the MMU sees the tables.
    // SAFETY: TLB/I-cache invalidation only forces refetches.
    unsafe {
        core::arch::asm!(
            "dsb ish",
            "tlbi vmalle1",
            "ic iallu",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
    // One write with every field chosen (the RES1 bits included).
    SCTLR_EL1.set(SCTLR_EL1_MMU_ON);
    barrier::isb(barrier::SY);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MAIR, SCTLR and every descriptor kind are bit for bit what the raw constants gave.
    #[test]
    fn named_register_values_are_the_old_literals() {
        assert_eq!(MAIR_VALUE, 0x04 | (0xff << 8) | (0x44 << 16));
        // The two writes of the old `enable`: M, C, SA, SA0, I, DZE, UCT, nTWI, nTWE and
        // UCI (0x0405_d01d), then the RES1 bits or-ed in (0x30d0_0800).
        assert_eq!(SCTLR_EL1_MMU_ON, 0x0405_d01d | 0x30d0_0800);
        assert_eq!(ADDR_MASK, 0x0000_ffff_ffff_f000);
        assert_eq!(table_descriptor(0x4000_1000), 0x4000_1000 | 0b11);
        let normal = (1 << 10) | (1 << 2) | (0b11 << 8) | (1 << 54);
        let device = (1 << 10) | (1 << 53) | (1 << 54);
        assert_eq!(
            leaf_descriptor(0x4000_0000, 1, MemAttr::Normal),
            0x4000_0000 | 1 | normal
        );
        assert_eq!(
            leaf_descriptor(0x4020_0000, 2, MemAttr::Normal),
            0x4020_0000 | 1 | normal
        );
        assert_eq!(
            leaf_descriptor(0x0900_0000, 3, MemAttr::Device),
            0x0900_0000 | 0b11 | device
        );
        assert_eq!(
            leaf_descriptor(0x4030_0000, 3, MemAttr::Normal),
            0x4030_0000 | 0b11 | normal
        );
    }

    /// Tables in a Vec; "physical" addresses start at 0x1000_0000.
    struct Arena(Vec<[u64; ENTRIES]>);
    const ARENA_BASE: u64 = 0x1000_0000;
    impl TableAlloc for Arena {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.0.len() >= 64 {
                return None;
            }
            self.0.push([0; ENTRIES]);
            Some(ARENA_BASE + 4096 * (self.0.len() as u64 - 1))
        }
        fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
            &mut self.0[((pa - ARENA_BASE) / 4096) as usize]
        }
    }

    #[test]
    fn ram_gets_blocks_and_device_gets_pages() {
        let mut a = Arena(Vec::new());
        let mut b = PageTableBuilder::new(&mut a).unwrap();
        b.map(&mut a, 0x4000_0000, 0x8000_0000, MemAttr::Normal)
            .unwrap();
        b.map(&mut a, 0x0900_0000, 0x0900_1000, MemAttr::Device)
            .unwrap();
        // L0 + L1 (RAM is one 1 GiB block) + L2 + L3 for the UART page.
        assert_eq!(b.tables_used(), 4);
        assert_eq!(
            b.translate(&mut a, 0x4123_4567),
            Some((0x4123_4567, MemAttr::Normal))
        );
        assert_eq!(
            b.translate(&mut a, 0x0900_0018),
            Some((0x0900_0018, MemAttr::Device))
        );
        assert_eq!(b.translate(&mut a, 0x0900_1000), None);
        assert_eq!(b.translate(&mut a, 0x8000_0000), None);
    }

    #[test]
    fn a_hole_for_the_stack_guard_stays_unmapped() {
        let mut a = Arena(Vec::new());
        let mut b = PageTableBuilder::new(&mut a).unwrap();
        b.map(&mut a, 0x4020_0000, 0x4030_0000, MemAttr::Normal)
            .unwrap();
        b.map(&mut a, 0x4030_1000, 0x4800_0000, MemAttr::Normal)
            .unwrap();
        assert_eq!(b.translate(&mut a, 0x4030_0ff8), None);
        assert_eq!(
            b.translate(&mut a, 0x402f_fff8),
            Some((0x402f_fff8, MemAttr::Normal))
        );
        assert_eq!(
            b.translate(&mut a, 0x47ff_fff8),
            Some((0x47ff_fff8, MemAttr::Normal))
        );
    }

    #[test]
    fn mapping_twice_is_refused() {
        let mut a = Arena(Vec::new());
        let mut b = PageTableBuilder::new(&mut a).unwrap();
        b.map(&mut a, 0x4000_0000, 0x4020_0000, MemAttr::Normal)
            .unwrap();
        assert_eq!(
            b.map(&mut a, 0x4010_0000, 0x4010_1000, MemAttr::Device),
            Err(MapError::AlreadyMapped { addr: 0x4010_0000 })
        );
        assert_eq!(
            b.map(&mut a, 0x10, 0x1000, MemAttr::Device),
            Err(MapError::Misaligned {
                start: 0x10,
                end: 0x1000
            })
        );
    }
}
