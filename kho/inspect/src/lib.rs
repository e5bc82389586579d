//! kho-inspect: explains the handover in a guest memory dump with kho's own validation.
//!
//! Owns reading dumps, finding the boot FDT in one, and printing what kho's checks make of
//! the handover it names. Never decodes handover data itself: the trees, the KHO FDT and the
//! scratch array are read by `kho::probe`/`kho::read_scratch` over a [`Dump`], exactly as the
//! next image would read them; the inspector only formats what they return.

pub mod dts; // dtc-style text of an FDT (the KHO FDT as `dtc -I dtb -O dts` would show it)
pub mod dump; // ELF core / raw dump -> kho::PhysMem
pub mod find; // the boot FDT: given, or found by scanning page-aligned FDT headers
mod nodes; // the tree nodes, as kho's validation walked them (its trace records)
pub mod report; // run the checks, then text or JSON

use std::fmt;

pub use dump::{elf_segments, Dump, DumpKind};
pub use find::{find_boot_fdt, BootFdt, FoundBy};
pub use report::{inspect, run, Report};

/// Why a dump could not be inspected (bad input, not a bad handover: that is a
/// `kho::RestoreError` inside the [`Report`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InspectError {
    /// The file could not be read.
    Io { path: String, err: String },
    /// The file looks like ELF but its header or tables are not a usable ELF64 LE core.
    BadElf { what: &'static str, value: u64 },
    /// A segment's data runs past the end of the file.
    Truncated { phys: u64, need: u64, have: u64 },
    /// Two segments of the core claim the same physical address.
    SegmentsOverlap { phys: u64, other: u64 },
    /// A raw dump needs `--base`.
    RawNeedsBase,
    /// `--base` was given with an ELF core (its program headers carry the addresses).
    BaseWithElf,
    /// The dump holds no bytes.
    Empty,
    /// A range too large for this host.
    TooLarge { phys: u64, len: u64 },
    /// An address the dump does not hold.
    OutsideDump { phys: u64, len: u64 },
    /// `--fdt` does not point at a well-formed FDT.
    NotFdt { phys: u64, err: kho::FdtError },
    /// The boot FDT has no `linux,kho-fdt`/`linux,kho-scratch` in `/chosen`.
    NoHandover { phys: u64 },
    /// No page-aligned FDT in the dump names a handover.
    NoBootFdtFound { scanned: usize },
    /// Several boot FDTs name a handover and none or several of them pass kho's checks.
    AmbiguousBootFdt { candidates: Vec<u64> },
    /// The boot FDT's `/chosen` or root cells are malformed.
    BootFdt {
        phys: u64,
        err: kho::bootfdt::BootFdtError,
    },
    /// A command-line argument is wrong.
    Usage(String),
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use InspectError::*;
        match self {
            Io { path, err } => write!(f, "{path}: {err}"),
            BadElf { what, value } => write!(f, "not a usable ELF64 core: {what} ({value:#x})"),
            Truncated { phys, need, have } => write!(
                f,
                "truncated dump: the segment at {phys:#x} needs {need:#x} bytes, the file has {have:#x}"
            ),
            SegmentsOverlap { phys, other } => {
                write!(f, "segments at {phys:#x} and {other:#x} overlap")
            }
            RawNeedsBase => write!(f, "not an ELF core: a raw dump needs --base ADDR"),
            BaseWithElf => write!(f, "--base is for raw dumps; an ELF core names its addresses"),
            Empty => write!(f, "the dump holds no memory"),
            TooLarge { phys, len } => write!(f, "{len:#x} bytes at {phys:#x}: too large"),
            OutsideDump { phys, len } => {
                write!(f, "{phys:#x}+{len:#x} is not in the dump")
            }
            NotFdt { phys, err } => write!(f, "no FDT at {phys:#x}: {err}"),
            NoHandover { phys } => write!(
                f,
                "boot FDT at {phys:#x}: /chosen has no linux,kho-fdt and linux,kho-scratch"
            ),
            NoBootFdtFound { scanned } => write!(
                f,
                "none of the {scanned} page-aligned FDTs in the dump has /chosen/linux,kho-fdt (pass --fdt ADDR)"
            ),
            AmbiguousBootFdt { candidates } => {
                write!(f, "several boot FDTs name a handover:")?;
                for c in candidates {
                    write!(f, " {c:#x}")?;
                }
                write!(f, "; pass --fdt ADDR")
            }
            BootFdt { phys, err } => write!(f, "boot FDT at {phys:#x}: {err}"),
            Usage(s) => write!(f, "{s}"),
        }
    }
}
