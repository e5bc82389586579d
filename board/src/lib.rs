//! The baton image's board layer: what the machine is and what the firmware told us.
//!
//! Target-free and host-tested: the FDT is parsed once into a [`BootInfo`], boards are
//! detected from the root `compatible` and described by data ([`boards`]), bootargs are
//! parsed, and the boot memory map becomes an `mm::Memblock`. The kernel binary
//! (`src/main.rs`, target only) wires these to `arch` and `drivers`.
#![cfg_attr(not(test), no_std)]

pub mod boards; // per-board facts (qemu-virt, rpi4, generic) and detection
pub mod bootargs; // `loglevel=` and `baton.test=` from /chosen/bootargs
pub mod bootinfo; // BootInfo, Region, RegionList: everything the FDT told us
pub mod exit; // exit status codes shared with the QEMU tests
pub mod fdt; // the one FDT walk: header checks, fdt-rs tokens, BootInfo
pub mod handover; // placing the next image, its FDT and initrd inside scratch
pub mod image; // arm64 Image headers: checks on the next image, the build stamp
pub mod memmap; // BootInfo -> Memblock and the MMU's RAM/device ranges

pub use boards::{BoardKind, BoardSource};
pub use bootinfo::{BootInfo, ConsoleInfo, Region, RegionList};
pub use fdt::FdtError;

pub mod workload; // issue 4: the handover soak workload (target-free, host-tested)
