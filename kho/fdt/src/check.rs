//! The strict reader's rules without its node table: checks a whole blob exactly as
//! `Fdt::parse` does, allocating nothing, so a reader that runs before any heap exists
//! (the boot parse, `board::fdt`) accepts only trees the strict reader (and so the
//! handover's rewrite of the boot FDT) accepts.
//!
//! Owns no memory and reads only inside the slice. Same checks, same order, same
//! [`FdtError`] as `Fdt::parse`; `fuzz_check_agrees_with_parse` holds the two together.

use super::*;

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some((u64::from(be32(b, off)?) << 32) | u64::from(be32(b, off.checked_add(4)?)?))
}

/// Length of the UTF-8, NUL-terminated name at `off`, if there is one.
fn cstr_len(b: &[u8], off: usize) -> Option<usize> {
    crate::cstr_at(b, off).map(str::len)
}

/// Checks `b` as `Fdt::parse` would, without building anything: `Ok(header)` exactly when
/// `Fdt::parse(b)` is `Ok`, else the same error.
pub fn check_tree(b: &[u8]) -> Result<Header, FdtError> {
    let h = check_header(b, b.len())?;
    let b = &b[..h.totalsize as usize];
    // check_header keeps both blocks inside totalsize.
    let st = &b[h.off_dt_struct as usize..(h.off_dt_struct + h.size_dt_struct) as usize];
    let strings = &b[h.off_dt_strings as usize..(h.off_dt_strings + h.size_dt_strings) as usize];
    let mut o = h.off_mem_rsvmap as usize;
    loop {
        let (Some(a), Some(s)) = (be64(b, o), be64(b, o.saturating_add(8))) else {
            return Err(FdtError::UnterminatedMemReserve);
        };
        if a == 0 && s == 0 {
            break;
        }
        o += 16;
    }
    // Open nodes: `depth` of them; bit d of `has_child` says the node at depth d has one.
    let (mut depth, mut has_child, mut root_done) = (0usize, 0u64, false);
    let mut pos = 0usize;
    loop {
        let tok_off = pos + h.off_dt_struct as usize;
        let tok = be32(st, pos).ok_or(FdtError::Truncated { offset: tok_off })?;
        pos += 4;
        match tok {
            FDT_BEGIN_NODE => {
                let n = cstr_len(st, pos).ok_or(FdtError::BadName { offset: tok_off })?;
                pos = (pos + n + 1).next_multiple_of(4);
                if root_done || (depth == 0 && n != 0) {
                    return Err(FdtError::BadStructure { offset: tok_off });
                }
                if depth >= FDT_MAX_DEPTH {
                    return Err(FdtError::TooDeep { offset: tok_off });
                }
                if depth > 0 {
                    has_child |= 1 << (depth - 1);
                }
                has_child &= !(1u64 << depth);
                depth += 1;
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(FdtError::BadStructure { offset: tok_off });
                }
                depth -= 1;
                if depth == 0 {
                    root_done = true;
                }
            }
            FDT_PROP => {
                let len = be32(st, pos).ok_or(FdtError::Truncated { offset: tok_off })?;
                let nameoff = be32(st, pos + 4).ok_or(FdtError::Truncated { offset: tok_off })?;
                pos += 8;
                let end = pos
                    .checked_add(len as usize)
                    .filter(|&e| e <= st.len())
                    .ok_or(FdtError::Truncated { offset: tok_off })?;
                pos = end.next_multiple_of(4);
                if (nameoff as usize) >= strings.len() {
                    return Err(FdtError::BadNameOffset {
                        offset: tok_off,
                        nameoff,
                    });
                }
                match cstr_len(strings, nameoff as usize) {
                    Some(n) if n > 0 => {}
                    _ => return Err(FdtError::BadName { offset: tok_off }),
                }
                if depth == 0 || has_child & (1 << (depth - 1)) != 0 {
                    return Err(FdtError::BadStructure { offset: tok_off });
                }
            }
            FDT_NOP => {}
            FDT_END => {
                if !root_done || depth != 0 {
                    return Err(FdtError::BadStructure { offset: tok_off });
                }
                return Ok(h);
            }
            token => {
                return Err(FdtError::BadToken {
                    offset: tok_off,
                    token,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz target: the strict reader and its allocation-free twin. Mutated virt trees get
    /// the same verdict, and the same error, from both.
    #[test]
    fn fuzz_check_agrees_with_parse() {
        let dtb = include_bytes!("../../tests/data/virt.dtb");
        assert!(check_tree(dtb).is_ok());
        baton_fuzz::run("fdt-check", 20_000, |rng| {
            let mut t = dtb.to_vec();
            baton_fuzz::mutate(&mut t, rng, 4);
            let strict = Fdt::parse(&t).map(|_| ());
            let light = check_tree(&t).map(|_| ());
            assert_eq!(light, strict);
            strict.is_ok()
        });
    }
}
