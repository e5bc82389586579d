//! The damage hook: what a test needs to corrupt a finalized handover on purpose (the soak's
//! `baton.damage=`) so that one named check of the next image fails, and only that one.
//!
//! Owns nothing: it reads the KHO FDT this image wrote (v2, or a v1 one in tests), tells
//! where a key sits in the tree, and re-seals the metadata checksum after a deliberate edit
//! (so the damage reaches the check it aims at instead of the checksum). Never used on a
//! handover that should survive.

use alloc::vec::Vec;
use core::fmt;

use mm::PAGE_SIZE;

use crate::fdt::{Fdt, FdtError};
use crate::format::{read_kho_fdt, FormatError, MetaCrc, PROP_CHECKSUM};
pub use crate::key::{encode_typed, RESERVED_KEY_BITS, TYPE_BIT};
use crate::outgoing::Handover;
use crate::phys::{read_bytes, read_u64, write_bytes, write_u64, PhysMem};

pub use crate::tree::{table_index, TABLE_LEVELS};

/// Why a handover could not be read, damaged or re-sealed: the one error of deliberate damage
/// (this module's helpers and the workload's `baton.damage=` kinds built on them). The
/// handover is then left as it was, or partly hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TamperError {
    /// A metadata address is not RAM.
    NotRam { phys: u64 },
    /// The KHO FDT does not parse.
    Fdt(FdtError),
    /// The KHO FDT is not baton's format.
    Format(FormatError),
    /// No page for a new tree node.
    NoPage,
    /// The main tree has no leaf to flip a bit in.
    EmptyTree,
    /// The scratch array fills its last page: no room for another area.
    NoRoom,
}

impl fmt::Display for TamperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TamperError::NotRam { phys } => write!(f, "{phys:#x} is not RAM"),
            TamperError::Fdt(e) => write!(f, "KHO FDT: {e}"),
            TamperError::Format(e) => write!(f, "KHO FDT format: {e:?}"),
            TamperError::NoPage => write!(f, "no page for a tree node"),
            TamperError::EmptyTree => write!(f, "main tree has no leaf"),
            TamperError::NoRoom => write!(f, "scratch array has no room for an area"),
        }
    }
}

/// Physical addresses of the radix-tree roots of a handover.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TreeRoots {
    /// The tree of every block (v2: the only one, typed keys).
    pub main: u64,
    /// v1 only: the SPLIT tree.
    pub split: Option<u64>,
}

fn fdt_bytes<M: PhysMem + ?Sized>(mem: &M, h: &Handover) -> Result<Vec<u8>, TamperError> {
    let at = h.kho_fdt.start.0;
    read_bytes(mem, at, h.kho_fdt.size() as usize).ok_or(TamperError::NotRam { phys: at })
}

/// The tree roots named by the handover's KHO FDT.
pub fn roots<M: PhysMem + ?Sized>(mem: &M, h: &Handover) -> Result<TreeRoots, TamperError> {
    let bytes = fdt_bytes(mem, h)?;
    let fdt = Fdt::parse(&bytes).map_err(TamperError::Fdt)?;
    let view = read_kho_fdt(&fdt).map_err(TamperError::Format)?;
    Ok(TreeRoots {
        main: view.main_root,
        split: view.split_root,
    })
}

/// Node pages of the tree at `root` in the ABI's checksum order (pre-order, index order).
fn tree_pages<M: PhysMem + ?Sized>(mem: &M, root: u64) -> Result<Vec<u64>, TamperError> {
    let mut pages = Vec::new();
    let mut stack = alloc::vec![(root, TABLE_LEVELS)];
    while let Some((node, level)) = stack.pop() {
        pages.push(node);
        if level == 0 {
            continue;
        }
        // Push children in reverse so that index 0 is visited first.
        for i in (0..PAGE_SIZE / 8).rev() {
            let at = node + 8 * i;
            let child = read_u64(mem, at).ok_or(TamperError::NotRam { phys: at })?;
            if child != 0 {
                stack.push((child, level - 1));
            }
        }
    }
    Ok(pages)
}

/// Recomputes the metadata checksum over the trees as they are now and stores it in the
/// KHO FDT in place (`docs/abi.md`, metadata checksum).
pub fn reseal<M: PhysMem + ?Sized>(mem: &M, h: &Handover) -> Result<(), TamperError> {
    let bytes = fdt_bytes(mem, h)?;
    let fdt = Fdt::parse(&bytes).map_err(TamperError::Fdt)?;
    let view = read_kho_fdt(&fdt).map_err(TamperError::Format)?;
    if !view.version.is_baton() {
        // Linux's kho-v4 has no checksum: nothing to re-seal.
        return Ok(());
    }
    let mut crc = MetaCrc::for_view(&view);
    for root in core::iter::once(view.main_root).chain(view.split_root) {
        for p in tree_pages(mem, root)? {
            if !crc.page(mem, p) {
                return Err(TamperError::NotRam { phys: p });
            }
        }
    }
    for c in &view.clients {
        crc.client(c);
    }
    let value = fdt
        .root()
        .prop(PROP_CHECKSUM)
        .ok_or(TamperError::Format(FormatError::BadCompatible))?;
    // The property value is a sub-slice of `bytes`: its offset is the distance between them.
    let off = value.as_ptr() as u64 - bytes.as_ptr() as u64;
    let at = h.kho_fdt.start.0 + off;
    if write_bytes(mem, at, &u64::from(crc.finish()).to_le_bytes()) {
        Ok(())
    } else {
        Err(TamperError::NotRam { phys: at })
    }
}

/// Sets `key` in the handover's tree (v2's only tree; v1's main tree) as a leaf bit, whatever
/// the key means, building missing nodes from `alloc_page` (zeroed here; page aligned,
/// outside scratch and the handover), then re-seals the checksum so that the key reaches
/// the key and block checks.
pub fn plant_key<M: PhysMem + ?Sized>(
    mem: &M,
    h: &Handover,
    key: u64,
    alloc_page: &mut dyn FnMut() -> Option<u64>,
) -> Result<(), TamperError> {
    let mut node = roots(mem, h)?.main;
    for level in (1..=TABLE_LEVELS).rev() {
        let slot = node + 8 * table_index(key, level) as u64;
        let mut next = read_u64(mem, slot).ok_or(TamperError::NotRam { phys: slot })?;
        if next == 0 {
            next = alloc_page().ok_or(TamperError::NoPage)?;
            if !write_bytes(mem, next, &[0u8; PAGE_SIZE as usize]) || !write_u64(mem, slot, next) {
                return Err(TamperError::NotRam { phys: next });
            }
        }
        node = next;
    }
    let bit = key & 0x7fff;
    let word = node + 8 * (bit / 64);
    let w = read_u64(mem, word).ok_or(TamperError::NotRam { phys: word })?;
    if !write_u64(mem, word, w | (1 << (bit % 64))) {
        return Err(TamperError::NotRam { phys: word });
    }
    reseal(mem, h)
}
