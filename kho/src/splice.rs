//! The boot FDT's `/chosen` edited in place: every other byte of the tree copied verbatim.
//!
//! Owns the splice only: the structure block up to `/chosen`'s properties and from its first
//! child (or end) on, the strings block and the header layout of `FdtWriter::finish`. Runs
//! only on a tree `Fdt::parse` has accepted (so every offset it meets was checked once:
//! now, or over the same bytes before, `bootfdt::RewritePlan`), yet still reads through
//! checked accessors and never panics. Never re-encodes another node.

use alloc::vec::Vec;

use crate::bootfdt::BootFdtError;
use crate::fdt::{Fdt, FdtError, FdtWriteError, FDT_HEADER_SIZE};
use baton_fdt::{FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_MAGIC, FDT_NOP, FDT_PROP};

/// A `/chosen` property of the incoming tree: its bytes in the structure block and name.
struct ChosenProp<'a> {
    bytes: &'a [u8],
    name: &'a [u8],
}

/// Where `/chosen` sits in the structure block.
struct ChosenSpan<'a> {
    /// Offset of its first property (just after its name).
    props_start: usize,
    /// Offset of its first child's `BEGIN_NODE` or of its `END_NODE`.
    props_end: usize,
    props: Vec<ChosenProp<'a>>,
}

fn bad(offset: usize) -> BootFdtError {
    BootFdtError::Parse(FdtError::BadStructure { offset })
}

fn be32(b: &[u8], off: usize) -> Result<u32, BootFdtError> {
    let w = b
        .get(off..off.checked_add(4).ok_or(bad(off))?)
        .ok_or(bad(off))?;
    Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// The NUL-terminated bytes at `off` in `b`, without the NUL.
fn cstr(b: &[u8], off: usize) -> Result<&[u8], BootFdtError> {
    let rest = b.get(off..).ok_or(bad(off))?;
    let n = rest.iter().position(|&c| c == 0).ok_or(bad(off))?;
    Ok(&rest[..n])
}

fn align4(n: usize) -> Result<usize, BootFdtError> {
    n.checked_next_multiple_of(4).ok_or(bad(n))
}

/// Finds the first child of the root named `chosen` (as `Fdt::child(0, "chosen")` does)
/// and its properties; `None` if the root has none.
fn find_chosen<'a>(
    st: &'a [u8],
    strings: &'a [u8],
) -> Result<Option<ChosenSpan<'a>>, BootFdtError> {
    let mut pos = 0usize;
    let mut depth = 0usize;
    loop {
        let tok = be32(st, pos)?;
        match tok {
            FDT_BEGIN_NODE => {
                let name = cstr(st, pos + 4)?;
                pos = align4(pos + 4 + name.len() + 1)?;
                depth += 1;
                if depth == 2 && name == b"chosen" {
                    return chosen_props(st, strings, pos).map(Some);
                }
            }
            FDT_END_NODE => depth = depth.checked_sub(1).ok_or(bad(pos))?,
            FDT_PROP => {
                let len = be32(st, pos + 4)? as usize;
                pos = align4(pos.checked_add(12 + len).ok_or(bad(pos))?)?;
                continue;
            }
            FDT_NOP => {}
            FDT_END => return Ok(None),
            _ => return Err(bad(pos)),
        }
        if tok != FDT_BEGIN_NODE {
            pos += 4;
        }
    }
}

/// `/chosen`'s properties from `start` (just after its name) to its first child or end.
fn chosen_props<'a>(
    st: &'a [u8],
    strings: &'a [u8],
    start: usize,
) -> Result<ChosenSpan<'a>, BootFdtError> {
    let mut pos = start;
    let mut props = Vec::new();
    loop {
        match be32(st, pos)? {
            FDT_PROP => {
                let len = be32(st, pos + 4)? as usize;
                let nameoff = be32(st, pos + 8)? as usize;
                let end = align4(pos.checked_add(12 + len).ok_or(bad(pos))?)?;
                let bytes = st.get(pos..end).ok_or(bad(pos))?;
                props.push(ChosenProp {
                    bytes,
                    name: cstr(strings, nameoff)?,
                });
                pos = end;
            }
            FDT_NOP => pos += 4,
            FDT_BEGIN_NODE | FDT_END_NODE => {
                return Ok(ChosenSpan {
                    props_start: start,
                    props_end: pos,
                    props,
                })
            }
            _ => return Err(bad(pos)),
        }
    }
}

/// Offset of the whole string `name` in `strings`, if it is there.
fn find_string(strings: &[u8], name: &[u8]) -> Option<usize> {
    let mut off = 0;
    for s in strings.split(|&c| c == 0) {
        if s == name && off + s.len() < strings.len() {
            return Some(off);
        }
        off += s.len() + 1;
    }
    None
}

/// What the splice takes from the incoming tree besides its bytes (the strict reader's
/// `mem_reserve` and `boot_cpuid_phys`).
pub(crate) struct TreeFacts<'f> {
    pub mem_reserve: &'f [(u64, u64)],
    pub boot_cpuid_phys: u32,
}

