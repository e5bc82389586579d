//! One generation of the soak workload: restore + verify, free/split, allocate + preserve, account.
//!
//! Owns the generation's choices (all from the per-generation RNG), the per-kind page-state
//! checks, and the page ledger that must match `mm`'s statistics. Changes page state only
//! through `mm` and `kho` calls; touches bytes only inside blocks it holds.
//!
//! Accounting: the page ledger (`ledger`) must balance against mm's statistics. Across
//! generations: the pages the previous image handed over are exactly its recorded
//! `preserved-pages` plus the record's own pages, and this generation's `preserved_pages` is
//! the previous figure minus what it freed plus what it added, which must also be what kho's
//! trees hold (plus the record).

use super::alloc::format;
use super::alloc::string::String;
use super::alloc::vec::Vec;

use kho::Incoming;
use kho::{Kho, PhysMem};
use mm::{FrameAllocator, MmError, PageFlags, Pfn, PhysAddr, PAGE_SIZE};

use super::bulk::{self, Totals};
use super::config::{Carried, Config};
use super::ledger::Ledger;
use super::pattern::{self, pattern_seed};
use super::record::{Entry, Kind, Record, CLIENT_NAME};
use super::report::{Check, Failure, GenReport, Phases, SoakReport};
use super::rng::Rng;
use super::state::{self, mm_failure};

/// Percent of restored blocks freed each generation.
pub const FREE_PERCENT: u64 = 40;
/// Percent of kept CONTIG blocks split through `split_preserved_pages`.
pub const SPLIT_PERCENT: u64 = 30;
/// Most restored blocks kept; beyond this every further one is freed (bounds memory).
pub const MAX_KEPT: usize = 12;
/// Largest record blob accepted from the previous image (a full record is ~50 KiB).
pub const MAX_RECORD_SIZE: u64 = 1 << 20;
/// Most restored pages kept (8 MiB); a block that would go beyond is freed.
pub const MAX_KEPT_PAGES: u64 = 2048;
/// Largest folio order allocated.
pub const MAX_FOLIO_ORDER: u32 = 6;

/// The generic timer as the kernel read it, at the boot steps that cut the blackout.
#[derive(Copy, Clone, Debug)]
pub struct Clock {
    /// Counter value at this image's entry.
    pub boot_ticks: u64,
    /// Counter frequency in Hz (`CNTFRQ_EL0`).
    pub freq: u64,
    /// Counter when kho's validation of the previous handover was done.
    pub validated: u64,
    /// Counter when the frame allocator was built around the preserved ranges.
    pub frames: u64,
    /// Counter when the allocator was usable (blocks stashed, heap grown).
    pub ready: u64,
    /// Reads the counter now.
    pub now: fn() -> u64,
}

impl Clock {
    /// Ticks from `from` to `to` in µs (0 if the counter went backwards).
    pub fn us(&self, from: u64, to: u64) -> u64 {
        let ticks = u128::from(to.saturating_sub(from));
        u64::try_from(ticks * 1_000_000 / u128::from(self.freq.max(1))).unwrap_or(u64::MAX)
    }
}

/// Marks the timing slot: `BTNTIME1`, then the counter at finalize and at the jump.
pub const TIMING_MAGIC: u64 = u64::from_le_bytes(*b"BTNTIME1");
/// Bytes of the timing slot, which follows the record (8-byte aligned) in its pages.
pub const TIMING_BYTES: u64 = 24;

/// The old image's moments after the record is sealed, written into the timing slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// `Kho::finalize` returned.
    Finalized = 1,
    /// The last instruction before the trampoline.
    Jumped = 2,
}

/// Writes `ticks` as `which` into the timing slot at `slot` ([`GenOutcome::timing_slot`]).
pub fn stamp<M: PhysMem + ?Sized>(
    mem: &M,
    slot: u64,
    which: Stamp,
    ticks: u64,
) -> Result<(), Failure> {
    pattern::write_bytes(mem, slot + 8 * which as u64, &ticks.to_le_bytes()).map_err(|e| Failure {
        generation: 0,
        check: Check::Record,
        detail: format!("writing the timing slot at {slot:#x}: {e}"),
    })
}

