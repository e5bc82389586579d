//! The soak line protocol: `GEN`, `SOAK` and `FAIL` lines, exactly as the host runner parses them.
//!
//! Owns the three line formats and the names of the checks a generation can fail. Plain
//! values with `Display`; the kernel prints them with `log::info!`/`log::error!`.

use super::alloc::string::String;
use core::fmt;
use core::fmt::Write as _;

/// One generation's figures: `GEN n=.. cold=.. ... handover_us=..`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenReport {
    /// Generation number (0 = first boot).
    pub n: u32,
    /// True if nothing was restored (first boot, or the handover was rejected).
    pub cold: bool,
    /// Blocks restored and verified.
    pub restored: u64,
    /// Bytes verified against their pattern.
    pub verified_bytes: u64,
    /// Restored blocks freed.
    pub freed: u64,
    /// Blocks split through `split_preserved_pages`.
    pub split: u64,
    /// Blocks recorded for the next generation.
    pub preserved: u64,
    /// Pages of those blocks.
    pub preserved_pages: u64,
    /// Free pages at the end of the generation.
    pub free_pages: u64,
    /// RAM pages known to mm (constant over a chain).
    pub total_pages: u64,
    /// Pages unaccounted for.
    pub leaked: u64,
    /// Pages leaked by mm's free-path checks.
    pub bad_pages: u64,
    /// The blackout, in µs of the generic timer (0 when cold): from the previous image
    /// sealing its record to this image having restored every preserved block with its
    /// allocator ready for any request. The sum of the seven phases below.
    pub handover_us: u64,
    /// Preserved blocks the previous image handed over (0 when cold).
    pub blocks: u64,
    /// The blackout's phases, in µs: see [`Phases`].
    pub phases: Phases,
    /// µs checking every restored block's page state and bytes (after the blackout).
    pub verify_us: u64,
    /// µs putting the rest of RAM (deferred descriptors) on the free lists (after the
    /// blackout).
    pub deferred_us: u64,
}

/// The blackout cut at the points where each image reads the generic timer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Old image: record sealed → `Kho::finalize` done.
    pub finalize_us: u64,
    /// Old image: finalized → last instruction before the trampoline (placement, copies of
    /// the next image, initrd and FDT, cache maintenance, console drain).
    pub copyout_us: u64,
    /// Trampoline (MMU and caches off, set/way clean) → the new image's `kernel_main`.
    pub trampoline_us: u64,
    /// New image: entry → kho validation done (FDT, console, memblock, MMU, validation).
    pub early_us: u64,
    /// Validated → frame allocator built around the preserved ranges.
    pub reserve_us: u64,
    /// Allocator built → usable (blocks stashed, heap grown for the workload).
    pub ready_us: u64,
    /// Ready → every preserved block restored by the workload.
    pub restore_us: u64,
}

impl Phases {
    /// The whole blackout.
    pub fn total(&self) -> u64 {
        self.finalize_us
            + self.copyout_us
            + self.trampoline_us
            + self.early_us
            + self.reserve_us
            + self.ready_us
            + self.restore_us
    }
}

/// How a `GEN` value is written: a count in decimal, or a flag as `0`/`1`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GenValue {
    /// A decimal number.
    Count,
    /// `0` or `1`.
    Flag,
}

/// One key of the `GEN` line: its name, how it is written, and where it lives in a
/// [`GenReport`].
#[derive(Copy, Clone)]
pub struct GenField {
    /// The key, as written before `=`.
    pub key: &'static str,
    /// How its value is written.
    pub value: GenValue,
    /// Reads the value (a flag as 0 or 1).
    pub get: fn(&GenReport) -> u64,
    /// Stores a value read back; `false` if it does not fit the field.
    pub set: fn(&mut GenReport, u64) -> bool,
}

macro_rules! count {
    ($key:ident) => {
        GenField {
            key: stringify!($key),
            value: GenValue::Count,
            get: |r| r.$key,
            set: |r, v| {
                r.$key = v;
                true
            },
        }
    };
}

macro_rules! phase {
    ($key:ident) => {
        GenField {
            key: stringify!($key),
            value: GenValue::Count,
            get: |r| r.phases.$key,
            set: |r, v| {
                r.phases.$key = v;
                true
            },
        }
    };
}

