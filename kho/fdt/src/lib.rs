//! The flattened device tree format for baton: the one header check, the one error
//! vocabulary (`FdtError`) for a malformed tree, a strict reader and a small writer.
//!
//! Owns the FDT binary format only (header, memory reservation block, structure and strings
//! blocks). Two readers use it: `Fdt` here (builds node tables on the heap: the KHO FDT,
//! client sub-trees, the boot-FDT rewrite) and `board::fdt` (walks the boot FDT in
//! [`check_tree_visit`]'s one strict pass before any heap exists); both check headers with
//! [`check_header`] and name a malformed tree with the same [`FdtError`]. Never panics and
//! never reads outside the slice it is given, whatever the bytes; the writer produces trees
//! that `dtc` and libfdt accept.
//!
//! `examples/tree.rs` writes a tree and reads it back: `cargo run -p baton-fdt --example tree`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod check;
mod chosen; // the /chosen handover properties, undecoded
mod read;
mod write;

pub use check::{check_tree, check_tree_visit, Visit};
pub use chosen::ChosenHandover;
pub use read::{check_header, Fdt, FdtError, Header};
pub use write::{FdtWriteError, FdtWriter};

/// `bytes` as a `&str`, if they are UTF-8: the same answer as `core::str::from_utf8(..).ok()`.
///
/// Node and property names are short and ASCII; `from_utf8`'s general path costs about a
/// hundred instructions per name on the target (each boot parses the tree's ~300 names
/// several times inside the handover blackout). This checks the ASCII case first
/// (`is_ascii`) and leaves anything else to `from_utf8`.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every byte is below 0x80, and a sequence of ASCII bytes is valid UTF-8.
        Some(unsafe { core::str::from_utf8_unchecked(bytes) })
    } else {
        core::str::from_utf8(bytes).ok()
    }
}

/// The UTF-8, NUL-terminated string at `off` in `b` (without its NUL), if there is one:
/// the same answer as finding the NUL and then [`utf8`], in one pass over the bytes (each
/// name of the tree is read this way by every parse inside the handover blackout).
pub fn cstr_at(b: &[u8], off: usize) -> Option<&str> {
    let rest = b.get(off..)?;
    let mut high = 0u8;
    for (n, &c) in rest.iter().enumerate() {
        if c == 0 {
            let s = &rest[..n];
            if high < 0x80 {
                // SAFETY: every byte of `s` is below 0x80 (their OR is), and ASCII is UTF-8.
                return Some(unsafe { core::str::from_utf8_unchecked(s) });
            }
            return core::str::from_utf8(s).ok();
        }
        high |= c;
    }
    None
}

/// FDT header magic.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Structure-block tokens.
pub const FDT_BEGIN_NODE: u32 = 1;
/// End of a node.
pub const FDT_END_NODE: u32 = 2;
/// A property.
pub const FDT_PROP: u32 = 3;
/// Nothing.
pub const FDT_NOP: u32 = 4;
/// End of the structure block.
pub const FDT_END: u32 = 9;
/// Size of the v17 header.
pub const FDT_HEADER_SIZE: usize = 40;
/// Deepest node nesting the reader accepts (root is depth 1).
pub const FDT_MAX_DEPTH: usize = 64;

#[cfg(test)]
mod tests {
    use super::utf8;

    #[test]
    fn utf8_answers_as_from_utf8_does() {
        let cases: [&[u8]; 7] = [
            b"",
            b"linux,initrd-start",
            b"#address-cells",
            "caf\u{e9}".as_bytes(),
            b"\x7f",
            b"bad\xff",
            b"\xe2\x82",
        ];
        for bytes in cases {
            assert_eq!(utf8(bytes), core::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
        assert_eq!(utf8("caf\u{e9}".as_bytes()), Some("caf\u{e9}"));
        assert_eq!(utf8(b"bad\xff"), None);
    }

    #[test]
    fn cstr_at_finds_the_nul_and_checks_utf8() {
        use super::cstr_at;
        let b = b"ab\0caf\xc3\xa9\0bad\xff\0open";
        assert_eq!(cstr_at(b, 0), Some("ab"));
        assert_eq!(cstr_at(b, 1), Some("b"));
        assert_eq!(cstr_at(b, 2), Some(""));
        assert_eq!(cstr_at(b, 3), Some("caf\u{e9}"));
        assert_eq!(cstr_at(b, 9), None); // not UTF-8
        assert_eq!(cstr_at(b, 14), None); // no NUL before the end
        assert_eq!(cstr_at(b, b.len()), None);
        assert_eq!(cstr_at(b, b.len() + 1), None);
    }
}