/// A generation that passed: its report, and what the handover still needs.
#[derive(Debug)]
pub struct GenOutcome {
    /// The `GEN` line.
    pub report: GenReport,
    carried: Carried,
    record: Record,
    /// Record blob: first byte and encoded size.
    record_at: (u64, u64),
    generations: u32,
}

impl GenOutcome {
    /// Totals for the next image's command line (`next_bootargs`).
    pub fn carried(&self) -> Carried {
        self.carried
    }

    /// The `SOAK` line after this generation (print it when `Config::is_last`).
    pub fn soak(&self) -> SoakReport {
        SoakReport {
            generations: self.generations,
            cold: self.carried.cold,
            verified_bytes: self.carried.verified_bytes,
            leaked: self.carried.leaked,
            ok: self.carried.leaked == 0,
        }
    }

    /// Where the record blob lives: first byte and size.
    pub fn record_blob(&self) -> (u64, u64) {
        self.record_at
    }

    /// The timing slot: [`TIMING_BYTES`] in the record's preserved pages, after the record.
    /// `seal` writes its magic; the kernel stamps it with [`stamp`].
    pub fn timing_slot(&self) -> u64 {
        timing_slot(self.record_at.0, self.record_at.1)
    }

    /// The record as it will be (or was) written.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Writes the record, stamped with `now_ticks`, into its preserved pages. Call it just
    /// before `Kho::finalize` (the timestamp is where the next image's `handover_us` starts).
    pub fn seal<M: PhysMem + ?Sized>(&mut self, mem: &M, now_ticks: u64) -> Result<(), Failure> {
        let n = self.report.n;
        self.record.timestamp = now_ticks;
        let bytes = self
            .record
            .encode()
            .map_err(|e| fail(n, Check::Record, format!("encoding the record: {e}")))?;
        if bytes.len() as u64 != self.record_at.1 {
            return Err(fail(
                n,
                Check::Record,
                format!(
                    "record grew from {} to {} bytes after it was preserved",
                    self.record_at.1,
                    bytes.len()
                ),
            ));
        }
        pattern::write_bytes(mem, self.record_at.0, &bytes)
            .map_err(|e| fail(n, Check::Record, format!("writing the record: {e}")))?;
        let mut slot = [0u8; TIMING_BYTES as usize];
        slot[..8].copy_from_slice(&TIMING_MAGIC.to_le_bytes());
        pattern::write_bytes(mem, self.timing_slot(), &slot)
            .map_err(|e| fail(n, Check::Record, format!("writing the timing slot: {e}")))
    }
}

/// Where the timing slot of a record at `phys` of `size` bytes is.
fn timing_slot(phys: u64, size: u64) -> u64 {
    (phys + size).next_multiple_of(8)
}

/// The previous image's finalize and jump moments, if it wrote them.
type Stamps = Option<(u64, u64)>;

/// The previous image's finalize and jump moments from its timing slot, if it wrote them.
fn read_stamps<M: PhysMem + ?Sized>(mem: &M, phys: u64, size: u64) -> Stamps {
    let b = pattern::read_bytes(mem, timing_slot(phys, size), TIMING_BYTES).ok()?;
    let word = |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
    (word(0) == TIMING_MAGIC).then(|| (word(1), word(2)))
}

fn fail(generation: u32, check: Check, detail: String) -> Failure {
    Failure {
        generation,
        check,
        detail,
    }
}

/// The running generation.
struct Gen<'c, 'f, 'a, M: PhysMem + ?Sized> {
    cfg: &'c Config,
    fa: &'f mut FrameAllocator<'a>,
    mem: &'c M,
    rng: Rng,
    led: Ledger,
    report: GenReport,
}

fn pfn_of(phys: u64) -> Pfn {
    PhysAddr(phys).pfn()
}

fn order_for(pages: u64) -> u32 {
    pages.max(1).next_power_of_two().trailing_zeros()
}

