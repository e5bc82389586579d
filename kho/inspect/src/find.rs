//! Finding the boot FDT in a dump: at `--fdt ADDR`, or by scanning every page-aligned
//! address for an FDT header whose `/chosen` names a handover.
//!
//! Owns only locating and copying the blob; parsing is kho's strict reader (`kho::Fdt`),
//! the handover properties are decoded later by `kho::bootfdt::decode_handover`.

use kho::Fdt;
use mm::PAGE_SIZE;

use crate::{Dump, InspectError};

/// FDT header magic, big-endian.
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Largest boot FDT the scan copies (QEMU virt makes 1 MiB, the Pi's is ~60 KiB).
const MAX_BOOT_FDT: u32 = 2 << 20;

/// How the boot FDT was found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FoundBy {
    /// `--fdt ADDR`.
    Given,
    /// The only page-aligned FDT with `/chosen/linux,kho-fdt` (or the only one whose
    /// handover passes kho's checks); `of` is how many named a handover.
    Scan { of: usize },
}

/// A boot FDT copied out of the dump.
#[derive(Clone, Debug)]
pub struct BootFdt {
    /// Its physical address.
    pub phys: u64,
    /// `totalsize` bytes of it.
    pub bytes: Vec<u8>,
    /// How it was found.
    pub found_by: FoundBy,
}

impl BootFdt {
    /// The parsed tree (it parsed once already).
    pub fn fdt(&self) -> Fdt<'_> {
        Fdt::parse(&self.bytes).expect("checked when found")
    }
}

fn has_handover(fdt: &Fdt<'_>) -> bool {
    fdt.find("/chosen")
        .is_some_and(|c| fdt.nodes[c].prop("linux,kho-fdt").is_some())
}

/// The FDT at `phys`, which must be well formed and name a handover in `/chosen`.
pub fn boot_fdt_at(dump: &Dump, phys: u64) -> Result<BootFdt, InspectError> {
    let head = dump.read(phys, 8)?;
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != FDT_MAGIC {
        let err = kho::FdtError::BadMagic { magic };
        return Err(InspectError::NotFdt { phys, err });
    }
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let bytes = dump.read(phys, size.max(8) as usize)?;
    let fdt = Fdt::parse(&bytes).map_err(|err| InspectError::NotFdt { phys, err })?;
    if !has_handover(&fdt) {
        return Err(InspectError::NoHandover { phys });
    }
    Ok(BootFdt {
        phys,
        bytes,
        found_by: FoundBy::Given,
    })
}

/// Every page-aligned FDT in the dump whose `/chosen` names a handover, and how many
/// well-formed FDTs the scan saw in all.
pub fn scan(dump: &Dump) -> (Vec<BootFdt>, usize) {
    let mut found = Vec::new();
    let mut fdts = 0;
    for r in dump.ranges() {
        let mut at = r.start.0.next_multiple_of(PAGE_SIZE);
        while at.checked_add(8).is_some_and(|e| e <= r.end.0) {
            let is_fdt = dump
                .read(at, 4)
                .is_ok_and(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]) == FDT_MAGIC);
            if is_fdt {
                match boot_fdt_at(dump, at) {
                    Ok(mut b) if b.bytes.len() <= MAX_BOOT_FDT as usize => {
                        fdts += 1;
                        b.found_by = FoundBy::Scan { of: 0 };
                        found.push(b);
                    }
                    Err(InspectError::NoHandover { .. }) => fdts += 1,
                    _ => {}
                }
            }
            at += PAGE_SIZE;
        }
    }
    let of = found.len();
    for b in &mut found {
        b.found_by = FoundBy::Scan { of };
    }
    (found, fdts)
}

/// The boot FDT at `given`, or the scan's only candidate. With several candidates the
/// caller decides (see `report::inspect`).
pub fn find_boot_fdt(dump: &Dump, given: Option<u64>) -> Result<Vec<BootFdt>, InspectError> {
    if let Some(phys) = given {
        return Ok(vec![boot_fdt_at(dump, phys)?]);
    }
    let (found, scanned) = scan(dump);
    if found.is_empty() {
        return Err(InspectError::NoBootFdtFound { scanned });
    }
    Ok(found)
}
