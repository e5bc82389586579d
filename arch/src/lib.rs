//! AArch64 support for baton: everything that needs the CPU itself.
//!
//! Owns the Image header and entry code, self-relocation, exception-level handling, the
//! exception vectors, the MMU and caches, cache maintenance, the handover trampoline, the
//! generic timer, the PSCI and semihosting calls, and the early lock (no exclusives while the
//! MMU is off). Target-only code is compiled only for `target_arch = "aarch64"`; the
//! table-building and decoding logic also builds on the host.
#![cfg_attr(not(test), no_std)]

pub mod cache; // cache maintenance by VA and by set/way
pub mod cpuid; // the CPU's physical address range (PARange) and the identity map's limit
pub mod el; // exception levels: the entry EL recorded at boot, the EL2 stub protocol
pub mod entry; // Image header, entry code, EL drop, relocation, BSS, stacks
pub mod exceptions; // vector table, register dump, semihosting probe
pub mod handover; // jump_to_image: the identity-mapped trampoline into the next image
pub mod mmu; // identity-map page tables and MMU enable
pub mod psci; // PSCI SYSTEM_OFF / SYSTEM_RESET through hvc or smc
pub mod regs; // field definitions for register bits aarch64-cpu leaves unnamed
pub mod semihosting; // SYS_EXIT and SYS_WRITE0 through `hlt #0xf000`
pub mod sync; // EarlyMutex: a lock without exclusives while the MMU is off
pub mod timer; // generic timer: counter and frequency

pub use el::ExceptionLevel;
pub use exceptions::ExceptionFrame;
pub use mmu::{MapError, MemAttr, PageTableBuilder, TableAlloc};
pub use psci::PsciMethod;
pub use sync::{EarlyMutex, EarlyMutexGuard, EarlyRawMutex};
