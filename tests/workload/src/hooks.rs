//! The one interface between the kernel and its workload: what the kernel asks (the heap
//! budget, the client names the workload writes, the RAM check of the scaled set), the
//! generation it runs, and the hooks around the jump (seal, timing stamps, damage, the next
//! command line, the blobs to clean).
//!
//! The kernel (`board/kernel`) names only [`Generation`], [`GenOutcome`], [`Clock`] and
//! [`Failure`]; records, stamps, damage kinds and the carried counters stay behind these
//! methods. Never touches the CPU or a device: the kernel reads the counter and cleans.

use super::alloc::format;
use super::alloc::string::ToString;
use super::alloc::vec::Vec;
use core::fmt;

use board::cmdline::Cmdline;
use kho::{Handover, Incoming, Kho, PhysMem};
use mm::FrameAllocator;

use super::config::{next_bootargs, Config};
use super::damage;
use super::engine::{self, stamp, Clock, GenOutcome, Stamp, TIMING_BYTES};
use super::record::CLIENT_NAME;
use super::report::{Check, Failure};

/// Heap the workload may use while it holds the frame allocator (the heap cannot grow
/// then): records, kho's maps, the outgoing FDT.
pub const WORKLOAD_HEAP: usize = 4 << 20;

/// Heap per block of the scaled set (`baton.preserve=`): the incoming list, the restored
/// list and kho's outgoing block list, with room to spare.
pub const BULK_HEAP_PER_BLOCK: usize = 96;

/// The client names this workload writes into a handover (a Linux-format handover carrying
/// one of them is not carried on: the workload owns it).
pub const CLIENT_NAMES: [&str; 1] = [CLIENT_NAME];

impl Failure {
    /// A failure of the handover itself (`check=handover`), for the kernel's own steps.
    pub fn handover(generation: u32, detail: impl fmt::Display) -> Self {
        Failure {
            generation,
            check: Check::Handover,
            detail: detail.to_string(),
        }
    }
}

/// This boot's generation as the command line describes it: what the kernel runs.
#[derive(Clone, Debug)]
pub struct Generation {
    cfg: Config,
}

impl Generation {
    /// Takes the `baton.*` values of the command line for an image whose buddy allocator
    /// stops at `max_order`; a refused value is a `check=config` failure.
    pub fn from_cmdline(args: &Cmdline<'_>, max_order: u32) -> Result<Self, Failure> {
        Config::from_cmdline(args, max_order)
            .map(|cfg| Generation { cfg })
            .map_err(|e| e.to_failure())
    }

    /// This generation's number.
    pub fn number(&self) -> u32 {
        self.cfg.generation
    }

    /// The chain's length.
    pub fn generations(&self) -> u32 {
        self.cfg.generations
    }

    /// The chain's seed.
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    /// True if this generation ends the chain (print `SOAK`, exit) instead of handing over.
    pub fn is_last(&self) -> bool {
        self.cfg.is_last()
    }

    /// Client names this workload writes (see [`CLIENT_NAMES`]).
    pub fn client_names(&self) -> &'static [&'static str] {
        &CLIENT_NAMES
    }

    /// Heap to reserve before the generation takes the frame allocator: the base budget
    /// plus the scaled set's block lists on both sides of the handover.
    pub fn heap_budget(&self) -> usize {
        WORKLOAD_HEAP
            + self
                .cfg
                .bulk
                .map_or(0, |s| s.max_blocks() as usize * BULK_HEAP_PER_BLOCK)
    }

    /// Refuses, before any work, a scaled set larger than the RAM it can use: `free` bytes
    /// (deferred frames included) plus the `incoming` preserved bytes it restores, less the
    /// base heap budget. Without `baton.preserve=` always `Ok`.
    pub fn check_ram(&self, free: u64, incoming: u64) -> Result<(), Failure> {
        if self.cfg.bulk.is_none() {
            return Ok(());
        }
        let usable = (free + incoming).saturating_sub(WORKLOAD_HEAP as u64);
        self.cfg.check_ram(usable).map_err(|e| e.to_failure())
    }

    /// Runs the generation (restore, verify, `before_work`, free, split, allocate,
    /// preserve, account): see [`engine::run_generation`].
    pub fn run<M: PhysMem + ?Sized, K: PhysMem>(
        &self,
        fa: &mut FrameAllocator<'_>,
        mem: &M,
        incoming: Option<Incoming>,
        out: &mut Kho<K>,
        clock: &Clock,
        before_work: &mut dyn FnMut() -> Result<(), Failure>,
    ) -> Result<GenOutcome, Failure> {
        engine::run_generation(&self.cfg, fa, mem, incoming, out, clock, before_work)
    }

    /// The damage `baton.damage=` asks of this generation's outgoing handover, by name
    /// (for the kernel's log), if any.
    pub fn damage_now(&self) -> Option<impl fmt::Display> {
        self.cfg.damage_now()
    }

    /// Damages the finalized handover `h` as [`Generation::damage_now`] says and returns
    /// what `/chosen` must name; `h` unchanged without damage. `alloc_page` gives a page
    /// outside scratch.
    pub fn damage<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        h: Handover,
        alloc_page: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<Handover, Failure> {
        let Some(kind) = self.cfg.damage_now() else {
            return Ok(h);
        };
        damage::inject(kind, mem, &h, alloc_page)
            .map_err(|e| Failure::handover(self.cfg.generation, format!("damage {kind}: {e}")))
    }
}

impl GenOutcome {
    /// Stamps the moment `Kho::finalize` returned into the timing slot.
    pub fn stamp_finalized<M: PhysMem + ?Sized>(&self, mem: &M, ticks: u64) -> Result<(), Failure> {
        stamp(mem, self.timing_slot(), Stamp::Finalized, ticks)
    }

    /// Stamps the last moment before the trampoline; returns the bytes written (first byte,
    /// length), which the kernel cleans to the point of coherency. A failed stamp only loses
    /// the phase split, never the handover: it is ignored.
    pub fn stamp_jumped<M: PhysMem + ?Sized>(&self, mem: &M, ticks: u64) -> (u64, u64) {
        let _ = stamp(mem, self.timing_slot(), Stamp::Jumped, ticks);
        (self.timing_slot(), TIMING_BYTES)
    }

    /// The next image's command line: this one with the chain's counters carried on.
    pub fn next_bootargs(&self, bootargs: &[u8]) -> Vec<u8> {
        next_bootargs(bootargs, &self.carried())
    }

    /// Client blobs (first byte, length) the next image reads with its MMU off.
    pub fn blobs(&self) -> Vec<(u64, u64)> {
        super::alloc::vec![self.record_blob()]
    }
}
