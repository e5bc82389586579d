//! The boot FDT handed to the next image, and the handover properties read back from it.
//!
//! Owns `/chosen` handover properties (`linux,kho-fdt`, `linux,kho-scratch`, initrd, bootargs):
//! writing a copy of the incoming tree with them replaced, and decoding them
//! ([`decode_handover`], the one decoder, whose errors are kho's `RestoreError`). Copies every
//! other node, property and `/memreserve/` entry unchanged; never interprets other nodes.

use alloc::vec::Vec;
use core::fmt;

use crate::fdt::{Fdt, FdtError, FdtWriteError, FdtWriter};
use crate::format::{CHOSEN_KHO_FDT, CHOSEN_KHO_SCRATCH};
use crate::incoming::HandoverRefs;
use crate::validate::RestoreError;
use mm::PhysRange;

/// `/chosen` property: initrd start (u64, big-endian).
pub const CHOSEN_INITRD_START: &str = "linux,initrd-start";
/// `/chosen` property: initrd end (u64, big-endian).
pub const CHOSEN_INITRD_END: &str = "linux,initrd-end";

/// What the next image's `/chosen` should say. `None` drops the property.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChosenUpdate<'a> {
    /// The KHO FDT (address, size).
    pub kho_fdt: Option<PhysRange>,
    /// The scratch array (address, size).
    pub kho_scratch: Option<PhysRange>,
    /// The initrd range.
    pub initrd: Option<PhysRange>,
    /// New `bootargs` (any bytes but NUL; a NUL ends the command line); `None` keeps the
    /// incoming value.
    pub bootargs: Option<&'a [u8]>,
}

/// Why the boot FDT could not be rewritten or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootFdtError {
    /// The incoming FDT is malformed.
    Parse(FdtError),
    /// The writer refused (a name it cannot encode, too large).
    Write(FdtWriteError),
    /// Root `#address-cells`/`#size-cells` is malformed or not 1 or 2.
    BadCells { address_cells: u32, size_cells: u32 },
    /// A value does not fit the root's cell size.
    DoesNotFit { prop: &'static str, value: u64 },
    /// The handover properties are malformed (kho's named check).
    Handover(RestoreError),
}

impl From<FdtError> for BootFdtError {
    fn from(e: FdtError) -> Self {
        BootFdtError::Parse(e)
    }
}

impl From<FdtWriteError> for BootFdtError {
    fn from(e: FdtWriteError) -> Self {
        BootFdtError::Write(e)
    }
}

impl fmt::Display for BootFdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFdtError::Parse(e) => write!(f, "boot FDT: {e}"),
            BootFdtError::Write(e) => write!(f, "boot FDT: {e}"),
            BootFdtError::BadCells {
                address_cells,
                size_cells,
            } => write!(
                f,
                "boot FDT root #address-cells {address_cells} / #size-cells {size_cells} unusable"
            ),
            BootFdtError::DoesNotFit { prop, value } => {
                write!(
                    f,
                    "boot FDT /chosen/{prop}: {value:#x} does not fit the root cells"
                )
            }
            BootFdtError::Handover(e) => write!(f, "boot FDT: {e}"),
        }
    }
}

/// Root `#address-cells` and `#size-cells` (defaults 2 and 1), each 1 or 2.
pub fn root_cells(fdt: &Fdt<'_>) -> Result<(u32, u32), BootFdtError> {
    let cell = |name: &str, default: u32| match fdt.root().prop(name) {
        None => Some(default),
        Some(v) => <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes),
    };
    let (a, s) = (cell("#address-cells", 2), cell("#size-cells", 1));
    match (a, s) {
        (Some(a @ 1..=2), Some(s @ 1..=2)) => Ok((a, s)),
        (a, s) => Err(BootFdtError::BadCells {
            address_cells: a.unwrap_or(u32::MAX),
            size_cells: s.unwrap_or(u32::MAX),
        }),
    }
}

