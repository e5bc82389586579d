//! A strict flattened-device-tree reader and a small writer, both of our own.
//!
//! Owns the FDT binary format only (header, memory reservation block, structure and strings
//! blocks). The reader never panics and never reads outside the slice it is given, whatever
//! the bytes; the writer produces trees that `dtc` and libfdt accept.

mod read;
mod write;

pub use read::{Fdt, FdtError};
pub use write::{FdtWriteError, FdtWriter};

/// FDT header magic.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
pub(crate) const FDT_BEGIN_NODE: u32 = 1;
pub(crate) const FDT_END_NODE: u32 = 2;
pub(crate) const FDT_PROP: u32 = 3;
pub(crate) const FDT_NOP: u32 = 4;
pub(crate) const FDT_END: u32 = 9;
/// Size of the v17 header.
pub const FDT_HEADER_SIZE: usize = 40;
/// Deepest node nesting the reader accepts (root is depth 1).
pub const FDT_MAX_DEPTH: usize = 64;
