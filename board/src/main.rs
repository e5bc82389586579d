//! The baton kernel image: `kernel_main` and the glue between `arch`, `drivers`, `mm` and
//! the board layer.
//!
//! Target only (`aarch64-unknown-none`); on the host this file is an empty program so that
//! `cargo clippy --workspace --all-targets` works. The boot order is in `kernel/boot.rs`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod kernel;

#[cfg(not(target_os = "none"))]
fn main() {}
