//! Physical memory management for baton: frame descriptors, a boot-time region allocator
//! and a buddy allocator with Linux's page semantics.
//!
//! `no_std`, no target code, no heap: it only does arithmetic on descriptors that the
//! caller provides storage for. Modules:
//! - `addr`: `Pfn`, `PhysAddr`, `PhysRange`, page size constants.
//! - `page`: the 32-byte frame descriptor `Page` and `PageFlags`.
//! - `memblock`: the boot-time region allocator.
//! - `frame`: `FrameAllocator` (descriptor array, sections, queries, `Stats`), its order
//!   limits and the deferred-init chunk geometry.
//! - `buddy`: the per-order free lists.
//! - `refs`: alloc/free, folios, `split_page`, get/put, free-path checks.
//! - `reserve`: `Preserved`, the one pass that writes preserved descriptors, the O(1)
//!   claim of a preserved block.
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
mod reserve;
mod restore;

pub use addr::{Pfn, PhysAddr, PhysRange, PAGE_SHIFT, PAGE_SIZE};
pub use deferred::DeferredStorage;
pub use error::{BadPage, BadPageReason, MmError};
pub use frame::{BlockKind, FrameAllocator, Stats, MAX_BLOCK_ORDER, MAX_ORDER, NR_ORDERS};
pub use memblock::Memblock;
pub use page::{Page, PageFlags};
pub use reserve::{Preserved, PreservedBlock, PreservedSet};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_deferred;
#[cfg(test)]
mod tests_reserve;
