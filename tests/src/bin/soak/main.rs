//! `soak`: the host-side runner for baton's handover chain (`make soak`).
//!
//! Boots one image once in QEMU with `baton.generations=N baton.seed=S`, checks every
//! `GEN` line as it arrives, stops at the first failure (naming the generation and the
//! check), and writes `report.md`, `handover.svg` and `console.log` to the report
//! directory. `--replay LOG` runs the same checks and report on a saved console log.
//! It owns only its report directory and the one QEMU it starts.

mod check;
mod cli;
mod progress;
mod protocol;
mod qemu;
mod report;
mod stats;
mod svg;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use check::{Checker, Ending, Failure, Seen};
use cli::{CliError, Options};
use progress::Progress;
use qemu::{Console, Line, Next, STDERR_TAG};

/// How long to keep logging QEMU's output after a failure, for the post-mortem.
const DRAIN_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A run that could not be carried out (as opposed to one whose checks failed).
#[derive(Debug)]
enum SetupError {
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    StartQemu {
        program: String,
        error: io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, path, error } => {
                write!(f, "cannot {what} {}: {error}", path.display())
            }
            Self::StartQemu { program, error } => write!(f, "cannot start {program}: {error}"),
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SetupError + 'a {
    move |error| SetupError::Io {
        what,
        path: path.to_path_buf(),
        error,
    }
}

/// What a finished run produced.
struct Outcome {
    result: Result<(), Failure>,
    report_dir: PathBuf,
    summary: String,
}

/// The lines of one run and what is done with each: logged, checked, counted.
struct Session {
    checker: Checker,
    progress: Progress,
    log: Option<BufWriter<File>>,
}

impl Session {
    fn feed(&mut self, line: &Line) -> Result<(), Failure> {
        self.record(line);
        let Line::Serial(text) = line else {
            return Ok(());
        };
        if let Seen::Gen(n) = self.checker.line(text)? {
            self.progress.update(n.saturating_add(1));
        }
        Ok(())
    }

    /// Appends a line to `console.log` (QEMU's own stderr tagged); a full disk must not
    /// hide the soak's verdict, so write errors are dropped.
    fn record(&mut self, line: &Line) {
        if let Some(log) = &mut self.log {
            let _ = match line {
                Line::Serial(text) => writeln!(log, "{text}"),
                Line::Stderr(text) => writeln!(log, "{STDERR_TAG}{text}"),
            };
        }
    }
}

/// The soak command that repeats `o` (with the seed made explicit).
fn reproduce_line(o: &Options) -> String {
    let mut argv: Vec<String> = [
        "cargo",
        "run",
        "--release",
        "-p",
        "tests",
        "--bin",
        "soak",
        "--",
    ]
    .map(String::from)
    .to_vec();
    let mut opt = |name: &str, value: String| {
        argv.push(name.to_string());
        argv.push(value);
    };
    if let Some(log) = &o.replay {
        opt("--replay", log.display().to_string());
    }
    if let Some(image) = &o.image {
        opt("--image", image.display().to_string());
    }
    opt("--board", o.board.name().to_string());
    opt("--el", o.el.to_string());
    opt("--generations", o.generations.to_string());
    opt("--seed", o.seed.to_string());
    if !o.extra_bootargs.is_empty() {
        opt("--extra-bootargs", o.extra_bootargs.clone());
    }
    if let Some(initrd) = &o.initrd {
        opt("--initrd", initrd.display().to_string());
    }
    if let Some(dtb) = &o.dtb {
        opt("--dtb", dtb.display().to_string());
    }
    for arg in &o.qemu_args {
        opt("--qemu-arg", arg.clone());
    }
    if o.expect_cold {
        argv.push("--expect-cold".into());
    }
    qemu::shell_line(&argv)
}

fn default_report_dir(o: &Options) -> PathBuf {
    Path::new("target/soak").join(format!("{}-{}-{}", o.board.name(), o.seed, o.generations))
}

/// Checks a saved console log; `qemu-stderr:` lines are QEMU's, not the guest's.
fn replay(session: &mut Session, log: &Path) -> Result<Result<(), Failure>, SetupError> {
    let file = File::open(log).map_err(io_err("open the replay log", log))?;
    for raw in BufReader::new(file).split(b'\n') {
        let raw = raw.map_err(io_err("read the replay log", log))?;
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches('\r');
        let line = match text.strip_prefix(STDERR_TAG) {
            Some(rest) => Line::Stderr(rest.to_string()),
            None => Line::Serial(text.to_string()),
        };
        if let Err(f) = session.feed(&line) {
            return Ok(Err(f));
        }
    }
    Ok(session.checker.finish(Ending::Replay))
}

