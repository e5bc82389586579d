//! Test-only damage to a finalized handover, so the next image must reject it and boot cold.
//!
//! Owns the six damage kinds of `baton.damage=` and how each one corrupts the data described
//! in `docs/abi.md` (KHO FDT, the tree, scratch array), through `kho::tamper`. Runs after `Kho::finalize`, just before
//! the jump; writes only handover metadata pages (and new pages it is given), never a block.

use core::fmt;

// Failures are kho's `TamperError`: the same checks (not RAM, FDT, format, no page) and the
// two only damage meets (an empty tree, a full scratch array).
use kho::tamper::{self, TamperError, TABLE_LEVELS};
use kho::{Handover, PhysMem};
use mm::PhysRange;

const PAGE: u64 = 4096;
/// A page-aligned address no supported board has RAM at (below the 48-bit limit).
pub const WILD_ADDRESS: u64 = 0x0000_7fff_dead_0000;
/// The key `bad-order` plants: its order marker sits at bit 21, i.e. order 31 (> 30).
pub const BAD_ORDER_KEY: u64 = 1 << 21;
/// The key `bad-type` plants: SPLIT, order 0 at 0, plus bit 55, a type bit no format has
/// (docs/abi.md §3.1: bits 53..58 are never set).
pub const BAD_TYPE_KEY: u64 = (1 << tamper::TYPE_BIT) | (1 << 55) | (1 << 52);

/// How to damage the handover (`baton.damage=<name>`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// Flip one bit in a leaf of the main tree: only the metadata checksum can catch it.
    LeafBitflip,
    /// Point an unused root-table entry at an address that is not RAM.
    WildPointer,
    /// Add a key of order 31 to the tree (with a correct checksum).
    BadOrder,
    /// Add a key with an unknown type bit (55) to the tree (with a correct checksum).
    BadType,
    /// Advertise only half of the KHO FDT in `/chosen`.
    TruncateFdt,
    /// Add a scratch area that covers the main tree's root table.
    ScratchOverlap,
}

impl DamageKind {
    /// Every kind.
    pub const ALL: [DamageKind; 6] = [
        DamageKind::LeafBitflip,
        DamageKind::WildPointer,
        DamageKind::BadOrder,
        DamageKind::BadType,
        DamageKind::TruncateFdt,
        DamageKind::ScratchOverlap,
    ];

    /// The `baton.damage=` name.
    pub const fn name(self) -> &'static str {
        match self {
            DamageKind::LeafBitflip => "leaf-bitflip",
            DamageKind::WildPointer => "wild-pointer",
            DamageKind::BadOrder => "bad-order",
            DamageKind::BadType => "bad-type",
            DamageKind::TruncateFdt => "truncate-fdt",
            DamageKind::ScratchOverlap => "scratch-overlap",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn read_u64<M: PhysMem + ?Sized>(mem: &M, phys: u64) -> Result<u64, TamperError> {
    kho::read_u64(mem, phys).ok_or(TamperError::NotRam { phys })
}

fn write_u64<M: PhysMem + ?Sized>(mem: &M, phys: u64, v: u64) -> Result<(), TamperError> {
    if kho::write_u64(mem, phys, v) {
        Ok(())
    } else {
        Err(TamperError::NotRam { phys })
    }
}

/// Damages the finalized handover `h` as `kind` says and returns what `/chosen` must name
/// (changed for `truncate-fdt` and `scratch-overlap`). `alloc_page` gives a page-aligned
/// page outside scratch (needed by `bad-order` and `bad-type` for the new tree path).
pub fn inject<M: PhysMem + ?Sized>(
    kind: DamageKind,
    mem: &M,
    h: &Handover,
    alloc_page: &mut dyn FnMut() -> Option<u64>,
) -> Result<Handover, TamperError> {
    let root = tamper::roots(mem, h)?.main;
    match kind {
        DamageKind::LeafBitflip => {
            // Walk down the first populated entries to a leaf; flip a bit in its first word.
            let mut node = root;
            for _ in 0..TABLE_LEVELS {
                let mut next = None;
                for i in 0..PAGE / 8 {
                    let child = read_u64(mem, node + 8 * i)?;
                    if child != 0 {
                        next = Some(child);
                        break;
                    }
                }
                node = next.ok_or(TamperError::EmptyTree)?;
            }
            let w = read_u64(mem, node)?;
            write_u64(mem, node, w ^ (1 << 37))?;
            Ok(*h)
        }
        DamageKind::WildPointer => {
            // Entry 511 of the root is never used by a well-formed key.
            write_u64(mem, root + 8 * 511, WILD_ADDRESS)?;
            Ok(*h)
        }
        DamageKind::BadOrder => {
            tamper::plant_key(mem, h, BAD_ORDER_KEY, alloc_page)?;
            Ok(*h)
        }
        DamageKind::BadType => {
            tamper::plant_key(mem, h, BAD_TYPE_KEY, alloc_page)?;
            Ok(*h)
        }
        DamageKind::TruncateFdt => {
            let half = (h.kho_fdt.size() / 2).max(1);
            Ok(Handover {
                kho_fdt: PhysRange::new(h.kho_fdt.start, half),
                ..*h
            })
        }
        DamageKind::ScratchOverlap => {
            let a = h.scratch_array;
            if a.end.0.is_multiple_of(PAGE) {
                return Err(TamperError::NoRoom);
            }
            write_u64(mem, a.end.0, root)?;
            write_u64(mem, a.end.0 + 8, PAGE)?;
            Ok(Handover {
                scratch_array: PhysRange::new(a.start, a.size() + 16),
                ..*h
            })
        }
    }
}
