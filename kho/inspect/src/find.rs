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

/// The FDT header at `phys`: the magic, then `baton_fdt::check_header` for a tree of at
/// most [`MAX_BOOT_FDT`] bytes, all before any copy.
fn header_at(dump: &Dump, phys: u64) -> Result<u32, InspectError> {
    let head = dump.read(phys, 8)?;
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != FDT_MAGIC {
        let err = kho::FdtError::BadMagic { magic };
        return Err(InspectError::NotFdt { phys, err });
    }
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let hdr = dump.read(phys, kho::FDT_HEADER_SIZE)?;
    kho::check_fdt_header(&hdr, MAX_BOOT_FDT as usize)
        .map_err(|err| InspectError::NotFdt { phys, err })?;
    Ok(size)
}

/// The FDT at `phys`, which must be well formed and name a handover in `/chosen`.
pub fn boot_fdt_at(dump: &Dump, phys: u64) -> Result<BootFdt, InspectError> {
    let size = header_at(dump, phys)?;
    let bytes = dump.read(phys, size as usize)?;
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

/// What a scan found and what it cost.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Page-aligned FDTs that name a handover.
    pub found: Vec<BootFdt>,
    /// Well-formed FDTs seen in all.
    pub fdts: usize,
    /// Bytes copied and parsed: at most [`scan_budget`] of the dump.
    pub parsed_bytes: u64,
    /// True if the scan stopped at its budget (pass `--fdt`).
    pub gave_up: bool,
}

/// The most bytes a scan parses for a dump of `total` bytes: linear in the dump, however
/// many pages start with an FDT magic.
pub fn scan_budget(total: u64) -> u64 {
    total
        .saturating_mul(4)
        .saturating_add(4 * u64::from(MAX_BOOT_FDT))
}

/// Every page-aligned FDT in the dump whose `/chosen` names a handover. Linear: each
/// candidate's header is checked before anything is copied, a well-formed tree is not
/// scanned again from inside, and the bytes parsed stop at [`scan_budget`].
pub fn scan_bounded(dump: &Dump) -> Scan {
    let ranges = dump.ranges();
    let budget = scan_budget(ranges.iter().map(|r| r.size()).sum());
    let mut s = Scan {
        found: Vec::new(),
        fdts: 0,
        parsed_bytes: 0,
        gave_up: false,
    };
    'ranges: for r in ranges {
        // A range in the last page of the address space has no page-aligned address.
        let Some(mut at) = r.start.0.checked_next_multiple_of(PAGE_SIZE) else {
            continue;
        };
        while at.checked_add(8).is_some_and(|e| e <= r.end.0) {
            let mut next = at.checked_add(PAGE_SIZE);
            if let Ok(size) = header_at(dump, at) {
                if s.parsed_bytes.saturating_add(u64::from(size)) > budget {
                    s.gave_up = true;
                    break 'ranges;
                }
                s.parsed_bytes += u64::from(size);
                let whole = |n: u64| at.checked_add(n.next_multiple_of(PAGE_SIZE));
                match boot_fdt_at(dump, at) {
                    Ok(mut b) => {
                        s.fdts += 1;
                        b.found_by = FoundBy::Scan { of: 0 };
                        next = whole(b.bytes.len() as u64);
                        s.found.push(b);
                    }
                    Err(InspectError::NoHandover { .. }) => {
                        s.fdts += 1;
                        next = whole(u64::from(size));
                    }
                    _ => {}
                }
            }
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
    }
    let of = s.found.len();
    for b in &mut s.found {
        b.found_by = FoundBy::Scan { of };
    }
    s
}

/// Every page-aligned FDT in the dump whose `/chosen` names a handover, and how many
/// well-formed FDTs the scan saw in all ([`scan_bounded`]).
pub fn scan(dump: &Dump) -> (Vec<BootFdt>, usize) {
    let s = scan_bounded(dump);
    (s.found, s.fdts)
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
