//! The handover workload (issue 4): one generation of a soak chain per boot, the guest half
//! of the soak (the host half is `tests/src/bin/soak`).
//!
//! Restores and verifies what the previous generation kept, frees a random share, splits
//! some, allocates and preserves new blocks of every kind, checks every page's accounting,
//! and produces the `GEN`/`SOAK`/`FAIL` lines the soak runner parses. Target free: it works
//! on `mm`, `kho` and a `kho::PhysMem`, nothing else (no board, no arch); the kernel
//! (`board/kernel`) prints, times and jumps.
//!
//! Per boot, the kernel does (`tests::Chain::boot` is the host model of exactly this):
//! 1. `boot_ticks` = generic counter at entry; `cfg = Config::from_bootargs(bootargs,
//!    mm::MAX_ORDER)` (on error print [`ConfigError::to_failure`], exit non-zero).
//! 2. Warm: `kho::read_scratch`, reserve those areas, `kho::probe` (validate + reserve; on
//!    error kho logs the failed check and the boot is cold), build the `FrameAllocator`,
//!    `reserved.attach(&mut fa)` → `Some(incoming)`. Cold: new scratch, `None`.
//!    Then `kho::Kho::new(mem, &mut fa, scratch)`.
//! 3. `run_generation(&cfg, &mut fa, &mem, incoming, &mut kho, &Clock { boot_ticks, freq },
//!    before_work)`, `before_work` checking the next image and boot FDT after the restore,
//!    before anything is preserved (not inside this handover's blackout): `Ok(outcome)` → print `outcome.report` (a `GEN` line); `Err(f)` → print `f` (a `FAIL`
//!    line), exit non-zero.
//! 4. If `cfg.is_last()`: print `outcome.soak()` (`SOAK`), exit 0. Otherwise
//!    `outcome.seal(&mem, now_ticks)`, `h = kho.finalize(&mut fa)`, and if
//!    `cfg.damage_now()` is `Some(kind)`, `h = damage::inject(kind, &mem, &h, alloc_page)`;
//!    `args = next_bootargs(bootargs, &outcome.carried())`; `kho::bootfdt::rewrite` the boot
//!    FDT with `h.kho_fdt`, `h.scratch_array` and `args`; jump.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod bulk; // the scaled preserved set: baton.preserve= / baton.shape=
pub mod config; // baton.* bootargs: seed, chain length, counters, damage spec
pub mod damage; // test-only corruption of the outgoing handover data
pub mod engine; // run_generation: restore, verify, free, split, allocate, preserve, account
pub mod hooks; // the one interface the kernel uses: Generation and the jump's hooks
pub mod ledger; // the page ledger a generation must balance against mm's stats
pub mod pattern; // fill patterns, checksums, raw block access
pub mod record; // the workload's client sub-FDT: what was kept
pub mod report; // GEN / SOAK / FAIL lines
pub mod rng; // SplitMix64 per (seed, generation)
pub mod state; // page state per block kind: checks and frees

#[cfg(test)]
mod tests; // host chains over an arena: many generations, cross-version, every damage kind

pub use config::{next_bootargs, Carried, Config, ConfigError};
pub use damage::DamageKind;
pub use engine::{run_generation, stamp, Clock, GenOutcome, Stamp, TIMING_BYTES};
pub use hooks::Generation;
pub use record::{Kind, Record, RecordError};
pub use report::{Check, Failure, GenField, GenReport, GenValue, Phases, SoakReport, GEN_FIELDS};
