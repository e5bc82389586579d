//! Physical memory management for baton: frame descriptors, a boot-time region allocator
//! and a buddy allocator with Linux's page semantics.
//!
//! `no_std`, no target code, no heap: it only does arithmetic on descriptors that the
//! caller provides storage for. Modules:
//! - `addr`: `Pfn`, `PhysAddr`, `PhysRange`, page size constants.
//! - `page`: the 32-byte frame descriptor `Page` and `PageFlags`.
//! - `memblock`: the boot-time region allocator.
//! - `frame`: `FrameAllocator` (descriptor array, sections, queries, `Stats`).
//! - `buddy`: the per-order free lists.
//! - `refs`: alloc/free, folios, `split_page`, get/put, free-path checks.
//! - `restore`: claiming and releasing reserved (preserved) blocks.
//! - `deferred`: deferred descriptor init (`new_deferred`, on-demand and bulk init).
//! - `error`: `MmError`, `BadPage`.
//!
//! `examples/frames.rs` boots an allocator over a simulated range and allocates, splits and
//! frees: `cargo run -p mm --example frames`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

mod addr;
mod buddy;
mod deferred;
mod error;
mod frame;
mod memblock;
mod page;
mod refs;
mod restore;

pub use addr::{Pfn, PhysAddr, PhysRange, PAGE_SHIFT, PAGE_SIZE};
pub use deferred::{DeferredStorage, CHUNK_ORDER};
pub use error::{BadPage, BadPageReason, MmError};
pub use frame::{BlockKind, FrameAllocator, Stats};
pub use memblock::{Memblock, MEMBLOCK_CAP};
pub use page::{Page, PageFlags};

/// Largest buddy order of this build: 10 (4 MiB blocks), or 8 with feature `max-order-8`.
#[cfg(not(feature = "max-order-8"))]
pub const MAX_ORDER: u32 = 10;
/// Largest buddy order of this build: 10 (4 MiB blocks), or 8 with feature `max-order-8`.
#[cfg(feature = "max-order-8")]
pub const MAX_ORDER: u32 = 8;

/// Largest `max_order` an allocator instance may be built with.
pub const MAX_ORDER_CAP: u32 = 10;

/// Largest order of a reserved/restored block (from a previous image); such blocks are
/// freed in chunks no larger than the instance's `max_order`.
pub const MAX_BLOCK_ORDER: u32 = 30;

/// Number of free lists an allocator holds (orders `0..=MAX_ORDER_CAP`).
pub const NR_ORDERS: usize = MAX_ORDER_CAP as usize + 1;

const _: () = assert!(MAX_ORDER <= MAX_ORDER_CAP);

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_deferred;