/// The `GEN` line's keys in line order: the one definition the guest writes (`Display`)
/// and the host soak runner reads back (`tests/src/bin/soak/protocol.rs`).
pub const GEN_FIELDS: [GenField; 23] = [
    GenField {
        key: "n",
        value: GenValue::Count,
        get: |r| u64::from(r.n),
        set: |r, v| u32::try_from(v).map(|n| r.n = n).is_ok(),
    },
    GenField {
        key: "cold",
        value: GenValue::Flag,
        get: |r| u64::from(r.cold),
        set: |r, v| {
            r.cold = v != 0;
            v <= 1
        },
    },
    count!(restored),
    count!(verified_bytes),
    count!(freed),
    count!(split),
    count!(preserved),
    count!(preserved_pages),
    count!(free_pages),
    count!(total_pages),
    count!(leaked),
    count!(bad_pages),
    count!(handover_us),
    count!(blocks),
    phase!(finalize_us),
    phase!(copyout_us),
    phase!(trampoline_us),
    phase!(early_us),
    phase!(reserve_us),
    phase!(ready_us),
    phase!(restore_us),
    count!(verify_us),
    count!(deferred_us),
];

impl fmt::Display for GenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GEN")?;
        for field in &GEN_FIELDS {
            write!(f, " {}={}", field.key, (field.get)(self))?;
        }
        Ok(())
    }
}

/// The end-of-chain summary: `SOAK generations=.. cold=.. verified_bytes=.. leaked=.. status=..`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SoakReport {
    /// Generations run (including this one).
    pub generations: u32,
    /// Cold generations, generation 0 included.
    pub cold: u32,
    /// Bytes verified over the chain.
    pub verified_bytes: u64,
    /// Pages leaked over the chain.
    pub leaked: u64,
    /// True if every generation passed.
    pub ok: bool,
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SOAK generations={} cold={} verified_bytes={} leaked={} status={}",
            self.generations,
            self.cold,
            self.verified_bytes,
            self.leaked,
            if self.ok { "ok" } else { "fail" }
        )
    }
}

/// The check a generation failed; its `Display` is the `check=` word of a `FAIL` line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A `baton.*` bootarg is malformed.
    Config,
    /// The record is missing, malformed, or disagrees with the command line.
    Record,
    /// kho refused to restore a recorded block.
    Restore,
    /// A restored page has the wrong refcount for its kind.
    Refcount,
    /// A restored page has the wrong compound or split marker for its kind.
    Compound,
    /// A restored byte differs from its pattern or checksum.
    Verify,
    /// mm's free-path checks reported a bad page.
    BadPage,
    /// mm refused to free a block for another reason.
    Free,
    /// `split_preserved_pages` failed or left the wrong state.
    Split,
    /// mm could not allocate a new block.
    Alloc,
    /// kho refused to preserve a block or the record.
    Preserve,
    /// The previous image preserved pages it did not record.
    Leak,
    /// Page accounting drifted.
    Accounting,
    /// The handover itself: the next image refused, no room in scratch, finalize or the
    /// device-tree rewrite failed.
    Handover,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Config => "config",
            Check::Record => "record",
            Check::Restore => "restore",
            Check::Refcount => "refcount",
            Check::Compound => "compound",
            Check::Verify => "verify",
            Check::BadPage => "bad-page",
            Check::Free => "free",
            Check::Split => "split",
            Check::Alloc => "alloc",
            Check::Preserve => "preserve",
            Check::Leak => "leak",
            Check::Accounting => "accounting",
            Check::Handover => "handover",
        })
    }
}

/// A failed generation: `FAIL gen=.. check=.. detail=..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The generation that failed.
    pub generation: u32,
    /// The check.
    pub check: Check,
    /// What failed it, in one line.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The detail runs to the end of the line: keep it on one line.
        write!(
            f,
            "FAIL gen={} check={} detail=",
            self.generation, self.check
        )?;
        for c in self.detail.chars() {
            let c = if c == '\n' || c == '\r' { ' ' } else { c };
            f.write_char(c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_the_runner_protocol() {
        let g = GenReport {
            n: 3,
            cold: false,
            restored: 4,
            verified_bytes: 4096,
            handover_us: 17,
            ..Default::default()
        };
        assert_eq!(
            g.to_string(),
            "GEN n=3 cold=0 restored=4 verified_bytes=4096 freed=0 split=0 preserved=0 \
             preserved_pages=0 free_pages=0 total_pages=0 leaked=0 bad_pages=0 handover_us=17 \
             blocks=0 finalize_us=0 copyout_us=0 trampoline_us=0 early_us=0 reserve_us=0 \
             ready_us=0 restore_us=0 verify_us=0 deferred_us=0"
        );
        let s = SoakReport {
            generations: 50,
            cold: 1,
            verified_bytes: 9,
            leaked: 0,
            ok: true,
        };
        assert_eq!(
            s.to_string(),
            "SOAK generations=50 cold=1 verified_bytes=9 leaked=0 status=ok"
        );
        let f = Failure {
            generation: 7,
            check: Check::BadPage,
            detail: String::from("pfn 0x40001\nx"),
        };
        assert_eq!(
            f.to_string(),
            "FAIL gen=7 check=bad-page detail=pfn 0x40001 x"
        );
    }
}
