//! The soak report: `report.md` (one table of what the run showed and how to repeat it)
//! and the plain-text summary printed on stdout.
//!
//! Owns the wording of both; it reads the checker's tallies and never re-checks them.
//! Handover statistics cover warm generations only: a cold boot has no handover to time.

use std::fmt::Write as _;
use std::time::Duration;

use crate::check::{Checker, Failure};
use crate::cli::Options;
use crate::progress::human_duration;
use crate::stats::{self, Summary};

/// Everything the report says about one run.
pub struct Run<'a> {
    pub options: &'a Options,
    pub checker: &'a Checker,
    pub outcome: &'a Result<(), Failure>,
    pub wall: Duration,
    /// The soak command that repeats this run.
    pub reproduce: String,
    /// The QEMU command line, or `None` for a replay.
    pub qemu: Option<String>,
}

impl Run<'_> {
    /// Handover times of the generations that restored (not cold).
    pub fn handover(&self) -> Option<Summary> {
        let warm: Vec<u64> = self
            .checker
            .samples
            .iter()
            .filter(|s| !s.cold)
            .map(|s| s.handover_us)
            .collect();
        stats::summarize(&warm)
    }

    fn status(&self) -> String {
        match self.outcome {
            Ok(()) => "ok".to_string(),
            Err(f) => format!("FAIL {f}"),
        }
    }

    /// The rows of the table, label and value, shared by both renderings.
    fn rows(&self) -> Vec<(&'static str, String)> {
        let o = self.options;
        let c = self.checker;
        let seed = if o.seed_given {
            o.seed.to_string()
        } else {
            format!("{} (chosen by the runner)", o.seed)
        };
        let mut rows = vec![
            ("status", self.status()),
            ("board", o.board.name().to_string()),
            ("EL", o.el.to_string()),
            ("seed", seed),
            (
                "generations",
                format!("{} of {} requested", c.generations(), o.generations),
            ),
            ("wall time", wall(self.wall, o.replay.is_some())),
            ("bytes verified", bytes(c.verified_bytes)),
            (
                "cold boots",
                format!("{} (after generation 0)", c.cold_boots),
            ),
            ("leaked pages", c.leaked.to_string()),
            ("bad pages", c.bad_pages.to_string()),
            (
                "total pages",
                c.total_pages()
                    .map_or_else(|| "-".to_string(), |p| p.to_string()),
            ),
        ];
        match self.handover() {
            Some(h) => {
                rows.push(("handover min", format!("{} µs", h.min)));
                rows.push(("handover median", format!("{:.1} µs", h.median)));
                rows.push(("handover p99", format!("{} µs", h.p99)));
                rows.push(("handover max", format!("{} µs", h.max)));
                rows.push(("handovers timed", h.count.to_string()));
            }
            None => rows.push(("handover time", "no warm generation".to_string())),
        }
        if let Some(soak) = &c.soak {
            if soak.verified_bytes != c.verified_bytes {
                rows.push((
                    "note",
                    format!(
                        "SOAK line says verified_bytes={}, GEN lines sum to {}",
                        soak.verified_bytes, c.verified_bytes
                    ),
                ));
            }
        }
        rows
    }

    /// The `report.md` text.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# baton soak report\n\n| | |\n|---|---|\n");
        for (label, value) in self.rows() {
            let _ = writeln!(out, "| {label} | {} |", value.replace('|', "\\|"));
        }
        let _ = writeln!(out, "\nRepeat this run:\n\n```sh\n{}\n```", self.reproduce);
        if let Some(qemu) = &self.qemu {
            let _ = writeln!(out, "\nQEMU command line:\n\n```sh\n{qemu}\n```");
        }
        let console = match &self.options.replay {
            Some(log) => format!("replayed from `{}`", log.display()),
            None => "[console.log](console.log)".to_string(),
        };
        let _ = writeln!(
            out,
            "\nHandover time per generation: [handover.svg](handover.svg); console: {console}."
        );
        out
    }

    /// The summary printed on stdout.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (label, value) in self.rows() {
            let _ = writeln!(out, "soak: {label:<16} {value}");
        }
        out
    }
}

fn wall(d: Duration, replay: bool) -> String {
    let text = format!("{:.1} s ({})", d.as_secs_f64(), human_duration(d));
    if replay {
        format!("{text}, replay")
    } else {
        text
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{n} ({:.1} MiB)", n as f64 / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Check;
    use crate::cli::parse_args;
    use crate::protocol::tests::gen_line;

    #[test]
    fn report_lists_the_table_and_the_reproduce_line() {
        let o = parse_args(
            ["--image", "I", "--seed", "3", "--generations", "3"].map(String::from),
            0,
        )
        .expect("options");
        let mut c = Checker::new(3, false);
        for line in [
            gen_line(0, true, 0, 0),
            gen_line(1, false, 0, 40),
            gen_line(2, false, 0, 60),
        ] {
            c.line(&line).expect("clean line");
        }
        let outcome = Err(Failure {
            generation: 3,
            check: Check::SoakMissing,
        });
        let run = Run {
            options: &o,
            checker: &c,
            outcome: &outcome,
            wall: Duration::from_secs(2),
            reproduce: "soak --image I --seed 3".into(),
            qemu: Some("qemu-system-aarch64 -M virt".into()),
        };
        let md = run.markdown();
        assert!(
            md.contains("| status | FAIL generation 3: soak: console ended without a SOAK line |")
        );
        assert!(md.contains("| seed | 3 |"));
        assert!(md.contains("| generations | 3 of 3 requested |"));
        assert!(md.contains("| bytes verified | 12288 (0.0 MiB) |"));
        assert!(md.contains("| handover min | 40 µs |"));
        assert!(md.contains("| handover median | 50.0 µs |"));
        assert!(md.contains("| handover max | 60 µs |"));
        assert!(md.contains("```sh\nsoak --image I --seed 3\n```"));
        assert!(run.summary().contains("soak: handover p99     60 µs"));
    }
}
