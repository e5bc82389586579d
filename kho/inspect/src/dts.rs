//! dtc-style text of an FDT, as `dtc -I dtb -O dts` prints it, for the KHO FDT.
//!
//! Owns only formatting a tree kho's reader already parsed: strings as strings, 4-byte
//! multiples as `<cells>`, anything else as `[bytes]`; an 8-byte value also gets a comment
//! with its little-endian u64 (the KHO FDT's encoding, `docs/abi.md` §2).

use std::fmt::Write;

use kho::Fdt;

fn printable_strings(v: &[u8]) -> Option<Vec<&str>> {
    if v.last() != Some(&0) || v.len() < 2 {
        return None;
    }
    let parts: Vec<&[u8]> = v[..v.len() - 1].split(|&b| b == 0).collect();
    parts
        .iter()
        .map(|p| {
            let ok = !p.is_empty() && p.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"');
            ok.then(|| std::str::from_utf8(p).ok()).flatten()
        })
        .collect()
}

/// The value of one property in dts syntax (without `=` and `;`), and for an 8-byte value
/// a comment with its little-endian u64.
pub fn value(v: &[u8]) -> (String, Option<String>) {
    if let Some(strs) = printable_strings(v) {
        let s = strs.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>();
        return (s.join(", "), None);
    }
    let mut s = String::new();
    if v.len().is_multiple_of(4) {
        s.push('<');
        for (i, c) in v.chunks_exact(4).enumerate() {
            let _ = write!(
                s,
                "{}{:#010x}",
                if i == 0 { "" } else { " " },
                u32::from_be_bytes([c[0], c[1], c[2], c[3]])
            );
        }
        s.push('>');
    } else {
        s.push('[');
        for (i, b) in v.iter().enumerate() {
            let _ = write!(s, "{}{b:02x}", if i == 0 { "" } else { " " });
        }
        s.push(']');
    }
    let comment = <[u8; 8]>::try_from(v)
        .ok()
        .map(|b| format!("u64 LE {:#x}", u64::from_le_bytes(b)));
    (s, comment)
}

/// The whole tree as dts text, tab-indented, starting with `/dts-v1/;`.
pub fn text(fdt: &Fdt<'_>) -> String {
    let mut out = String::from("/dts-v1/;\n\n");
    for &(a, s) in &fdt.mem_reserve {
        let _ = writeln!(out, "/memreserve/ {a:#x} {s:#x};");
    }
    // Iterative pre-order: (node, next child); the depth is the stack's.
    let mut stack = vec![(0usize, 0usize)];
    open(&mut out, fdt, 0, 0);
    while let Some(&(n, i)) = stack.last() {
        let depth = stack.len() - 1;
        if let Some(&c) = fdt.nodes[n].children.get(i) {
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            open(&mut out, fdt, c, depth + 1);
            stack.push((c, 0));
        } else {
            let _ = writeln!(out, "{}}};", "\t".repeat(depth));
            stack.pop();
        }
    }
    out
}

fn open(out: &mut String, fdt: &Fdt<'_>, n: usize, depth: usize) {
    let node = &fdt.nodes[n];
    let ind = "\t".repeat(depth);
    let name = if n == 0 { "/" } else { node.name };
    let _ = writeln!(out, "{ind}{name} {{");
    for p in &node.props {
        if p.value.is_empty() {
            let _ = writeln!(out, "{ind}\t{};", p.name);
            continue;
        }
        match value(p.value) {
            (v, Some(c)) => {
                let _ = writeln!(out, "{ind}\t{} = {v}; /* {c} */", p.name);
            }
            (v, None) => {
                let _ = writeln!(out, "{ind}\t{} = {v};", p.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_look_like_dtc() {
        let s = |v: &str| (String::from(v), None);
        assert_eq!(value(b"baton,kho-typed-v1\0"), s("\"baton,kho-typed-v1\""));
        assert_eq!(value(&[0, 0, 0, 1]), s("<0x00000001>"));
        assert_eq!(value(&[1, 2, 3]), s("[01 02 03]"));
        assert_eq!(
            value(&0x4123_4000u64.to_le_bytes()),
            (
                String::from("<0x00402341 0x00000000>"),
                Some(String::from("u64 LE 0x41234000"))
            )
        );
    }
}
