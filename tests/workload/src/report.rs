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
    /// Microseconds from the previous image's handover to this image's boot (0 when cold).
    pub handover_us: u64,
}

impl fmt::Display for GenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GEN n={} cold={} restored={} verified_bytes={} freed={} split={} preserved={} \
             preserved_pages={} free_pages={} total_pages={} leaked={} bad_pages={} handover_us={}",
            self.n,
            u8::from(self.cold),
            self.restored,
            self.verified_bytes,
            self.freed,
            self.split,
            self.preserved,
            self.preserved_pages,
            self.free_pages,
            self.total_pages,
            self.leaked,
            self.bad_pages,
            self.handover_us
        )
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
             preserved_pages=0 free_pages=0 total_pages=0 leaked=0 bad_pages=0 handover_us=17"
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