/// The structure and strings blocks of `incoming`, through its checked header.
fn blocks(incoming: &[u8]) -> Result<(&[u8], &[u8]), BootFdtError> {
    let h = crate::fdt::check_header(incoming, incoming.len())?;
    let block = |off: u32, size: u32| {
        let (off, size) = (off as usize, size as usize);
        incoming.get(off..off.checked_add(size)?)
    };
    let st = block(h.off_dt_struct, h.size_dt_struct).ok_or(bad(0))?;
    let strings = block(h.off_dt_strings, h.size_dt_strings).ok_or(bad(0))?;
    Ok((st, strings))
}

/// Offset in the structure block of `/chosen`'s first property (just after its name), or
/// `None` if the root has no `/chosen`: what [`splice_at`] starts from.
pub(crate) fn chosen_start(incoming: &[u8]) -> Result<Option<usize>, BootFdtError> {
    let (st, strings) = blocks(incoming)?;
    Ok(find_chosen(st, strings)?.map(|c| c.props_start))
}

/// `incoming` (already accepted by `Fdt::parse` as `fdt`) with `/chosen`'s properties
/// that `dropped` names removed and `add` appended after the others, every other byte of
/// the structure and strings blocks copied as it was. `None` if there is no `/chosen` (the
/// caller writes a new tree then).
pub(crate) fn splice_chosen(
    incoming: &[u8],
    fdt: &Fdt<'_>,
    add: &[(&str, Vec<u8>)],
    dropped: impl Fn(&[u8]) -> bool,
) -> Result<Option<Vec<u8>>, BootFdtError> {
    let (st, strings) = blocks(incoming)?;
    let Some(chosen) = find_chosen(st, strings)? else {
        return Ok(None);
    };
    let facts = TreeFacts {
        mem_reserve: &fdt.mem_reserve,
        boot_cpuid_phys: fdt.boot_cpuid_phys,
    };
    emit(st, strings, &chosen, &facts, add, dropped).map(Some)
}

/// [`splice_chosen`] of a tree whose `/chosen` properties start at `props_start` (from
/// [`chosen_start`] over the same bytes) and whose `facts` are known: no walk to find it.
/// Every read is still checked: a wrong offset is an error, never a panic.
pub(crate) fn splice_at(
    incoming: &[u8],
    props_start: usize,
    facts: &TreeFacts<'_>,
    add: &[(&str, Vec<u8>)],
    dropped: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, BootFdtError> {
    let (st, strings) = blocks(incoming)?;
    let chosen = chosen_props(st, strings, props_start)?;
    emit(st, strings, &chosen, facts, add, dropped)
}

/// Writes the spliced tree: header, `/memreserve/`, the structure block around `/chosen`'s
/// new properties, the strings block and the names it lacked.
fn emit(
    st: &[u8],
    strings: &[u8],
    chosen: &ChosenSpan<'_>,
    facts: &TreeFacts<'_>,
    add: &[(&str, Vec<u8>)],
    dropped: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, BootFdtError> {
    let mut new_strings: Vec<u8> = Vec::new();
    let mut middle: Vec<u8> = Vec::new();
    for p in chosen.props.iter().filter(|p| !dropped(p.name)) {
        middle.extend_from_slice(p.bytes);
    }
    for (name, value) in add {
        let nameoff = match find_string(strings, name.as_bytes()) {
            Some(off) => off,
            None => {
                let off = strings.len() + new_strings.len();
                new_strings.extend_from_slice(name.as_bytes());
                new_strings.push(0);
                off
            }
        };
        let too_large = BootFdtError::Write(FdtWriteError::TooLarge);
        let len = u32::try_from(value.len()).map_err(|_| too_large.clone())?;
        let nameoff = u32::try_from(nameoff).map_err(|_| too_large)?;
        for v in [FDT_PROP, len, nameoff] {
            middle.extend_from_slice(&v.to_be_bytes());
        }
        middle.extend_from_slice(value);
        middle.resize(middle.len().next_multiple_of(4), 0);
    }

    let head = st
        .get(..chosen.props_start)
        .ok_or(bad(chosen.props_start))?;
    let tail = st.get(chosen.props_end..).ok_or(bad(chosen.props_end))?;
    let struct_len = head.len() + middle.len() + tail.len();
    let strings_len = strings.len() + new_strings.len();
    let off_rsv = FDT_HEADER_SIZE;
    let off_struct = off_rsv + 16 * (facts.mem_reserve.len() + 1);
    let off_strings = off_struct + struct_len;
    let total = off_strings + strings_len;
    let fits =
        |n: usize| u32::try_from(n).map_err(|_| BootFdtError::Write(FdtWriteError::TooLarge));
    let mut out = Vec::with_capacity(total.next_multiple_of(8));
    for v in [
        FDT_MAGIC,
        fits(total)?,
        fits(off_struct)?,
        fits(off_strings)?,
        fits(off_rsv)?,
        17,
        16,
        facts.boot_cpuid_phys,
        fits(strings_len)?,
        fits(struct_len)?,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for &(a, s) in facts.mem_reserve.iter().chain(core::iter::once(&(0, 0))) {
        out.extend_from_slice(&a.to_be_bytes());
        out.extend_from_slice(&s.to_be_bytes());
    }
    out.extend_from_slice(head);
    out.extend_from_slice(&middle);
    out.extend_from_slice(tail);
    out.extend_from_slice(strings);
    out.extend_from_slice(&new_strings);
    Ok(out)
}
