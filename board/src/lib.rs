//! The baton image's board layer: what the machine is and what the firmware told us.
//!
//! Target-free and host-tested: the FDT is parsed once into a [`BootInfo`], boards are
//! detected from the root `compatible` and described by data ([`boards`]), the command
//! line is parsed once into typed values ([`cmdline`]), the boot memory map becomes an
//! `mm::Memblock`, and the next image is placed in scratch. It knows nothing of the workload; the kernel binary (`board/kernel/`) wires it
//! to `arch`, `drivers`, `kho` and the workload.
#![cfg_attr(not(test), no_std)]

pub mod boards; // per-board facts (qemu-virt, rpi4, generic) and detection
pub mod bootinfo; // BootInfo, RangeList, LogRange: everything the FDT told us
pub mod cmdline; // the one command line parser: /chosen/bootargs -> typed values
pub mod fdt; // the one FDT walk: header checks, one strict pass, BootInfo
pub mod logline; // the console log line's prefix, without core::fmt's padding
pub mod memmap; // BootInfo -> Memblock and the MMU's RAM/device ranges
pub mod placement; // placing the next image, its FDT and initrd inside scratch
pub mod status; // exit status codes shared with the QEMU tests

pub use boards::{BoardKind, BoardSource};
pub use bootinfo::{BootInfo, ConsoleInfo, LogRange, RangeList};
pub use fdt::BootInfoError;
