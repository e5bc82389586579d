//! The soak checks: feeds console lines through the protocol parser one at a time and
//! applies every per-generation and end-of-run check, stopping at the first failure.
//!
//! Owns the run's tallies (generations, cold boots, bytes verified, handover samples) and
//! the `Failure` type. It never reads files or talks to QEMU; callers hand it lines and,
//! at the end, how the run ended.

use std::fmt;

use crate::protocol::{self, GenRecord, ParseError, Record, SoakRecord, SoakStatus};

/// The check that failed, with the values that failed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A line with a protocol marker did not parse.
    Garbled {
        line_no: u64,
        error: ParseError,
    },
    /// `n` is not the previous `n` + 1.
    Sequence {
        expected: u32,
        got: u32,
    },
    /// More GEN lines than the run asked for.
    BeyondRequested {
        requested: u32,
    },
    /// Generation 0 must be the cold first boot.
    FirstNotCold,
    /// A generation after the first booted cold and the run did not expect it.
    UnexpectedCold,
    Leaked {
        pages: u64,
    },
    BadPages {
        pages: u64,
    },
    TotalPagesChanged {
        before: u64,
        now: u64,
    },
    /// The guest printed a `FAIL` line.
    Guest {
        check: String,
        detail: String,
    },
    /// A `FAIL` line the guest printed but that does not parse.
    GuestGarbled {
        error: ParseError,
    },
    GenAfterSoak,
    SecondSoak,
    SoakMissing,
    SoakCount {
        soak: u32,
        seen: u32,
    },
    SoakRequested {
        soak: u32,
        requested: u32,
    },
    SoakStatus,
    SoakLeaked {
        pages: u64,
    },
    /// QEMU exited non-zero (`None`: killed by a signal).
    QemuExit {
        code: Option<i32>,
    },
    Timeout {
        secs: u64,
    },
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Garbled { line_no, error } => {
                write!(f, "parse: {error} (console line {line_no})")
            }
            Self::Sequence { expected, got } => {
                write!(f, "sequence: expected GEN n={expected}, got n={got}")
            }
            Self::BeyondRequested { requested } => {
                write!(f, "sequence: more GEN lines than the {requested} requested")
            }
            Self::FirstNotCold => write!(f, "cold: generation 0 reports cold=0"),
            Self::UnexpectedCold => write!(
                f,
                "cold: booted cold instead of restoring (pass --expect-cold if intended)"
            ),
            Self::Leaked { pages } => write!(f, "leaked: {pages} pages leaked"),
            Self::BadPages { pages } => write!(f, "bad_pages: {pages} bad pages"),
            Self::TotalPagesChanged { before, now } => {
                write!(f, "total_pages: changed from {before} to {now}")
            }
            Self::Guest { check, detail } => write!(f, "guest check {check}: {detail}"),
            Self::GuestGarbled { error } => write!(f, "guest reported a failure: {error}"),
            Self::GenAfterSoak => write!(f, "sequence: GEN line after the SOAK line"),
            Self::SecondSoak => write!(f, "soak: a second SOAK line"),
            Self::SoakMissing => write!(f, "soak: console ended without a SOAK line"),
            Self::SoakCount { soak, seen } => write!(
                f,
                "soak: SOAK says generations={soak} but {seen} GEN lines were seen"
            ),
            Self::SoakRequested { soak, requested } => write!(
                f,
                "soak: SOAK says generations={soak} but {requested} were requested"
            ),
            Self::SoakStatus => write!(f, "soak: SOAK status=fail"),
            Self::SoakLeaked { pages } => write!(f, "soak: SOAK says leaked={pages}"),
            Self::QemuExit { code: Some(code) } => {
                write!(f, "exit: QEMU exited with status {code}")
            }
            Self::QemuExit { code: None } => write!(f, "exit: QEMU was killed by a signal"),
            Self::Timeout { secs } => write!(f, "timeout: QEMU still running after {secs} s"),
        }
    }
}

/// The first failure of a run: the generation it belongs to and the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub generation: u32,
    pub check: Check,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {}: {}", self.generation, self.check)
    }
}

