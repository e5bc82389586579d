//! The flattened device tree format for baton: the one header check, the one error
//! vocabulary (`FdtError`) for a malformed tree, a strict reader and a small writer.
//!
//! Owns the FDT binary format only (header, memory reservation block, structure and strings
//! blocks). Two readers use it: `Fdt` here (builds node tables on the heap: the KHO FDT,
//! client sub-trees, the boot-FDT rewrite) and `board::fdt` (walks the boot FDT with fdt-rs
//! before any heap exists); both check headers with [`check_header`] and name a malformed
//! tree with the same [`FdtError`]. Never panics and never reads outside the slice it is
//! given, whatever the bytes; the writer produces trees that `dtc` and libfdt accept.
//!
//! `examples/tree.rs` writes a tree and reads it back: `cargo run -p baton-fdt --example tree`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod check;
mod chosen; // the /chosen handover properties, undecoded
mod read;
mod write;

pub use check::check_tree;
pub use chosen::ChosenHandover;
pub use read::{check_header, Fdt, FdtError, Header};
pub use write::{FdtWriteError, FdtWriter};

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