impl<M: PhysMem + ?Sized> Gen<'_, '_, '_, M> {
    fn fail(&self, check: Check, detail: String) -> Failure {
        fail(self.cfg.generation, check, detail)
    }

    fn mm(&self, check: Check, what: &str, e: MmError) -> Failure {
        let (check, detail) = mm_failure(check, what, e);
        self.fail(check, detail)
    }

    /// Checks the page state of a restored (or kept) block against its kind.
    fn check_state(&self, e: &Entry) -> Result<(), Failure> {
        state::check(self.fa, e).map_err(|(check, detail)| self.fail(check, detail))
    }

    /// Frees a held block the way its kind is freed.
    fn free_entry(&mut self, e: &Entry) -> Result<(), Failure> {
        state::free(self.fa, e).map_err(|(check, detail)| self.fail(check, detail))?;
        self.led.freed += e.pages;
        Ok(())
    }

    /// Frees a restored range whose exact blocks only mm knows (the previous record blob).
    fn free_restored_range(&mut self, phys: u64, pages: u64) -> Result<(), Failure> {
        let mut at = pfn_of(phys);
        let end = at.add(pages);
        while at < end {
            let f = self
                .fa
                .page_flags(at)
                .map_err(|e| self.mm(Check::Free, "record page flags", e))?;
            let order = if f.contains(PageFlags::SPLIT) {
                0
            } else {
                self.fa
                    .page_order(at)
                    .map_err(|e| self.mm(Check::Free, "record page order", e))?
            };
            let r = if f.contains(PageFlags::SPLIT) {
                self.fa.put_page(at)
            } else {
                self.fa.free_pages(at, order)
            };
            r.map_err(|e| self.mm(Check::Free, "freeing the previous record", e))?;
            at = at.add(1 << order);
        }
        self.led.freed += pages;
        Ok(())
    }

    /// Step 1: restores every recorded block and the scaled set (the blackout ends there),
    /// then verifies each one's page state and bytes, and that the handover held nothing
    /// else. Returns them and the record.
    fn restore(
        &mut self,
        mut inc: Incoming,
        clock: &Clock,
    ) -> Result<(Record, Vec<Entry>, bulk::BlockList), Failure> {
        self.report.blocks = inc.unclaimed() as u64;
        let handed = inc.unclaimed_pages();
        let (rec, rpages, stamps) = self.restore_record(&mut inc)?;
        let held = self.restore_entries(&mut inc, &rec)?;
        // What is left is the scaled set, if the record declares one.
        let mut bulk_runs = Vec::new();
        if rec.bulk != Totals::default() {
            let (runs, pages) =
                bulk::restore(&mut inc, self.fa).map_err(|(c, d)| self.fail(c, d))?;
            self.led.claimed += pages;
            bulk_runs = runs;
        }
        // Every preserved block is back: the blackout ends here.
        let restored_at = (clock.now)();
        self.time_blackout(&rec, stamps, clock, restored_at);
        let mut bulk_held = bulk::held(&inc, &bulk_runs);
        self.verify_restored(&held, &mut bulk_held, clock, restored_at)?;
        self.check_nothing_else(&inc, &rec, &bulk_held, rpages, handed)?;
        let meta = inc
            .finish(self.fa)
            .map_err(|e| self.fail(Check::Restore, format!("releasing handover metadata: {e}")))?;
        self.led.released += meta;
        Ok((rec, held, bulk_held))
    }

    /// Restores, reads and frees the previous image's record (client [`CLIENT_NAME`]) and
    /// checks it belongs to this chain. Returns it, its pages, and its timing stamps.
    fn restore_record(&mut self, inc: &mut Incoming) -> Result<(Record, u64, Stamps), Failure> {
        let (rphys, rsize) = inc.client(CLIENT_NAME).ok_or_else(|| {
            self.fail(
                Check::Record,
                format!("no client {CLIENT_NAME} in the handover"),
            )
        })?;
        if rsize > MAX_RECORD_SIZE {
            return Err(self.fail(
                Check::Record,
                format!("record at {rphys:#x} is {rsize} bytes, at most {MAX_RECORD_SIZE}"),
            ));
        }
        let rpages = (rphys % PAGE_SIZE + rsize).div_ceil(PAGE_SIZE);
        let rstart = rphys & !(PAGE_SIZE - 1);
        inc.restore_pages(self.fa, rstart, rpages).map_err(|e| {
            self.fail(
                Check::Record,
                format!("restoring the record at {rphys:#x}: {e}"),
            )
        })?;
        self.led.claimed += rpages;
        let bytes = pattern::read_bytes(self.mem, rphys, rsize)
            .map_err(|e| self.fail(Check::Record, format!("reading the record: {e}")))?;
        let stamps = read_stamps(self.mem, rphys, rsize);
        self.free_restored_range(rstart, rpages)?;
        let rec = Record::decode(&bytes).map_err(|e| self.fail(Check::Record, format!("{e}")))?;
        let cfg = self.cfg;
        if rec.generation.checked_add(1) != Some(cfg.generation) || rec.seed != cfg.seed {
            return Err(self.fail(
                Check::Record,
                format!(
                    "record of generation {} seed {:#x}, expected generation {} seed {:#x}",
                    rec.generation,
                    rec.seed,
                    cfg.generation.wrapping_sub(1),
                    cfg.seed
                ),
            ));
        }
        let total = self.fa.stats().total;
        if rec.total_pages != total {
            return Err(self.fail(
                Check::Accounting,
                format!("total pages {} became {total}", rec.total_pages),
            ));
        }
        Ok((rec, rpages, stamps))
    }

    /// Restores every block the record lists, after checking its pattern is the chain's.
    fn restore_entries(&mut self, inc: &mut Incoming, rec: &Record) -> Result<Vec<Entry>, Failure> {
        let cfg = self.cfg;
        let mut held = Vec::with_capacity(rec.entries.len());
        for e in &rec.entries {
            let want = pattern_seed(cfg.seed, e.fill_gen, e.phys);
            if e.pattern != want || e.fill_gen >= cfg.generation {
                return Err(self.fail(
                    Check::Record,
                    format!(
                        "entry {:#x}: pattern {:#x} of generation {} is not the chain's",
                        e.phys, e.pattern, e.fill_gen
                    ),
                ));
            }
            let r = match e.kind {
                // A folio of another order than recorded fails `check_state` below.
                Kind::Folio => inc.restore_folio(self.fa, e.phys).map(|_| ()),
                _ => inc.restore_pages(self.fa, e.phys, e.pages),
            };
            r.map_err(|err| {
                self.fail(
                    Check::Restore,
                    format!("{} at {:#x} ({} pages): {err}", e.kind, e.phys, e.pages),
                )
            })?;
            self.led.claimed += e.pages;
            held.push(*e);
        }
        Ok(held)
    }

    /// The blackout and its phases, when the previous image's counter ran at this one's
    /// frequency.
    fn time_blackout(&mut self, rec: &Record, stamps: Stamps, clock: &Clock, restored_at: u64) {
        if rec.timer_freq != clock.freq {
            return;
        }
        self.report.handover_us = clock.us(rec.timestamp, restored_at);
        let (finalized, jumped) = stamps.unwrap_or((rec.timestamp, rec.timestamp));
        self.report.phases = Phases {
            finalize_us: clock.us(rec.timestamp, finalized),
            copyout_us: clock.us(finalized, jumped),
            trampoline_us: clock.us(jumped, clock.boot_ticks),
            early_us: clock.us(clock.boot_ticks, clock.validated),
            reserve_us: clock.us(clock.validated, clock.frames),
            ready_us: clock.us(clock.frames, clock.ready),
            restore_us: clock.us(clock.ready, restored_at),
        };
    }

    /// Verifies every restored block's page state and bytes.
    fn verify_restored(
        &mut self,
        held: &[Entry],
        bulk_held: &mut bulk::BlockList,
        clock: &Clock,
        restored_at: u64,
    ) -> Result<(), Failure> {
        let cfg = self.cfg;
        for e in held {
            self.check_state(e)?;
            pattern::verify(self.mem, e.phys, e.len, e.pattern, e.checksum).map_err(|err| {
                self.fail(
                    Check::Verify,
                    format!("{} of generation {}: {err}", e.kind, e.fill_gen),
                )
            })?;
            self.report.restored += 1;
            self.report.verified_bytes += e.len;
        }
        for b in bulk_held.iter_mut() {
            bulk::verify(self.fa, self.mem, cfg.seed, cfg.generation, b)
                .map_err(|(c, d)| self.fail(c, d))?;
            self.report.verified_bytes += PAGE_SIZE << b.order;
        }
        self.report.verify_us = clock.us(restored_at, (clock.now)());
        Ok(())
    }

    /// The handover held exactly the record, its entries and the scaled set: anything more
    /// is a leak, anything less an accounting error.
    fn check_nothing_else(
        &mut self,
        inc: &Incoming,
        rec: &Record,
        bulk_held: &bulk::BlockList,
        rpages: u64,
        handed: u64,
    ) -> Result<(), Failure> {
        let found = Totals::of(bulk_held);
        if found != rec.bulk {
            let extra = found.pages.saturating_sub(rec.bulk.pages);
            self.report.leaked += extra;
            let check = if extra > 0 {
                Check::Leak
            } else {
                Check::Accounting
            };
            return Err(self.fail(check, bulk::mismatch(&found, &rec.bulk)));
        }
        let stray: Vec<_> = inc.unclaimed_blocks().collect();
        if let Some(b) = stray.first() {
            let pages: u64 = stray.iter().map(|b| 1u64 << b.order).sum();
            self.report.leaked += pages;
            return Err(self.fail(
                Check::Leak,
                format!(
                    "{} preserved blocks ({pages} pages) not in the record, first {:#x} order {}",
                    stray.len(),
                    b.phys,
                    b.order
                ),
            ));
        }
        if rec.preserved_pages + rpages + rec.bulk.pages != handed {
            return Err(self.fail(
                Check::Accounting,
                format!(
                    "handover held {handed} pages, record says {} + {} scaled + {rpages} for itself",
                    rec.preserved_pages, rec.bulk.pages
                ),
            ));
        }
        Ok(())
    }

    /// Allocates a block: `alloc_folio` or `alloc_pages`.
    fn alloc(&mut self, order: u32, folio: bool) -> Result<Pfn, Failure> {
        let r = if folio {
            self.fa.alloc_folio(order)
        } else {
            self.fa.alloc_pages(order)
        };
        let pfn = r.map_err(|e| self.mm(Check::Alloc, &format!("order-{order} block"), e))?;
        self.led.allocated += 1 << order;
        Ok(pfn)
    }

    /// Fills a new block and returns its entry.
    fn fill(&self, phys: u64, pages: u64, len: u64, kind: Kind) -> Result<Entry, Failure> {
        let pat = pattern_seed(self.cfg.seed, self.cfg.generation, phys);
        let checksum = pattern::fill(self.mem, phys, len, pat)
            .map_err(|e| self.fail(Check::Alloc, format!("filling {kind} at {phys:#x}: {e}")))?;
        Ok(Entry {
            phys,
            pages,
            len,
            kind,
            fill_gen: self.cfg.generation,
            pattern: pat,
            checksum,
        })
    }

    /// Step 3: one new block of every kind, filled.
    fn allocate_new(&mut self) -> Result<Vec<Entry>, Failure> {
        let max = self.cfg.max_order;
        let mut v = Vec::new();
        for _ in 0..2 {
            let order = self.rng.range(0, u64::from(max.min(MAX_FOLIO_ORDER))) as u32;
            let pfn = self.alloc(order, true)?;
            v.push(self.fill(pfn.phys().0, 1 << order, PAGE_SIZE << order, Kind::Folio)?);
        }
        // Every even generation allocates a CONTIG block of the image's largest order (4 MiB
        // at order 10): an A -> B -> A chain hands it to an image that stops at order 8.
        let order = if self.cfg.generation.is_multiple_of(2) {
            max
        } else {
            self.rng.range(2, u64::from(max.min(8))) as u32
        };
        let pfn = self.alloc(order, false)?;
        v.push(self.fill(pfn.phys().0, 1 << order, PAGE_SIZE << order, Kind::Contig)?);

        let order = self.rng.range(1, 5) as u32;
        let pfn = self.alloc(order, false)?;
        self.fa
            .split_page(pfn, order)
            .map_err(|e| self.mm(Check::Split, "split_page", e))?;
        v.push(self.fill(pfn.phys().0, 1 << order, PAGE_SIZE << order, Kind::Split)?);

        // An odd number of pages with an odd byte length: split a block, free the surplus.
        let pages = 2 * self.rng.range(1, 18) + 1;
        let order = order_for(pages);
        let pfn = self.alloc(order, false)?;
        self.fa
            .split_page(pfn, order)
            .map_err(|e| self.mm(Check::Split, "split_page", e))?;
        for i in pages..(1 << order) {
            self.fa
                .put_page(pfn.add(i))
                .map_err(|e| self.mm(Check::Free, "surplus page", e))?;
            self.led.freed += 1;
        }
        let len = pages * PAGE_SIZE - 2 * self.rng.below(PAGE_SIZE / 2) - 1;
        v.push(self.fill(pfn.phys().0, pages, len, Kind::PhysRange)?);

        let order = self.rng.range(1, 5) as u32;
        let pfn = self.alloc(order, false)?;
        // Preserved as CONTIG first, split after: `preserve_all` handles the order of calls.
        v.push(self.fill(
            pfn.phys().0,
            1 << order,
            PAGE_SIZE << order,
            Kind::SplitAfterPreserve,
        )?);
        Ok(v)
    }

    /// Preserves one block the way its kind is preserved. `SplitAfterPreserve` blocks that are
    /// not split yet are preserved CONTIG and then split.
    fn preserve<K: PhysMem>(
        &mut self,
        out: &mut Kho<K>,
        e: &Entry,
        split_now: bool,
    ) -> Result<(), Failure> {
        let pfn = pfn_of(e.phys);
        let r = match e.kind {
            Kind::Folio => out.preserve_folio(self.fa, pfn),
            Kind::PhysRange => out.preserve_phys(self.fa, e.phys, e.pages * PAGE_SIZE),
            _ => out.preserve_pages(self.fa, pfn, e.pages),
        };
        r.map_err(|err| {
            self.fail(
                Check::Preserve,
                format!("{} at {:#x} ({} pages): {err}", e.kind, e.phys, e.pages),
            )
        })?;
        if split_now {
            out.split_preserved_pages(self.fa, pfn, e.order())
                .map_err(|err| {
                    self.fail(
                        Check::Split,
                        format!(
                            "split_preserved_pages {:#x} order {}: {err}",
                            e.phys,
                            e.order()
                        ),
                    )
                })?;
            let t = out.block_type(e.phys, e.order());
            if t != Ok(Some(kho::BlockType::Split)) {
                return Err(self.fail(
                    Check::Split,
                    format!("block {:#x} recorded as {t:?} after split", e.phys),
                ));
            }
            self.report.split += 1;
            let split = Entry {
                kind: Kind::SplitAfterPreserve,
                ..*e
            };
            self.check_state(&split)?;
        }
        Ok(())
    }
}

