//! The kernel proper (target only): boot sequence, console logger, memory bring-up, heap,
//! exit and the fatal paths.

mod boot; // kernel_main: the boot sequence, in order
mod chain; // one generation of the handover chain: workload, finalize, next image
mod exit; // exit status through semihosting, PSCI or the BCM2711 watchdog; panic; fatal exceptions
mod handover; // kho at boot (scratch, probe) and the jump into the next image
mod heap; // talc global allocator growing from the frame allocator
mod logger; // `log` backend on the console, stamped with the generic timer
mod memory; // Memblock, page tables and MMU, frame allocator
mod physmem; // kho::PhysMem over the identity map
mod reloc; // the relocation probe: statics holding pointers, checked after relocation
