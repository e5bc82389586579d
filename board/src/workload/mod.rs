//! The handover workload (issue 4): one generation of a soak chain per boot.
//!
//! Restores and verifies what the previous generation kept, frees a random share, splits
//! some, allocates and preserves new blocks of every kind, checks every page's accounting,
//! and produces the `GEN`/`SOAK`/`FAIL` lines the soak runner parses. Target free: it works
//! on `mm`, `kho` and a `kho::PhysMem`; the kernel prints, times and jumps.
//!
//! Per boot, the kernel calls (see [`engine`] for the details):
//! 1. [`Config::from_bootargs`] on the incoming command line;
//! 2. `kho::incoming::probe` + `attach` (or nothing on a cold boot), `kho::Kho::new`;
//! 3. [`run_generation`] → [`GenOutcome`] (print `outcome.report`) or [`Failure`] (print it,
//!    exit non-zero);
//! 4. on the last generation print [`GenOutcome::soak`] and exit 0; otherwise
//!    [`GenOutcome::seal`], `Kho::finalize`, [`damage::inject`] if [`Config::damage_now`],
//!    [`next_bootargs`] with [`GenOutcome::carried`], `kho::bootfdt::rewrite`, jump.
// `x % n != 0` stays: the workspace MSRV (1.85) predates `is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

extern crate alloc;

pub mod config; // baton.* bootargs: seed, chain length, counters, damage spec
pub mod damage; // test-only corruption of the outgoing handover data
pub mod engine; // run_generation: restore, verify, free, split, allocate, preserve, account
pub mod ledger; // the page ledger a generation must balance against mm's stats
pub mod pattern; // fill patterns, checksums, raw block access
pub mod record; // the workload's client sub-FDT: what was kept
pub mod report; // GEN / SOAK / FAIL lines
pub mod rng; // SplitMix64 per (seed, generation)
pub mod state; // page state per block kind: checks and frees

#[cfg(test)]
mod tests; // host chains over an arena: many generations, cross-version, every damage kind

pub use config::{next_bootargs, Carried, Config, ConfigError};
pub use damage::{DamageError, DamageKind};
pub use engine::{run_generation, Clock, GenOutcome};
pub use record::{Kind, Record, RecordError};
pub use report::{Check, Failure, GenReport, SoakReport};