/// Runs steps 1-4 of one generation.
///
/// `incoming` is the attached handover of the previous image, `None` on a cold boot (first
/// boot, or the handover was rejected: the caller logged why). `out` is this image's fresh
/// outgoing handover; `mem` reaches the blocks' bytes. `before_work` runs once, after the
/// restore (its blackout stamped, the rest of RAM free) and before anything is freed,
/// allocated or preserved: the caller's checks for the next handover, whose refusal is
/// returned as is. On success every kept and new block is preserved in `out`, the record's
/// pages are preserved and named as client [`CLIENT_NAME`]; the caller seals, finalizes
/// and hands over.
pub fn run_generation<M: PhysMem + ?Sized, K: PhysMem>(
    cfg: &Config,
    fa: &mut FrameAllocator<'_>,
    mem: &M,
    incoming: Option<Incoming>,
    out: &mut Kho<K>,
    clock: &Clock,
    before_work: &mut dyn FnMut() -> Result<(), Failure>,
) -> Result<GenOutcome, Failure> {
    let start = Start {
        stats: fa.stats(),
        tree_pages: out.tree_pages() as u64,
        // Pages `out` held before this generation: what the kernel carries for another
        // owner (docs/abi.md §10.4). The workload accounts for its own pages on top of them.
        carried: out.preserved_pages().map_err(|e| Failure {
            generation: cfg.generation,
            check: Check::Accounting,
            detail: format!("listing carried blocks: {e}"),
        })?,
    };
    let mut g = Gen {
        cfg,
        fa,
        mem,
        rng: Rng::for_generation(cfg.seed, cfg.generation),
        led: Ledger::default(),
        report: GenReport {
            n: cfg.generation,
            cold: incoming.is_none(),
            ..GenReport::default()
        },
    };

    // 1. Restore and verify; then the rest of RAM joins the free lists.
    let (prev_pages, restored, bulk_restored) = match incoming {
        Some(inc) => {
            let (rec, held, bulk_held) = g.restore(inc, clock)?;
            (rec.preserved_pages, held, bulk_held)
        }
        None => (0, Vec::new(), bulk::BlockList::default()),
    };
    let t = (clock.now)();
    g.fa.init_deferred(usize::MAX);
    g.report.deferred_us = clock.us(t, (clock.now)());
    // This handover is received; what comes next prepares the next one.
    before_work()?;

    // 2. Free a random share; churn and top up the scaled set.
    let (kept, freed_pages) = g.free_share(restored)?;
    let bulk_totals = g.churn_bulk(bulk_restored, out)?;

    // 3. Allocate, fill, preserve, record.
    let new = g.allocate_new()?;
    let new_pages: u64 = new.iter().map(|e| e.pages).sum();
    let entries = g.preserve_entries(out, kept, new)?;
    let preserved_pages: u64 = entries.iter().map(|e| e.pages).sum();
    let mut record = Record {
        generation: cfg.generation,
        seed: cfg.seed,
        max_order: cfg.max_order,
        timestamp: 0,
        timer_freq: clock.freq,
        total_pages: start.stats.total,
        preserved_pages,
        entries,
        bulk: bulk_totals,
    };
    let (rphys, size, rpages) = g.preserve_record(out, &record)?;

    // 4. Account for every page.
    let expect_preserved = prev_pages - freed_pages + new_pages;
    if preserved_pages != expect_preserved {
        return Err(g.fail(
            Check::Accounting,
            format!("preserved {preserved_pages} pages, previous {prev_pages} - freed {freed_pages} + new {new_pages} = {expect_preserved}"),
        ));
    }
    let s1 = g.account(out, &start, preserved_pages, bulk_totals.pages, rpages)?;
    g.report.preserved = record.entries.len() as u64;
    g.report.preserved_pages = preserved_pages;
    g.report.free_pages = s1.free;
    g.report.total_pages = s1.total;
    record.total_pages = s1.total;
    let carried = Carried {
        generation: cfg.generation + 1,
        cold: cfg.cold_before + u32::from(g.report.cold),
        verified_bytes: cfg.verified_before + g.report.verified_bytes,
        leaked: cfg.leaked_before + g.report.leaked,
    };
    Ok(GenOutcome {
        report: g.report,
        carried,
        record,
        record_at: (rphys, size),
        generations: cfg.generations,
    })
}

