//! Kexec-handover state for baton: what memory survives into the next image, and how.
//!
//! Owns the radix tree of type-tagged keys of preserved blocks (and the reading of the
//! previous release's two-tree format), the KHO FDT, scratch areas, the
//! outgoing boot-FDT rewrite and the validation and restore of a previous image's handover.
//! Never touches the CPU or devices: all memory access goes through [`PhysMem`], all page
//! state through `mm`. The exact format is in `docs/abi.md`.
//!
//! Outgoing (the kernel, in order): `scratch_size` + `choose_scratch` on a cold boot (or the
//! previous image's areas), `Kho::new`, the workload's `preserve_*`,
//! `split_preserved_pages` and `add_client`, then `Kho::finalize` -> `Handover`, and
//! `bootfdt::rewrite` to put it in the next image's `/chosen`.
//!
//! Incoming: the raw `/chosen` properties (from the kernel's allocation-free boot parse, or
//! kho's own reader in `bootfdt::read_handover`) -> `bootfdt::decode_handover` ->
//! `HandoverRefs`, `read_scratch` (then `Memblock::set_alloc_only_in`), `probe` (validate +
//! reserve, or boot cold), reserve the scratch areas again, `FrameAllocator::new`,
//! `Reserved::attach` -> `Incoming`, then `restore_folio` / `restore_pages` / `client`,
//! `release_unclaimed`, `finish`. Every failure is a named `RestoreError` and a cold boot.
//!
//! `examples/handover.rs` runs both sides over one simulated RAM:
//! `cargo run -p kho --features test-helpers --example handover`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

/// The FDT format (header checks, reader, writer, `FdtError`): its own crate, shared with
/// the board's boot parse.
use baton_fdt as fdt;

#[cfg(any(test, feature = "test-helpers"))]
mod arena; // Arena: host RAM for tests (feature `test-helpers`)
pub mod bootfdt; // the boot FDT's /chosen handover properties: rewrite and decode
mod carry; // the list of blocks and clients this image carries for another (baton-carry)
mod format; // KHO FDT names, encoding, metadata checksum
mod incoming; // reserve, stash, restore, release, finish
mod key; // radix keys: (phys, order, type) <-> u64
mod leaf; // validation's leaf decoder: keys of a leaf -> blocks, in ascending runs
pub mod linux; // Linux's client formats: kexec-metadata, kho_vmalloc, kho-test-v1, csum
mod merge; // validation's sort: the walk's ascending runs merged
mod outgoing; // the Kho state machine: preserve, split, clients, finalize
mod phys; // PhysMem and the safe accessors on it
mod preserved; // the typed-key tree of this image, kept consistent
mod scratch; // choose, record and parse scratch areas
mod splice; // the boot FDT's /chosen edited in place, other bytes copied
mod sweep; // forward cursors over sorted ranges: the per-block checks of validation
pub mod tamper; // the damage hook: deliberate corruption of a finalized handover (tests)
mod tree; // the radix tree this image builds
#[cfg(any(test, feature = "test-helpers"))]
mod v1; // the previous release's writer, for upgrade tests (feature `test-helpers`)
mod validate; // checks on a previous image's handover

#[cfg(any(test, feature = "test-helpers"))]
pub use arena::Arena;
pub use baton_fdt::{
    check_header as check_fdt_header, Fdt, FdtError, FdtWriteError, FdtWriter, FDT_HEADER_SIZE,
};
pub use carry::{CarryError, CarryList, CARRY_CLIENT};
pub use format::{
    AbiVersion, ClientEntry, FormatError, COMPATIBLE, COMPATIBLE_LINUX_V4, COMPATIBLE_V1,
    KEXEC_METADATA,
};
pub use incoming::{probe, read_scratch, HandoverRefs, Incoming, IncomingError, Reserved};
pub use key::{BlockType, KeyError, MAX_KEY_ORDER};
pub use outgoing::{Handover, Kho, KhoError};
pub use phys::{
    read_bytes, read_into, read_u64, with_words, write_bytes, write_u64, PageBuf, PhysMem,
};
pub use scratch::{choose_scratch, linux_early_bytes, scratch_size, SCRATCH_ALIGN};
pub use validate::{
    peek_format, validate, validate_versioned, Block, BlockTotals, Inputs, RestoreError, TreeName,
    Validated,
};

/// Internals that kho's own integration tests and benchmark build handovers with (wrong
/// ones on purpose, too). Not an API: only with feature `test-helpers`.
#[cfg(feature = "test-helpers")]
pub mod testing {
    pub use crate::format::{
        read_kho_fdt, write_kho_fdt, write_kho_fdt_v1, write_view, KhoFdtView,
    };
    pub use crate::key::{encode, encode_typed};
    pub use crate::preserved::PreservedSet;
    pub use crate::tree::{BumpPages, PageSource};
    pub use crate::v1::{write_v1_handover, V1Error};
}