/// Boots QEMU and checks its console as it streams.
fn live(
    session: &mut Session,
    argv: &[String],
    timeout_secs: u64,
) -> Result<Result<(), Failure>, SetupError> {
    let mut console = Console::start(argv, Duration::from_secs(timeout_secs)).map_err(|error| {
        SetupError::StartQemu {
            program: argv.first().cloned().unwrap_or_default(),
            error,
        }
    })?;
    let ending = loop {
        match console.next() {
            Next::Line(line) => {
                if let Err(failure) = session.feed(&line) {
                    for late in console.drain(DRAIN_AFTER_FAILURE) {
                        session.record(&late);
                    }
                    console.kill();
                    return Ok(Err(failure));
                }
            }
            Next::Closed => {
                let code = console.wait().map_err(|error| SetupError::StartQemu {
                    program: argv.first().cloned().unwrap_or_default(),
                    error,
                })?;
                break Ending::Exited(code);
            }
            Next::TimedOut => {
                console.kill();
                break Ending::TimedOut { secs: timeout_secs };
            }
        }
    };
    Ok(session.checker.finish(ending))
}

/// Runs the soak `o` describes, writes its report, and says how it went.
fn run(o: &Options) -> Result<Outcome, SetupError> {
    let report_dir = o
        .report_dir
        .clone()
        .unwrap_or_else(|| default_report_dir(o));
    fs::create_dir_all(&report_dir).map_err(io_err("create the report directory", &report_dir))?;
    // A replay never writes console.log: the log being replayed may be that very file.
    let log = match &o.replay {
        Some(_) => None,
        None => {
            let path = report_dir.join("console.log");
            let file = File::create(&path).map_err(io_err("create", &path))?;
            Some(BufWriter::new(file))
        }
    };
    let mut session = Session {
        checker: Checker::new(o.generations, o.expect_cold),
        progress: Progress::new(o.generations),
        log,
    };
    let started = Instant::now();
    let (result, qemu_line) = match (&o.replay, &o.image) {
        (Some(log), _) => (replay(&mut session, log)?, None),
        (None, Some(image)) => {
            let argv = qemu::command_line(o, image);
            (
                live(&mut session, &argv, o.timeout_secs)?,
                Some(qemu::shell_line(&argv)),
            )
        }
        // `parse_args` refuses a command line with neither.
        (None, None) => (Ok(()), None),
    };
    let wall = started.elapsed();
    session.progress.finish();
    if let Some(mut log) = session.log.take() {
        let path = report_dir.join("console.log");
        log.flush().map_err(io_err("write", &path))?;
    }

    let report = report::Run {
        options: o,
        checker: &session.checker,
        outcome: &result,
        wall,
        reproduce: reproduce_line(o),
        qemu: qemu_line,
    };
    let md = report_dir.join("report.md");
    fs::write(&md, report.markdown()).map_err(io_err("write", &md))?;
    let title = format!(
        "baton handover time: {} EL{}, seed {}, {} generations",
        o.board.name(),
        o.el,
        o.seed,
        session.checker.generations()
    );
    let plot = report_dir.join("handover.svg");
    fs::write(&plot, svg::render(&session.checker.samples, &title))
        .map_err(io_err("write", &plot))?;
    Ok(Outcome {
        summary: report.summary(),
        result,
        report_dir,
    })
}

fn fallback_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

