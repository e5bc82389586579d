//! The kernel proper (target only): boot sequence, console logger, memory bring-up, heap,
//! exit and the fatal paths.

mod boot; // kernel_main: the boot sequence, in order
mod exit; // exit status through semihosting, PSCI or the BCM2711 watchdog; panic; fatal exceptions
mod heap; // talc global allocator growing from the frame allocator
mod logger; // `log` backend on the console, stamped with the generic timer
mod memory; // Memblock, page tables and MMU, frame allocator
mod reloc; // the relocation probe: statics holding pointers, checked after relocation
