//! Kexec-handover state for baton: what memory survives into the next image, and how.
//!
//! Owns the type-tagged radix trees of preserved blocks, the KHO FDT, scratch areas, the
//! outgoing boot-FDT rewrite and the validation and restore of a previous image's handover.
//! Never touches the CPU or devices: all memory access goes through [`PhysMem`], all page
//! state through `mm`. The exact format is in `docs/abi.md`.
//!
//! Outgoing (board code, in order): `scratch::scratch_size` + `scratch::choose_scratch` on a
//! cold boot (or the previous image's areas), `Kho::new`, the workload's `preserve_*`,
//! `split_preserved_pages` and `add_client`, then `Kho::finalize` -> `Handover`, and
//! `bootfdt::rewrite` to put it in the next image's `/chosen`.
//!
//! Incoming: `bootfdt::read_handover` -> `HandoverRefs`, `read_scratch` (then
//! `Memblock::set_alloc_only_in`), `probe` (validate + reserve, or boot cold), reserve the
//! scratch areas again, `FrameAllocator::new`, `Reserved::attach` -> `Incoming`, then
//! `restore_folio` / `restore_pages` / `client`, `release_unclaimed`, `finish`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod bootfdt; // rewrite the boot FDT for the next image (/chosen handover properties)
pub mod fdt; // strict FDT reader and small writer
pub mod format; // KHO FDT names, encoding, metadata checksum
pub mod incoming; // reserve, stash, restore, release, finish
pub mod key; // radix keys: (phys, order) <-> u64
pub mod outgoing; // the Kho state machine: preserve, split, clients, finalize
pub mod phys; // PhysMem, the host Arena
pub mod preserved; // the two trees of this image, kept consistent
pub mod scratch; // choose, record and parse scratch areas
pub mod tree; // the radix tree this image builds
pub mod validate; // checks on a previous image's handover

pub use format::ClientEntry;
pub use incoming::{probe, read_scratch, HandoverRefs, Incoming, IncomingError, Reserved};
pub use key::BlockType;
pub use outgoing::{Handover, Kho, KhoError};
pub use phys::{Arena, PhysMem};
pub use validate::{validate, Block, Inputs, RestoreError, Validated};