/// What the accounting starts from: mm's statistics, kho's tree pages and the pages `out`
/// carried for others before the generation touched anything.
struct Start {
    stats: mm::Stats,
    tree_pages: u64,
    carried: u64,
}

impl<M: PhysMem + ?Sized> Gen<'_, '_, '_, M> {
    /// Step 2: frees a random share of the restored blocks (and everything this image's
    /// allocator cannot keep whole, or beyond the kept bounds). Returns the kept ones, each
    /// with whether to split it after preserving, and the pages freed.
    fn free_share(&mut self, restored: Vec<Entry>) -> Result<(Vec<(Entry, bool)>, u64), Failure> {
        let cfg = self.cfg;
        let mut kept: Vec<(Entry, bool)> = Vec::new();
        let (mut freed_pages, mut kept_pages) = (0, 0);
        for e in restored {
            let too_big = e.kind != Kind::PhysRange && e.order() > cfg.max_order;
            let full = kept.len() >= MAX_KEPT || kept_pages + e.pages > MAX_KEPT_PAGES;
            if too_big || full || self.rng.chance(FREE_PERCENT) {
                self.free_entry(&e)?;
                self.report.freed += 1;
                freed_pages += e.pages;
            } else {
                let split = e.kind == Kind::Contig && e.pages > 1 && self.rng.chance(SPLIT_PERCENT);
                kept_pages += e.pages;
                kept.push((e, split));
            }
        }
        Ok((kept, freed_pages))
    }

    /// The scaled set: frees a share (all of it without `baton.preserve=`, and what this
    /// image cannot keep whole), tops it up to its size and preserves it. Returns its totals.
    fn churn_bulk<K: PhysMem>(
        &mut self,
        restored: bulk::BlockList,
        out: &mut Kho<K>,
    ) -> Result<Totals, Failure> {
        let cfg = self.cfg;
        let mut kept = bulk::BlockList::default();
        for b in restored.drain() {
            if cfg.bulk.is_none() || b.order > cfg.max_order || self.rng.chance(bulk::CHURN_PERCENT)
            {
                self.led.freed += bulk::free(self.fa, &b).map_err(|(c, d)| self.fail(c, d))?;
            } else {
                kept.push(b);
            }
        }
        if let Some(spec) = &cfg.bulk {
            let moves = bulk::grow(
                self.fa,
                self.mem,
                &mut self.rng,
                spec,
                cfg.seed,
                cfg.generation,
                cfg.max_order,
                &mut kept,
            )
            .map_err(|(c, d)| self.fail(c, d))?;
            self.led.allocated += moves.allocated;
            self.led.freed += moves.freed;
        }
        for b in kept.iter() {
            bulk::preserve(out, self.fa, b).map_err(|(c, d)| self.fail(c, d))?;
        }
        Ok(Totals::of(&kept))
    }

    /// Preserves the kept blocks and the new ones; a block to split is preserved CONTIG
    /// first and recorded as split after preserve. Returns the record's entries.
    fn preserve_entries<K: PhysMem>(
        &mut self,
        out: &mut Kho<K>,
        kept: Vec<(Entry, bool)>,
        new: Vec<Entry>,
    ) -> Result<Vec<Entry>, Failure> {
        let mut entries = Vec::with_capacity(kept.len() + new.len());
        for (e, split) in kept.into_iter().chain(
            new.into_iter()
                .map(|e| (e, e.kind == Kind::SplitAfterPreserve)),
        ) {
            let first = if split {
                Entry {
                    kind: Kind::Contig,
                    ..e
                }
            } else {
                e
            };
            self.preserve(out, &first, split)?;
            entries.push(if split {
                Entry {
                    kind: Kind::SplitAfterPreserve,
                    ..e
                }
            } else {
                e
            });
        }
        Ok(entries)
    }

    /// Allocates and preserves the record's pages (the timing slot follows the record in
    /// them) and names them as client [`CLIENT_NAME`]. Returns (address, encoded size, pages).
    fn preserve_record<K: PhysMem>(
        &mut self,
        out: &mut Kho<K>,
        record: &Record,
    ) -> Result<(u64, u64, u64), Failure> {
        let size = record
            .encode()
            .map_err(|e| self.fail(Check::Record, format!("encoding the record: {e}")))?
            .len() as u64;
        let rorder = order_for((timing_slot(0, size) + TIMING_BYTES).div_ceil(PAGE_SIZE));
        let rpfn = self.alloc(rorder, false)?;
        let rphys = rpfn.phys().0;
        out.preserve_pages(self.fa, rpfn, 1 << rorder)
            .map_err(|e| self.fail(Check::Preserve, format!("record pages at {rphys:#x}: {e}")))?;
        out.add_client(CLIENT_NAME, rphys, size)
            .map_err(|e| self.fail(Check::Preserve, format!("record client: {e}")))?;
        Ok((rphys, size, 1u64 << rorder))
    }

    /// Step 4: kho holds exactly what was carried plus this generation's own pages (record
    /// entries, scaled set, the record itself), and the page ledger balances
    /// against mm's statistics. Returns mm's statistics now.
    fn account<K: PhysMem>(
        &mut self,
        out: &Kho<K>,
        start: &Start,
        preserved_pages: u64,
        bulk_pages: u64,
        rpages: u64,
    ) -> Result<mm::Stats, Failure> {
        let carried = start.carried;
        let in_kho = out
            .preserved_pages()
            .map_err(|e| self.fail(Check::Accounting, format!("listing preserved blocks: {e}")))?;
        if in_kho != carried + preserved_pages + bulk_pages + rpages {
            return Err(self.fail(
                Check::Accounting,
                format!(
                    "kho preserves {in_kho} pages, carried {carried} + the record {preserved_pages} + {bulk_pages} scaled + {rpages} for itself"
                ),
            ));
        }
        let s1 = self.fa.stats();
        let tree = (out.tree_pages() as u64).wrapping_sub(start.tree_pages);
        self.report.bad_pages = s1.bad;
        if let Err(d) = self.led.balance(&start.stats, &s1, tree) {
            self.report.leaked += d.leaked;
            return Err(self.fail(d.check, d.detail));
        }
        Ok(s1)
    }
}