fn push_cells(
    out: &mut Vec<u8>,
    cells: u32,
    v: u64,
    prop: &'static str,
) -> Result<(), BootFdtError> {
    if cells == 1 {
        let v32 = u32::try_from(v).map_err(|_| BootFdtError::DoesNotFit { prop, value: v })?;
        out.extend_from_slice(&v32.to_be_bytes());
    } else {
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(())
}

/// Encodes `(start, size)` of `r` in the given cells, big-endian.
pub fn encode_reg(
    ac: u32,
    sc: u32,
    r: PhysRange,
    prop: &'static str,
) -> Result<Vec<u8>, BootFdtError> {
    let mut v = Vec::with_capacity(16);
    push_cells(&mut v, ac, r.start.0, prop)?;
    push_cells(&mut v, sc, r.size(), prop)?;
    Ok(v)
}

/// The `/chosen` handover properties as an FDT reader found them (the one type, in
/// baton-fdt, that the board's boot parse fills in too); [`decode_handover`] is the only
/// decoder.
pub use baton_fdt::ChosenHandover;

/// Decodes one `(address, size)` pair; the property must be exactly one pair, in 1 or 2
/// cells each, that does not wrap the address space.
fn decode_pair(ac: u32, sc: u32, v: &[u8], prop: &'static str) -> Result<PhysRange, RestoreError> {
    let bad = RestoreError::ChosenProperty { prop, len: v.len() };
    if !(1..=2).contains(&ac) || !(1..=2).contains(&sc) || v.len() != 4 * (ac + sc) as usize {
        return Err(bad);
    }
    let num = |b: &[u8]| {
        b.chunks_exact(4).fold(0u64, |acc, c| {
            (acc << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        })
    };
    let (a, s) = v.split_at(4 * ac as usize);
    let (start, size) = (num(a), num(s));
    let end = start.checked_add(size).ok_or(bad)?;
    Ok(PhysRange::from_bounds(start, end))
}

/// The handover `/chosen` names: `None` if it names none (a cold boot); an error naming
/// the property if only one of the two is there or either is malformed.
pub fn decode_handover(c: &ChosenHandover<'_>) -> Result<Option<HandoverRefs>, RestoreError> {
    let (ac, sc) = (c.address_cells, c.size_cells);
    match (c.kho_fdt, c.kho_scratch) {
        (None, None) => Ok(None),
        (Some(f), Some(s)) => Ok(Some(HandoverRefs {
            kho_fdt: decode_pair(ac, sc, f, CHOSEN_KHO_FDT)?,
            scratch_array: decode_pair(ac, sc, s, CHOSEN_KHO_SCRATCH)?,
        })),
        (None, Some(_)) => Err(RestoreError::ChosenProperty {
            prop: CHOSEN_KHO_FDT,
            len: 0,
        }),
        (Some(_), None) => Err(RestoreError::ChosenProperty {
            prop: CHOSEN_KHO_SCRATCH,
            len: 0,
        }),
    }
}

/// `(KHO FDT, scratch array)` named by `/chosen` of a boot FDT read with kho's strict
/// reader, if it has a handover (decoded by [`decode_handover`]).
pub fn read_handover(fdt: &Fdt<'_>) -> Result<Option<(PhysRange, PhysRange)>, BootFdtError> {
    let Some(chosen) = fdt.find("/chosen") else {
        return Ok(None);
    };
    let node = &fdt.nodes[chosen];
    let (address_cells, size_cells) = root_cells(fdt)?;
    let refs = decode_handover(&ChosenHandover {
        address_cells,
        size_cells,
        kho_fdt: node.prop(CHOSEN_KHO_FDT),
        kho_scratch: node.prop(CHOSEN_KHO_SCRATCH),
    })
    .map_err(BootFdtError::Handover)?;
    Ok(refs.map(|r| (r.kho_fdt, r.scratch_array)))
}

/// Checks, before anything is preserved, that the handover can rewrite `incoming`: the
/// same [`rewrite`] the jump runs, with every `/chosen` value at its worst case (each range
/// at `highest`, the end of RAM, so a value that does not fit the root cells shows now,
/// and `bootargs` as long as `bootargs_len`). A tree that passes here cannot fail at the
/// jump for a reason of its own.
pub fn check_rewritable(
    incoming: &[u8],
    highest: u64,
    bootargs_len: usize,
) -> Result<(), BootFdtError> {
    plan_rewrite(incoming, highest, bootargs_len, None).map(|_| ())
}

/// What [`plan_rewrite`] proved about one boot FDT, for [`rewrite_planned`] at the jump:
/// the length and the `fingerprint` of the bytes it checked, and the facts the splice
/// takes from the strict reader (root cells, `/memreserve/`, `boot_cpuid_phys`, where
/// `/chosen`'s properties start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewritePlan {
    crc: Option<u32>,
    len: usize,
    cells: (u32, u32),
    mem_reserve: Vec<(u64, u64)>,
    boot_cpuid_phys: u32,
    chosen: Option<usize>,
}

/// [`check_rewritable`] (one strict parse, both writers' checks: the full writer, and the
/// splice when there is a `/chosen`), returning what the jump's rewrite of the same bytes
/// can reuse; with `crc32` (crc32fast's convention) the plan records the bytes' CRC-32.
pub fn plan_rewrite(
    incoming: &[u8],
    highest: u64,
    bootargs_len: usize,
    crc32: Option<fn(u32, &[u8]) -> u32>,
) -> Result<RewritePlan, BootFdtError> {
    let page = 4096u64;
    let at = highest.saturating_sub(page) & !(page - 1);
    let r = PhysRange::from_bounds(at, at.saturating_add(page));
    let bootargs = alloc::vec![b'x'; bootargs_len];
    let upd = ChosenUpdate {
        kho_fdt: Some(r),
        kho_scratch: Some(r),
        initrd: Some(r),
        bootargs: Some(&bootargs),
    };
    let fdt = Fdt::parse(incoming)?;
    let (ac, sc) = root_cells(&fdt)?;
    let add = chosen_additions(ac, sc, &upd)?;
    // The jump splices; the full writer's checks (names it can encode, depth, size) run
    // here too, so the in-place edit accepts no tree the full rewrite would refuse.
    write_tree(&fdt, &add, &upd)?;
    let chosen = crate::splice::chosen_start(incoming)?;
    if chosen.is_some() {
        crate::splice::splice_chosen(incoming, &fdt, &add, |n| dropped(n, &upd))?;
    }
    Ok(RewritePlan {
        crc: crc32.and_then(|f| fingerprint(incoming, f)),
        len: incoming.len(),
        cells: (ac, sc),
        mem_reserve: fdt.mem_reserve.clone(),
        boot_cpuid_phys: fdt.boot_cpuid_phys,
        chosen,
    })
}

/// CRC-32 of every byte of `incoming` the splice reads (the 40-byte header, then the
/// structure and strings blocks it names), not of the free space a loader may leave after
/// them (QEMU's tree is 7 KiB in a 1 MiB `totalsize`). `None` if the header does not hold.
fn fingerprint(incoming: &[u8], crc32: fn(u32, &[u8]) -> u32) -> Option<u32> {
    let h = crate::fdt::check_header(incoming, incoming.len()).ok()?;
    let block = |off: u32, size: u32| {
        let (off, size) = (off as usize, size as usize);
        incoming.get(off..off.checked_add(size)?)
    };
    let mut c = crc32(0, incoming.get(..crate::fdt::FDT_HEADER_SIZE)?);
    c = crc32(c, block(h.off_dt_struct, h.size_dt_struct)?);
    Some(crc32(c, block(h.off_dt_strings, h.size_dt_strings)?))
}

/// [`rewrite`] of the tree `plan` was made for. When `incoming` is provably those bytes
/// (the same length and `fingerprint`, through `crc32`) and has a `/chosen`, the splice
/// runs from the plan without parsing the tree again (the strict parse and both writers'
/// checks ran over these bytes in [`plan_rewrite`]; `/memreserve/` and the root cells are
/// the values they read); otherwise this is [`rewrite`], parse first.
pub fn rewrite_planned(
    incoming: &[u8],
    plan: &RewritePlan,
    upd: &ChosenUpdate<'_>,
    crc32: fn(u32, &[u8]) -> u32,
) -> Result<Vec<u8>, BootFdtError> {
    let same = incoming.len() == plan.len
        && plan.crc.is_some()
        && plan.crc == fingerprint(incoming, crc32);
    let Some(props_start) = plan.chosen.filter(|_| same) else {
        return rewrite(incoming, upd);
    };
    let add = chosen_additions(plan.cells.0, plan.cells.1, upd)?;
    let facts = crate::splice::TreeFacts {
        mem_reserve: &plan.mem_reserve,
        boot_cpuid_phys: plan.boot_cpuid_phys,
    };
    crate::splice::splice_at(incoming, props_start, &facts, &add, |n| dropped(n, upd))
}

/// `/chosen`'s new properties (in order) for `upd`, the root's cells being `(ac, sc)`.
fn chosen_additions(
    ac: u32,
    sc: u32,
    upd: &ChosenUpdate<'_>,
) -> Result<Vec<(&'static str, Vec<u8>)>, BootFdtError> {
    let mut add: Vec<(&'static str, Vec<u8>)> = Vec::new();
    if let Some(r) = upd.kho_fdt {
        add.push((CHOSEN_KHO_FDT, encode_reg(ac, sc, r, CHOSEN_KHO_FDT)?));
    }
    if let Some(r) = upd.kho_scratch {
        add.push((
            CHOSEN_KHO_SCRATCH,
            encode_reg(ac, sc, r, CHOSEN_KHO_SCRATCH)?,
        ));
    }
    if let Some(r) = upd.initrd {
        add.push((CHOSEN_INITRD_START, r.start.0.to_be_bytes().to_vec()));
        add.push((CHOSEN_INITRD_END, r.end.0.to_be_bytes().to_vec()));
    }
    if let Some(b) = upd.bootargs {
        let mut v = b.to_vec();
        v.push(0);
        add.push(("bootargs", v));
    }
    Ok(add)
}

/// Is `name` one of `/chosen`'s properties that `upd` replaces (or drops)?
fn dropped(name: &[u8], upd: &ChosenUpdate<'_>) -> bool {
    [
        CHOSEN_KHO_FDT,
        CHOSEN_KHO_SCRATCH,
        CHOSEN_INITRD_START,
        CHOSEN_INITRD_END,
    ]
    .iter()
    .any(|n| n.as_bytes() == name)
        || (name == b"bootargs" && upd.bootargs.is_some())
}

/// Copies `incoming` with `/chosen` updated as `upd` says (creating `/chosen` if missing).
///
/// `/chosen` is edited in place (`splice`): the header, `/memreserve/` block and the
/// changed properties are written, every other byte of the structure and strings blocks
/// is copied as it was. Only a tree without `/chosen` is written anew ([`rewrite_full`]).
/// The tree is parsed strictly first either way.
pub fn rewrite(incoming: &[u8], upd: &ChosenUpdate<'_>) -> Result<Vec<u8>, BootFdtError> {
    let fdt = Fdt::parse(incoming)?;
    let (ac, sc) = root_cells(&fdt)?;
    let add = chosen_additions(ac, sc, upd)?;
    match crate::splice::splice_chosen(incoming, &fdt, &add, |n| dropped(n, upd))? {
        Some(out) => Ok(out),
        None => write_tree(&fdt, &add, upd),
    }
}

/// Writes the whole tree anew through `FdtWriter`, `/chosen` updated as `upd` says: the
/// result [`rewrite`] must agree with on every node and property (tests compare them).
pub fn rewrite_full(incoming: &[u8], upd: &ChosenUpdate<'_>) -> Result<Vec<u8>, BootFdtError> {
    let fdt = Fdt::parse(incoming)?;
    let (ac, sc) = root_cells(&fdt)?;
    let add = chosen_additions(ac, sc, upd)?;
    write_tree(&fdt, &add, upd)
}

fn write_tree(
    fdt: &Fdt<'_>,
    add: &[(&'static str, Vec<u8>)],
    upd: &ChosenUpdate<'_>,
) -> Result<Vec<u8>, BootFdtError> {
    let chosen = fdt.child(0, "chosen");
    let mut w = FdtWriter::new();
    w.boot_cpuid_phys(fdt.boot_cpuid_phys);
    for &(a, s) in &fdt.mem_reserve {
        w.mem_reserve(a, s);
    }
    // Iterative pre-order copy; the stack holds (node, next child index).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let open = |w: &mut FdtWriter, n: usize| -> Result<(), BootFdtError> {
        let node = &fdt.nodes[n];
        w.begin_node(node.name)?;
        let is_chosen = Some(n) == chosen;
        for p in &node.props {
            if !(is_chosen && dropped(p.name.as_bytes(), upd)) {
                w.prop(p.name, p.value)?;
            }
        }
        if is_chosen {
            for (name, v) in add {
                w.prop(name, v)?;
            }
        }
        Ok(())
    };
    open(&mut w, 0)?;
    stack.push((0, 0));
    while let Some(top) = stack.last_mut() {
        let (n, i) = *top;
        if let Some(&c) = fdt.nodes[n].children.get(i) {
            top.1 += 1;
            open(&mut w, c)?;
            stack.push((c, 0));
            continue;
        }
        if n == 0 && chosen.is_none() {
            w.begin_node("chosen")?;
            for (name, v) in add {
                w.prop(name, v)?;
            }
            w.end_node()?;
        }
        w.end_node()?;
        stack.pop();
    }
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(c: u32, b: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(c);
        h.update(b);
        h.finalize()
    }

    fn update(bootargs: &[u8]) -> ChosenUpdate<'_> {
        let r = |a: u64| PhysRange::from_bounds(a, a + 0x1000);
        ChosenUpdate {
            kho_fdt: Some(r(0x4700_0000)),
            kho_scratch: Some(r(0x4701_0000)),
            initrd: None,
            bootargs: Some(bootargs),
        }
    }

    /// The jump's rewrite from a plan writes exactly what the full-parse rewrite writes.
    #[test]
    fn planned_rewrite_is_the_rewrite() {
        let dtb = include_bytes!("../tests/data/virt.dtb");
        let plan = plan_rewrite(dtb, 0x8000_0000, 64, Some(crc)).unwrap();
        assert!(plan.chosen.is_some());
        let upd = update(b"baton.generations=3");
        assert_eq!(
            rewrite_planned(dtb, &plan, &upd, crc).unwrap(),
            rewrite(dtb, &upd).unwrap()
        );
    }

    /// Bytes that are not the planned ones (one byte of a property value changed) take the
    /// full path: parsed again, and written from what they now say.
    #[test]
    fn changed_bytes_are_parsed_again() {
        let dtb = include_bytes!("../tests/data/virt.dtb");
        let plan = plan_rewrite(dtb, 0x8000_0000, 64, Some(crc)).unwrap();
        let mut changed = dtb.to_vec();
        let model = changed
            .windows(5)
            .position(|w| w == b"linux")
            .expect("a string to change");
        changed[model] = b'L';
        let upd = update(b"x");
        let out = rewrite_planned(&changed, &plan, &upd, crc).unwrap();
        assert_eq!(out, rewrite(&changed, &upd).unwrap());
        assert_ne!(out, rewrite(dtb, &upd).unwrap());
        // Without a CRC in the plan nothing is trusted either.
        let blind = plan_rewrite(dtb, 0x8000_0000, 64, None).unwrap();
        assert_eq!(
            rewrite_planned(dtb, &blind, &upd, crc).unwrap(),
            rewrite(dtb, &upd).unwrap()
        );
    }
}