/// How the console stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A saved log: there is no exit status to check.
    Replay,
    /// QEMU exited; `None` when a signal killed it.
    Exited(Option<i32>),
    /// The deadline passed first.
    TimedOut { secs: u64 },
}

/// One generation's point on the handover plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub n: u32,
    pub cold: bool,
    pub handover_us: u64,
}

/// What a console line turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    Gen(u32),
    Soak,
}

/// The running state of one soak: what has been seen and what must come next.
#[derive(Debug)]
pub struct Checker {
    requested: u32,
    expect_cold: bool,
    line_no: u64,
    total_pages: Option<u64>,
    /// Cold generations after generation 0.
    pub cold_boots: u32,
    pub verified_bytes: u64,
    pub leaked: u64,
    pub bad_pages: u64,
    pub samples: Vec<Sample>,
    pub soak: Option<SoakRecord>,
}

impl Checker {
    pub fn new(requested: u32, expect_cold: bool) -> Self {
        Self {
            requested,
            expect_cold,
            line_no: 0,
            total_pages: None,
            cold_boots: 0,
            verified_bytes: 0,
            leaked: 0,
            bad_pages: 0,
            samples: Vec::new(),
            soak: None,
        }
    }

    /// Count of GEN lines accepted so far.
    pub fn generations(&self) -> u32 {
        u32::try_from(self.samples.len()).unwrap_or(u32::MAX)
    }

    /// Total pages as first reported, if any generation was seen.
    pub fn total_pages(&self) -> Option<u64> {
        self.total_pages
    }

    /// The generation a failure found now belongs to: the one in progress.
    fn current(&self) -> u32 {
        self.generations()
    }

    fn fail(&self, generation: u32, check: Check) -> Failure {
        Failure { generation, check }
    }

    /// Checks one console line (without its line ending).
    pub fn line(&mut self, line: &str) -> Result<Seen, Failure> {
        self.line_no += 1;
        match protocol::parse_line(line) {
            None => Ok(Seen::Nothing),
            Some(Ok(Record::Gen(g))) => self.gen(g).map(Seen::Gen),
            Some(Ok(Record::Soak(s))) => self.soak(s).map(|()| Seen::Soak),
            Some(Ok(Record::Fail(f))) => Err(self.fail(
                f.gen,
                Check::Guest {
                    check: f.check,
                    detail: f.detail,
                },
            )),
            Some(Err(error)) if error.record() == "FAIL" => {
                Err(self.fail(self.current(), Check::GuestGarbled { error }))
            }
            Some(Err(error)) => Err(self.fail(
                self.current(),
                Check::Garbled {
                    line_no: self.line_no,
                    error,
                },
            )),
        }
    }

    fn gen(&mut self, g: GenRecord) -> Result<u32, Failure> {
        let expected = self.current();
        if self.soak.is_some() {
            return Err(self.fail(g.n, Check::GenAfterSoak));
        }
        if g.n != expected {
            return Err(self.fail(expected, Check::Sequence { expected, got: g.n }));
        }
        if g.n >= self.requested {
            let requested = self.requested;
            return Err(self.fail(g.n, Check::BeyondRequested { requested }));
        }
        if g.n == 0 && !g.cold {
            return Err(self.fail(0, Check::FirstNotCold));
        }
        if g.n > 0 && g.cold {
            if !self.expect_cold {
                return Err(self.fail(g.n, Check::UnexpectedCold));
            }
            self.cold_boots += 1;
        }
        if g.leaked != 0 {
            return Err(self.fail(g.n, Check::Leaked { pages: g.leaked }));
        }
        if g.bad_pages != 0 {
            return Err(self.fail(g.n, Check::BadPages { pages: g.bad_pages }));
        }
        match self.total_pages {
            Some(before) if before != g.total_pages => {
                let now = g.total_pages;
                return Err(self.fail(g.n, Check::TotalPagesChanged { before, now }));
            }
            _ => self.total_pages = Some(g.total_pages),
        }
        self.verified_bytes = self.verified_bytes.saturating_add(g.verified_bytes);
        self.leaked += g.leaked;
        self.bad_pages += g.bad_pages;
        self.samples.push(Sample {
            n: g.n,
            cold: g.cold,
            handover_us: g.handover_us,
        });
        Ok(g.n)
    }

