//! Building the QEMU command line for a board and streaming its console line by line.
//!
//! Owns the one QEMU child process of a soak: starts it, hands its lines to the caller as
//! they arrive, and kills it on a failure or a timeout. It applies no checks itself and
//! never outlives the run (the child is killed and reaped before `Console` is dropped).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::{Board, Options};

/// Prefix that marks QEMU's own stderr in the console log; the checker skips such lines.
pub const STDERR_TAG: &str = "qemu-stderr: ";

/// The Raspberry Pi 4 device tree the project keeps, relative to the workspace.
fn default_rpi4_dtb() -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/dtb/bcm2711-rpi-4-b.dtb");
    // A missing file is left for QEMU to report, with the path it was looked for at.
    path.canonicalize().unwrap_or(path)
}

/// `baton.generations=N baton.seed=S` and the extra arguments.
pub fn bootargs(o: &Options) -> String {
    let mut args = format!("baton.generations={} baton.seed={}", o.generations, o.seed);
    if !o.extra_bootargs.trim().is_empty() {
        args.push(' ');
        args.push_str(o.extra_bootargs.trim());
    }
    args
}

/// The full QEMU argv (program first) for `o`'s board, image and options.
pub fn command_line(o: &Options, image: &Path) -> Vec<String> {
    let mut argv = vec![o.qemu.clone()];
    let mut push = |items: &[&str]| argv.extend(items.iter().map(|s| s.to_string()));
    match o.board {
        Board::Virt => {
            let machine = if o.el == 2 {
                "virt,virtualization=on"
            } else {
                "virt"
            };
            push(&["-M", machine, "-cpu", "cortex-a72", "-m", &o.mem]);
        }
        Board::Rpi4 => push(&["-M", "raspi4b"]),
    }
    push(&["-display", "none", "-monitor", "none", "-serial", "stdio"]);
    push(&["-semihosting"]);
    argv.push("-kernel".into());
    argv.push(image.display().to_string());
    if o.board == Board::Rpi4 {
        let dtb = o.dtb.clone().unwrap_or_else(default_rpi4_dtb);
        argv.push("-dtb".into());
        argv.push(dtb.display().to_string());
    } else if let Some(dtb) = &o.dtb {
        argv.push("-dtb".into());
        argv.push(dtb.display().to_string());
    }
    if let Some(initrd) = &o.initrd {
        argv.push("-initrd".into());
        argv.push(initrd.display().to_string());
    }
    argv.push("-append".into());
    argv.push(bootargs(o));
    argv.extend(o.qemu_args.iter().cloned());
    argv
}

/// Quotes `argv` for a POSIX shell, so that a report's command line can be pasted.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of console output.
#[derive(Debug)]
pub enum Line {
    /// From the guest's serial port (QEMU's stdout).
    Serial(String),
    /// From QEMU itself.
    Stderr(String),
}

/// What waiting for the next line gave.
#[derive(Debug)]
pub enum Next {
    Line(Line),
    /// Both streams closed: QEMU is gone or going.
    Closed,
    TimedOut,
}

/// A running QEMU and the lines coming out of it.
pub struct Console {
    child: Child,
    lines: Receiver<Line>,
    deadline: Instant,
}

fn pump<R: Read + Send + 'static>(
    stream: R,
    wrap: fn(String) -> Line,
    to: mpsc::Sender<Line>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.trim_end_matches(['\n', '\r']).to_string();
                    if to.send(wrap(text)).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

impl Console {
    /// Starts `argv` with piped stdout and stderr; lines must arrive before `timeout`.
    pub fn start(argv: &[String], timeout: Duration) -> std::io::Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty QEMU command line"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            pump(out, Line::Serial, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, Line::Stderr, tx);
        }
        Ok(Self {
            child,
            lines: rx,
            deadline: Instant::now() + timeout,
        })
    }

    /// The next line, or why there is none.
    pub fn next(&mut self) -> Next {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Next::Line(line),
            Err(RecvTimeoutError::Timeout) => Next::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// Lines still arriving within `grace` (after a failure, for the log).
    pub fn drain(&mut self, grace: Duration) -> Vec<Line> {
        let until = Instant::now() + grace;
        let mut out = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            out.push(line);
        }
        out
    }

    /// Waits for QEMU to exit by itself (its streams have closed): its exit code, `None`
    /// when a signal ended it.
    pub fn wait(mut self) -> std::io::Result<Option<i32>> {
        Ok(self.child.wait()?.code())
    }

    /// Kills QEMU (it may already have exited) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_args;

    fn opts(line: &str) -> Options {
        parse_args(line.split_whitespace().map(String::from), 5).expect("valid options")
    }

    #[test]
    fn virt_el2_turns_on_virtualization() {
        let argv = command_line(&opts("--image I --el 2 --generations 3"), Path::new("I"));
        let line = shell_line(&argv);
        assert!(line
            .starts_with("qemu-system-aarch64 -M virt,virtualization=on -cpu cortex-a72 -m 1G "));
        assert!(line.contains(" -semihosting -kernel I "));
        assert!(line.ends_with("-append 'baton.generations=3 baton.seed=5'"));
    }

    #[test]
    fn rpi4_gets_the_shared_dtb_and_no_memory_size() {
        let argv = command_line(&opts("--image I --board rpi4"), Path::new("I"));
        assert_eq!(argv[1..3], ["-M".to_string(), "raspi4b".to_string()]);
        assert!(!argv.contains(&"-m".to_string()));
        let dtb = argv
            .iter()
            .position(|a| a == "-dtb")
            .and_then(|i| argv.get(i + 1))
            .expect("a -dtb argument");
        assert!(
            dtb.ends_with("shared/fixtures/dtb/bcm2711-rpi-4-b.dtb"),
            "{dtb}"
        );
        assert!(Path::new(dtb).exists(), "{dtb}");
    }

    #[test]
    fn extra_args_come_last_and_bootargs_grow() {
        let mut o = opts("--image I --qemu-arg -d --qemu-arg guest_errors");
        o.extra_bootargs = "log=debug".into();
        let argv = command_line(&o, Path::new("I"));
        assert_eq!(
            argv[argv.len() - 2..],
            ["-d".to_string(), "guest_errors".to_string()]
        );
        assert!(argv.contains(&"baton.generations=1000 baton.seed=5 log=debug".to_string()));
    }

    #[test]
    fn shell_line_quotes_what_needs_it() {
        let argv = ["a".to_string(), "b c".to_string(), "it's".to_string()];
        assert_eq!(shell_line(&argv), r"a 'b c' 'it'\''s'");
    }

    #[test]
    fn console_streams_lines_then_reports_exit() {
        let argv = ["sh", "-c", "echo one; echo two >&2; printf 'three'; exit 3"].map(String::from);
        let mut console = Console::start(&argv, Duration::from_secs(20)).expect("sh starts");
        let mut serial = Vec::new();
        let mut stderr = Vec::new();
        loop {
            match console.next() {
                Next::Line(Line::Serial(s)) => serial.push(s),
                Next::Line(Line::Stderr(s)) => stderr.push(s),
                Next::Closed => break,
                Next::TimedOut => panic!("sh timed out"),
            }
        }
        assert_eq!(serial, ["one", "three"]);
        assert_eq!(stderr, ["two"]);
        assert_eq!(console.wait().expect("wait"), Some(3));
    }

    #[test]
    fn silent_child_times_out() {
        let argv = ["sleep", "30"].map(String::from);
        let mut console = Console::start(&argv, Duration::from_millis(200)).expect("sleep starts");
        assert!(matches!(console.next(), Next::TimedOut));
        console.kill();
    }
}