fn main() -> ExitCode {
    let options = match cli::parse_args(std::env::args().skip(1), fallback_seed()) {
        Ok(o) => o,
        Err(CliError::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(outcome) => {
            print!("{}", outcome.summary);
            println!(
                "soak: report           {}",
                outcome.report_dir.join("report.md").display()
            );
            match outcome.result {
                Ok(()) => ExitCode::SUCCESS,
                Err(failure) => {
                    eprintln!("soak: FAIL {failure}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("soak: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Check;
    use crate::protocol::tests::gen_line;

    /// A fresh scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-soak-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// A console log of a clean `generations`-long chain, with log prefixes, boot noise
    /// and QEMU stderr mixed in; `mutate` may rewrite generation n's GEN line.
    fn synthetic_log(generations: u32, mutate: impl Fn(u32, String) -> String) -> String {
        let mut log = String::from("qemu-stderr: qemu-system-aarch64: warning: something\n");
        for n in 0..generations {
            let t = f64::from(n) * 0.01;
            log.push_str(&format!(
                "[{t:12.6}] INFO baton: booting, board qemu-virt\n"
            ));
            let handover = if n == 0 {
                0
            } else {
                700 + u64::from(n * 7919 % 300)
            };
            let line = mutate(n, gen_line(n, n == 0, 0, handover));
            log.push_str(&format!("[{t:12.6}] INFO baton: {line}\n"));
        }
        log.push_str(&format!(
            "[   99.000000] INFO baton: SOAK generations={generations} cold=1 \
             verified_bytes={} leaked=0 status=ok\n",
            u64::from(generations) * 4096
        ));
        log
    }

    fn replay_options(dir: &Path, log: &str, generations: u32) -> Options {
        let path = dir.join("input.log");
        fs::write(&path, log).expect("write log");
        let argv = [
            "--replay".to_string(),
            path.display().to_string(),
            "--generations".to_string(),
            generations.to_string(),
            "--seed".to_string(),
            "11".to_string(),
            "--report-dir".to_string(),
            dir.join("report").display().to_string(),
        ];
        cli::parse_args(argv, 0).expect("options")
    }

    #[test]
    fn replay_of_a_clean_thousand_generation_chain_passes() {
        let dir = scratch("clean");
        let o = replay_options(&dir, &synthetic_log(1000, |_, l| l), 1000);
        let outcome = run(&o).expect("run");
        assert_eq!(outcome.result, Ok(()));
        let md = fs::read_to_string(dir.join("report/report.md")).expect("report.md");
        assert!(md.contains("| status | ok |"), "{md}");
        assert!(md.contains("| generations | 1000 of 1000 requested |"));
        assert!(md.contains("| bytes verified | 4096000 (3.9 MiB) |"));
        assert!(md.contains("| handovers timed | 999 |"));
        assert!(md.contains("| handover min | 700 µs |"));
        let svg = fs::read_to_string(dir.join("report/handover.svg")).expect("handover.svg");
        assert!(svg.starts_with("<svg"));
        let points = svg
            .lines()
            .find(|l| l.starts_with("<polyline"))
            .and_then(|l| l.split("points=\"").nth(1))
            .map(|p| p.split('"').next().unwrap_or("").split_whitespace().count());
        assert_eq!(points, Some(1000));
        assert!(!dir.join("report/console.log").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_with_a_leak_fails_naming_the_generation() {
        let dir = scratch("leak");
        let log = synthetic_log(1000, |n, l| {
            if n == 417 {
                l.replace("leaked=0", "leaked=3")
            } else {
                l
            }
        });
        let o = replay_options(&dir, &log, 1000);
        let outcome = run(&o).expect("run");
        let failure = outcome.result.expect_err("a leak fails the run");
        assert_eq!(failure.generation, 417);
        assert_eq!(failure.check, Check::Leaked { pages: 3 });
        assert_eq!(
            failure.to_string(),
            "generation 417: leaked: 3 pages leaked"
        );
        let md = fs::read_to_string(dir.join("report/report.md")).expect("report.md");
        assert!(
            md.contains("| generations | 417 of 1000 requested |"),
            "{md}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_of_a_truncated_log_fails_at_the_next_generation() {
        let dir = scratch("truncated");
        let log = synthetic_log(50, |_, l| l);
        let cut: String = log.lines().take(61).map(|l| format!("{l}\n")).collect();
        let o = replay_options(&dir, &cut, 50);
        let failure = run(&o).expect("run").result.expect_err("no SOAK line");
        assert_eq!(
            (failure.generation, failure.check),
            (30, Check::SoakMissing)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn live_run_logs_the_console_and_stops_at_the_first_failure() {
        use std::os::unix::fs::PermissionsExt;

        let dir = scratch("live");
        let log = synthetic_log(20, |_, l| l);
        fs::write(dir.join("guest.txt"), &log).expect("write");
        // A stand-in for QEMU that ignores its arguments: prints the guest console and a
        // stderr line of its own, then exits 0.
        let script = dir.join("fake-qemu.sh");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\necho 'qemu warns' >&2\ngrep -v '^qemu-stderr' '{}'\n",
                dir.join("guest.txt").display()
            ),
        )
        .expect("write script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let argv = [
            "--image",
            "Image",
            "--generations",
            "20",
            "--seed",
            "1",
            "--qemu",
        ]
        .map(String::from)
        .into_iter()
        .chain([script.display().to_string(), "--report-dir".into()])
        .chain([dir.join("r").display().to_string()]);
        let o = cli::parse_args(argv, 0).expect("options");
        let outcome = run(&o).expect("live run");
        assert_eq!(outcome.result, Ok(()));
        let console = fs::read_to_string(dir.join("r/console.log")).expect("console.log");
        assert_eq!(console.lines().filter(|l| l.contains("GEN n=")).count(), 20);
        assert!(console.contains("qemu-stderr: qemu warns\n"));
        let md = fs::read_to_string(dir.join("r/report.md")).expect("report.md");
        assert!(
            md.contains("-append 'baton.generations=20 baton.seed=1'"),
            "{md}"
        );

        let fail = dir.join("fail.sh");
        fs::write(&fail, "#!/bin/sh\necho 'GEN n=0 cold=1'\nexec sleep 5\n").expect("write");
        let argv = vec!["sh".to_string(), fail.display().to_string()];
        let mut session = Session {
            checker: Checker::new(20, false),
            progress: Progress::new(20),
            log: None,
        };
        let started = Instant::now();
        let result = live(&mut session, &argv, 30).expect("live run");
        assert!(matches!(
            result,
            Err(Failure {
                generation: 0,
                check: Check::Garbled { .. }
            })
        ));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "did not stop at the failure"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reproduce_line_names_the_seed_and_board() {
        let o = cli::parse_args(
            [
                "--image",
                "out/Image",
                "--board",
                "rpi4",
                "--extra-bootargs",
                "a b",
            ]
            .map(String::from),
            42,
        )
        .expect("options");
        assert_eq!(
            reproduce_line(&o),
            "cargo run --release -p tests --bin soak -- --image out/Image --board rpi4 --el 2 \
             --generations 1000 --seed 42 --extra-bootargs 'a b'"
        );
        assert_eq!(
            default_report_dir(&o),
            PathBuf::from("target/soak/rpi4-42-1000")
        );
    }
}
