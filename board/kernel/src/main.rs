//! The baton kernel image: `kernel_main` and the glue between `arch`, `drivers`, `mm`,
//! `kho`, the board layer and the workload.
//!
//! Target only (`aarch64-unknown-none`); on the host this file is an empty program so that
//! `cargo clippy --workspace --all-targets` works. The boot order is in `boot.rs`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod boot; // kernel_main: the boot sequence, in order
#[cfg(target_os = "none")]
mod chain; // one generation of the handover chain: workload, finalize, next image
#[cfg(target_os = "none")]
mod exit; // exit status through semihosting, PSCI or the BCM2711 watchdog; panic; fatal exceptions
#[cfg(target_os = "none")]
mod heap; // talc global allocator growing from the frame allocator
#[cfg(target_os = "none")]
mod kho_boot; // kho at boot: the previous handover (scratch, validation) or new scratch
#[cfg(target_os = "none")]
mod logger; // `log` backend on the console, stamped with the generic timer
#[cfg(target_os = "none")]
mod memory; // Memblock, page tables and MMU, frame allocator
#[cfg(target_os = "none")]
mod next_image; // check, place and clean the next image and its FDT, then jump
#[cfg(target_os = "none")]
mod peer; // baton as a KHO peer: carried blocks, Linux's handover in and out, kho-test
#[cfg(target_os = "none")]
mod physmem; // kho::PhysMem over the identity map
#[cfg(target_os = "none")]
mod reloc; // the relocation self-check: statics holding pointers, checked after relocation
#[cfg(target_os = "none")]
mod scratch_need; // the next generation's scratch need and its one placement

#[cfg(not(target_os = "none"))]
fn main() {}