    fn soak(&mut self, s: SoakRecord) -> Result<(), Failure> {
        let at = s.generations;
        if self.soak.is_some() {
            return Err(self.fail(at, Check::SecondSoak));
        }
        let seen = self.generations();
        if s.generations != seen {
            return Err(self.fail(at, Check::SoakCount { soak: at, seen }));
        }
        if s.generations != self.requested {
            let requested = self.requested;
            return Err(self.fail(
                at,
                Check::SoakRequested {
                    soak: at,
                    requested,
                },
            ));
        }
        if s.status != SoakStatus::Ok {
            return Err(self.fail(at, Check::SoakStatus));
        }
        if s.leaked != 0 {
            return Err(self.fail(at, Check::SoakLeaked { pages: s.leaked }));
        }
        self.soak = Some(s);
        Ok(())
    }

    /// The end-of-run checks: a SOAK line was seen and QEMU exited 0.
    pub fn finish(&self, ending: Ending) -> Result<(), Failure> {
        let at = self.current();
        match ending {
            Ending::TimedOut { secs } => Err(self.fail(at, Check::Timeout { secs })),
            Ending::Exited(code) if code != Some(0) => Err(self.fail(at, Check::QemuExit { code })),
            _ if self.soak.is_none() => Err(self.fail(at, Check::SoakMissing)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::gen_line;

    /// Feeds `lines` to a checker for `requested` generations; the first failure, if any.
    fn run(requested: u32, expect_cold: bool, lines: &[String]) -> Result<Checker, Failure> {
        let mut c = Checker::new(requested, expect_cold);
        for line in lines {
            c.line(line)?;
        }
        c.finish(Ending::Exited(Some(0)))?;
        Ok(c)
    }

    fn good(requested: u32) -> Vec<String> {
        let mut lines: Vec<String> = (0..requested)
            .map(|n| gen_line(n, n == 0, 0, if n == 0 { 0 } else { 100 + u64::from(n) }))
            .collect();
        lines.push(format!(
            "SOAK generations={requested} cold=1 verified_bytes=0 leaked=0 status=ok"
        ));
        lines
    }

    fn failure(result: Result<Checker, Failure>) -> Failure {
        match result {
            Ok(_) => panic!("run passed"),
            Err(f) => f,
        }
    }

    #[test]
    fn clean_run_passes_and_tallies() {
        let c = run(5, false, &good(5)).expect("clean run");
        assert_eq!(c.generations(), 5);
        assert_eq!(c.verified_bytes, 5 * 4096);
        assert_eq!(c.cold_boots, 0);
        assert_eq!(c.samples[4].handover_us, 104);
    }

    #[test]
    fn skipped_generation_fails_at_the_missing_one() {
        let mut lines = good(5);
        lines.remove(2);
        let f = failure(run(5, false, &lines));
        assert_eq!(f.generation, 2);
        assert_eq!(
            f.check,
            Check::Sequence {
                expected: 2,
                got: 3
            }
        );
    }

    #[test]
    fn leak_fails_naming_the_generation() {
        let mut lines = good(5);
        lines[3] = gen_line(3, false, 2, 50);
        let f = failure(run(5, false, &lines));
        assert_eq!((f.generation, f.check), (3, Check::Leaked { pages: 2 }));
    }

    #[test]
    fn bad_pages_fail() {
        let mut lines = good(5);
        lines[1] = lines[1].replace("bad_pages=0", "bad_pages=7");
        let f = failure(run(5, false, &lines));
        assert_eq!((f.generation, f.check), (1, Check::BadPages { pages: 7 }));
    }

    #[test]
    fn unexpected_cold_fails_but_expected_cold_is_counted() {
        let mut lines = good(5);
        lines[2] = gen_line(2, true, 0, 0);
        let f = failure(run(5, false, &lines));
        assert_eq!((f.generation, f.check), (2, Check::UnexpectedCold));
        let c = run(5, true, &lines).expect("cold expected");
        assert_eq!(c.cold_boots, 1);
    }

    #[test]
    fn warm_first_generation_fails() {
        let mut lines = good(3);
        lines[0] = gen_line(0, false, 0, 0);
        let f = failure(run(3, false, &lines));
        assert_eq!((f.generation, f.check), (0, Check::FirstNotCold));
    }

    #[test]
    fn total_pages_change_fails() {
        let mut lines = good(4);
        lines[3] = lines[3].replace("total_pages=262144", "total_pages=262143");
        let f = failure(run(4, false, &lines));
        let check = Check::TotalPagesChanged {
            before: 262_144,
            now: 262_143,
        };
        assert_eq!((f.generation, f.check), (3, check));
    }

    #[test]
    fn garbled_gen_line_fails_with_its_line_number() {
        let mut lines = good(4);
        lines[2] = lines[2].replace("freed=1", "freed=");
        let f = failure(run(4, false, &lines));
        assert_eq!(f.generation, 2);
        assert!(matches!(f.check, Check::Garbled { line_no: 3, .. }), "{f}");
    }

    #[test]
    fn guest_fail_line_fails_with_its_generation() {
        let mut lines = good(4);
        lines.insert(
            2,
            "FAIL gen=2 check=restore detail=node reachable twice".into(),
        );
        let f = failure(run(4, false, &lines));
        let check = Check::Guest {
            check: "restore".into(),
            detail: "node reachable twice".into(),
        };
        assert_eq!((f.generation, f.check), (2, check));
        let mut lines = good(4);
        lines.insert(1, "FAIL gen=x check=restore detail=oops".into());
        let f = failure(run(4, false, &lines));
        assert!(matches!(f.check, Check::GuestGarbled { .. }), "{f}");
    }

    #[test]
    fn missing_soak_line_fails() {
        let mut lines = good(4);
        lines.pop();
        let f = failure(run(4, false, &lines));
        assert_eq!((f.generation, f.check), (4, Check::SoakMissing));
    }

    #[test]
    fn soak_count_mismatches_fail() {
        let mut lines = good(4);
        lines[4] = lines[4].replace("generations=4", "generations=5");
        let f = failure(run(4, false, &lines));
        assert_eq!(f.check, Check::SoakCount { soak: 5, seen: 4 });

        let f = failure(run(5, false, &good(4)));
        assert_eq!(
            f.check,
            Check::SoakRequested {
                soak: 4,
                requested: 5
            }
        );
    }

    #[test]
    fn soak_status_fail_and_soak_leak_fail() {
        let mut lines = good(3);
        lines[3] = lines[3].replace("status=ok", "status=fail");
        assert_eq!(failure(run(3, false, &lines)).check, Check::SoakStatus);
        let mut lines = good(3);
        lines[3] = lines[3].replace("leaked=0", "leaked=1");
        assert_eq!(
            failure(run(3, false, &lines)).check,
            Check::SoakLeaked { pages: 1 }
        );
    }

    #[test]
    fn extra_generation_and_gen_after_soak_fail() {
        let mut lines = good(3);
        lines.insert(3, gen_line(3, false, 0, 10));
        let f = failure(run(3, false, &lines));
        assert_eq!(f.check, Check::BeyondRequested { requested: 3 });
        let mut lines = good(3);
        lines.push(gen_line(3, false, 0, 10));
        assert_eq!(failure(run(3, false, &lines)).check, Check::GenAfterSoak);
    }

    #[test]
    fn nonzero_exit_and_timeout_fail_even_after_soak() {
        let mut c = Checker::new(2, false);
        for line in good(2) {
            c.line(&line).expect("clean line");
        }
        let f = c.finish(Ending::Exited(Some(3))).expect_err("exit 3");
        assert_eq!(f.check, Check::QemuExit { code: Some(3) });
        let f = c.finish(Ending::TimedOut { secs: 9 }).expect_err("timeout");
        assert_eq!((f.generation, f.check), (2, Check::Timeout { secs: 9 }));
        assert_eq!(c.finish(Ending::Replay), Ok(()));
    }
}
