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

/// What [`check_tree_visit`] reports while it checks a tree: each node's name and each
/// property, in tree order, with the offset of its token. A visitor's error stops the
/// reports, not the check.
pub trait Visit<'a> {
    /// What the visitor refuses (content it cannot use; the structure is the walk's).
    type Error;
    /// A node begins (the root's name is empty).
    fn begin_node(&mut self, name: &'a str, offset: usize) -> Result<(), Self::Error>;
    /// A property of the node begun last and not yet ended.
    fn prop(&mut self, name: &'a str, value: &'a [u8], offset: usize) -> Result<(), Self::Error>;
    /// The node begun last ends.
    fn end_node(&mut self, offset: usize) -> Result<(), Self::Error>;
}

/// The visitor of a plain [`check_tree`]: nothing to report to.
struct NoVisit;

impl Visit<'_> for NoVisit {
    type Error = core::convert::Infallible;
    fn begin_node(&mut self, _: &str, _: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    fn prop(&mut self, _: &str, _: &[u8], _: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    fn end_node(&mut self, _: usize) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Checks `b` as `Fdt::parse` would, without building anything: `Ok(header)` exactly when
/// `Fdt::parse(b)` is `Ok`, else the same error.
pub fn check_tree(b: &[u8]) -> Result<Header, FdtError> {
    check_tree_visit(b, &mut NoVisit).map(|(h, _)| h)
}

/// [`check_tree`] that also reports every node and property to `v` in the same pass (one
/// strict walk feeding a reader that builds what it needs). A malformed tree is the error,
/// whatever `v` said; for a well-formed one, the header and `v`'s first error, if any (as
/// if the whole check had run first and the visitor after it).
pub fn check_tree_visit<'a, V: Visit<'a>>(
    b: &'a [u8],
    v: &mut V,
) -> Result<(Header, Result<(), V::Error>), FdtError> {
    let h = check_header(b, b.len())?;
    let b = &b[..h.totalsize as usize];
    check_mem_reserve(b, &h)?;
    // check_header keeps both blocks inside totalsize.
    let st = &b[h.off_dt_struct as usize..(h.off_dt_struct + h.size_dt_struct) as usize];
    let strings = &b[h.off_dt_strings as usize..(h.off_dt_strings + h.size_dt_strings) as usize];
    let mut walk = Walk {
        depth: 0,
        has_child: 0,
        root_done: false,
        visited: Ok(()),
        names: [None; NAME_CACHE],
    };
    let mut pos = 0usize;
    loop {
        let tok_off = pos + h.off_dt_struct as usize;
        let tok = be32(st, pos).ok_or(FdtError::Truncated { offset: tok_off })?;
        pos += 4;
        match tok {
            FDT_BEGIN_NODE => {
                let name = crate::cstr_at(st, pos).ok_or(FdtError::BadName { offset: tok_off })?;
                pos = (pos + name.len() + 1).next_multiple_of(4);
                walk.begin_node(name, tok_off, v)?;
            }
            FDT_END_NODE => walk.end_node(tok_off, v)?,
            FDT_PROP => {
                let len = be32(st, pos).ok_or(FdtError::Truncated { offset: tok_off })?;
                let nameoff = be32(st, pos + 4).ok_or(FdtError::Truncated { offset: tok_off })?;
                pos += 8;
                let end = pos
                    .checked_add(len as usize)
                    .filter(|&e| e <= st.len())
                    .ok_or(FdtError::Truncated { offset: tok_off })?;
                let value = &st[pos..end];
                pos = end.next_multiple_of(4);
                walk.prop(strings, nameoff, value, tok_off, v)?;
            }
            FDT_NOP => {}
            FDT_END => {
                if !walk.root_done || walk.depth != 0 {
                    return Err(FdtError::BadStructure { offset: tok_off });
                }
                return Ok((h, walk.visited));
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

/// The `/memreserve/` block ends with a (0, 0) entry inside the tree.
fn check_mem_reserve(b: &[u8], h: &Header) -> Result<(), FdtError> {
    let mut o = h.off_mem_rsvmap as usize;
    loop {
        let (Some(a), Some(s)) = (be64(b, o), be64(b, o.saturating_add(8))) else {
            return Err(FdtError::UnterminatedMemReserve);
        };
        if a == 0 && s == 0 {
            return Ok(());
        }
        o += 16;
    }
}

/// Property names remembered by the walk (a tree names a few dozen, each many times).
const NAME_CACHE: usize = 32;

/// The structure walk's state: `depth` open nodes; bit d of `has_child` says the node at
/// depth d has one; the visitor's first error; the property names already read, by name
/// offset (slot `nameoff % NAME_CACHE`), so each is scanned once, not once per property.
struct Walk<'a, E> {
    depth: usize,
    has_child: u64,
    root_done: bool,
    visited: Result<(), E>,
    names: [Option<(u32, &'a str)>; NAME_CACHE],
}

impl<'a, E> Walk<'a, E> {
    /// The property name at `nameoff` in `strings`, as [`crate::cstr_at`] reads it (the
    /// same answer, from the cache when this offset was read before).
    fn prop_name(&mut self, strings: &'a [u8], nameoff: u32) -> Option<&'a str> {
        let slot = nameoff as usize % NAME_CACHE;
        if let Some((off, name)) = self.names[slot] {
            if off == nameoff {
                return Some(name);
            }
        }
        let name = crate::cstr_at(strings, nameoff as usize)?;
        self.names[slot] = Some((nameoff, name));
        Some(name)
    }

    /// Keeps the visitor's first error; later reports are skipped.
    fn report(&mut self, r: impl FnOnce() -> Result<(), E>) {
        if self.visited.is_ok() {
            self.visited = r();
        }
    }

    fn begin_node<V: Visit<'a, Error = E>>(
        &mut self,
        name: &'a str,
        tok_off: usize,
        v: &mut V,
    ) -> Result<(), FdtError> {
        if self.root_done || (self.depth == 0 && !name.is_empty()) {
            return Err(FdtError::BadStructure { offset: tok_off });
        }
        if self.depth >= FDT_MAX_DEPTH {
            return Err(FdtError::TooDeep { offset: tok_off });
        }
        if self.depth > 0 {
            self.has_child |= 1 << (self.depth - 1);
        }
        self.has_child &= !(1u64 << self.depth);
        self.depth += 1;
        self.report(|| v.begin_node(name, tok_off));
        Ok(())
    }

    fn end_node<V: Visit<'a, Error = E>>(
        &mut self,
        tok_off: usize,
        v: &mut V,
    ) -> Result<(), FdtError> {
        if self.depth == 0 {
            return Err(FdtError::BadStructure { offset: tok_off });
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.root_done = true;
        }
        self.report(|| v.end_node(tok_off));
        Ok(())
    }

    fn prop<V: Visit<'a, Error = E>>(
        &mut self,
        strings: &'a [u8],
        nameoff: u32,
        value: &'a [u8],
        tok_off: usize,
        v: &mut V,
    ) -> Result<(), FdtError> {
        if (nameoff as usize) >= strings.len() {
            return Err(FdtError::BadNameOffset {
                offset: tok_off,
                nameoff,
            });
        }
        let name = match self.prop_name(strings, nameoff) {
            Some(n) if !n.is_empty() => n,
            _ => return Err(FdtError::BadName { offset: tok_off }),
        };
        if self.depth == 0 || self.has_child & (1 << (self.depth - 1)) != 0 {
            return Err(FdtError::BadStructure { offset: tok_off });
        }
        self.report(|| v.prop(name, value, tok_off));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// What a visitor saw: ("node", name) / ("prop", name and value) / ("end", "") events.
    #[derive(Default)]
    struct Record<'a>(Vec<(&'static str, &'a str, &'a [u8])>);

    impl<'a> Visit<'a> for Record<'a> {
        type Error = ();
        fn begin_node(&mut self, name: &'a str, _: usize) -> Result<(), ()> {
            self.0.push(("node", name, &[]));
            Ok(())
        }
        fn prop(&mut self, name: &'a str, value: &'a [u8], _: usize) -> Result<(), ()> {
            self.0.push(("prop", name, value));
            Ok(())
        }
        fn end_node(&mut self, _: usize) -> Result<(), ()> {
            self.0.push(("end", "", &[]));
            Ok(())
        }
    }

    /// The events the strict reader's node table implies, in blob order.
    fn events<'a>(fdt: &Fdt<'a>, n: usize, out: &mut Vec<(&'static str, &'a str, &'a [u8])>) {
        let node = &fdt.nodes[n];
        out.push(("node", node.name, &[]));
        for p in &node.props {
            out.push(("prop", p.name, p.value));
        }
        for &c in &node.children {
            events(fdt, c, out);
        }
        out.push(("end", "", &[]));
    }

    /// The visitor sees every node and property the strict reader builds, in its order.
    #[test]
    fn visit_reports_what_the_strict_reader_builds() {
        let dtb = include_bytes!("../../tests/data/virt.dtb");
        let mut seen = Record::default();
        let (h, visited) = check_tree_visit(dtb, &mut seen).unwrap();
        assert_eq!(visited, Ok(()));
        assert_eq!(h, check_tree(dtb).unwrap());
        let fdt = Fdt::parse(dtb).unwrap();
        let mut want = Vec::new();
        events(&fdt, 0, &mut want);
        assert_eq!(seen.0, want);
    }

    /// A malformed tree is the walk's error even when the visitor refused something first.
    #[test]
    fn structure_errors_come_before_the_visitors() {
        struct Refuse;
        impl Visit<'_> for Refuse {
            type Error = u32;
            fn begin_node(&mut self, _: &str, _: usize) -> Result<(), u32> {
                Err(7)
            }
            fn prop(&mut self, _: &str, _: &[u8], _: usize) -> Result<(), u32> {
                Err(8)
            }
            fn end_node(&mut self, _: usize) -> Result<(), u32> {
                Err(9)
            }
        }
        let dtb = include_bytes!("../../tests/data/virt.dtb");
        assert_eq!(check_tree_visit(dtb, &mut Refuse).unwrap().1, Err(7));
        let mut cut = dtb.to_vec();
        let h = check_tree(dtb).unwrap();
        // The END token replaced by an unknown one: the walk's error, not the visitor's.
        let end = (h.off_dt_struct + h.size_dt_struct) as usize - 4;
        cut[end..end + 4].copy_from_slice(&0x55u32.to_be_bytes());
        assert_eq!(
            check_tree_visit(&cut, &mut Refuse).map(|(_, v)| v),
            Err(FdtError::BadToken {
                offset: end,
                token: 0x55
            })
        );
    }

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
