//! Command-line options of the soak runner, parsed by hand (`--opt value` or `--opt=value`).
//!
//! Owns the `Options` type, its defaults and `CliError`. It never touches the file system
//! or starts anything; a bad option is an error value, never a panic.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub const USAGE: &str = "\
usage: soak --image <Image> [--board virt|rpi4] [--el 1|2] [--generations N] [--seed S]
            [--expect-cold] [--extra-bootargs \"...\"] [--mem SIZE] [--initrd FILE] [--dtb FILE]
            [--report-dir DIR] [--timeout-secs T] [--qemu BIN] [--qemu-arg ARG]...
       soak --replay LOGFILE [same options, --image not needed]

Boots <Image> once in QEMU with `baton.generations=N baton.seed=S`, checks every GEN line
of the handover chain as it arrives, and writes report.md, handover.svg and console.log to
the report directory (default target/soak/<board>-<seed>-<generations>/).
Exit status: 0 when every check passed, 1 on the first failure, 2 on a usage error.";

/// Which machine QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    Virt,
    Rpi4,
}

impl Board {
    pub fn name(self) -> &'static str {
        match self {
            Self::Virt => "virt",
            Self::Rpi4 => "rpi4",
        }
    }
}

/// Everything a soak run needs to know, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub image: Option<PathBuf>,
    pub board: Board,
    pub el: u8,
    pub generations: u32,
    pub seed: u64,
    /// False when the seed was picked by the runner, so the report says so.
    pub seed_given: bool,
    pub expect_cold: bool,
    pub extra_bootargs: String,
    /// Guest RAM on virt (QEMU `-m`), default 1G; raspi4b's is fixed by the machine.
    pub mem: String,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub report_dir: Option<PathBuf>,
    pub timeout_secs: u64,
    pub qemu: String,
    pub qemu_args: Vec<String>,
    pub replay: Option<PathBuf>,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// `--help`: not an error, but parsing stops there.
    Help,
    UnknownOption(String),
    MissingValue(&'static str),
    BadValue {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    MissingImage,
    /// QEMU's raspi4b enters a `-kernel` image at EL2; EL1 is not on offer.
    Rpi4AtEl1,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Help => write!(f, "help requested"),
            Self::UnknownOption(opt) => write!(f, "unknown option `{opt}`"),
            Self::MissingValue(opt) => write!(f, "`{opt}` needs a value"),
            Self::BadValue {
                option,
                value,
                expected,
            } => write!(f, "`{option} {value}`: expected {expected}"),
            Self::MissingImage => write!(f, "`--image` is required unless `--replay` is given"),
            Self::Rpi4AtEl1 => write!(
                f,
                "QEMU raspi4b always enters the image at EL2; use `--el 2` with `--board rpi4`"
            ),
        }
    }
}

/// The default run timeout: two minutes to boot plus a second per generation, and 16 s per
/// GiB of `baton.preserve=` per generation (filling, verifying and handing it over takes
/// about 6 s per GiB under TCG on this project's 2-core machines).
pub fn default_timeout_secs(generations: u32, extra_bootargs: &str) -> u64 {
    // The guest's own command line parser: the same keys, sizes and last-wins rule.
    let preserve_mib = board::cmdline::parse(extra_bootargs.as_bytes())
        .preserve
        .ok()
        .map_or(0, |bytes| bytes >> 20);
    120 + u64::from(generations) * (1 + preserve_mib.div_ceil(64))
}

fn parse<T: FromStr>(
    option: &'static str,
    value: String,
    expected: &'static str,
) -> Result<T, CliError> {
    value.parse().map_err(|_| CliError::BadValue {
        option,
        value,
        expected,
    })
}

/// Parses the arguments after the program name; `fallback_seed` is used when no
/// `--seed` is given.
pub fn parse_args<I>(args: I, fallback_seed: u64) -> Result<Options, CliError>
where
    I: IntoIterator<Item = String>,
{
    let mut o = defaults(fallback_seed);
    let mut timeout = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        // Every option that takes a value names itself here, for the error messages.
        let mut value = |option: &'static str| -> Result<String, CliError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().ok_or(CliError::MissingValue(option)),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Err(CliError::Help),
            "--expect-cold" => o.expect_cold = true,
            "--image" => o.image = Some(value("--image")?.into()),
            "--board" => o.board = board(&value("--board")?)?,
            "--el" => o.el = el(&value("--el")?)?,
            "--generations" => {
                o.generations = parse("--generations", value("--generations")?, "a count ≥ 1")?;
                if o.generations == 0 {
                    return Err(CliError::BadValue {
                        option: "--generations",
                        value: "0".into(),
                        expected: "a count ≥ 1",
                    });
                }
            }
            "--seed" => {
                // An empty seed (`SEED=` in make) means "pick one", like no `--seed`.
                let seed = value("--seed")?;
                if !seed.is_empty() {
                    o.seed = parse("--seed", seed, "an unsigned 64-bit integer")?;
                    o.seed_given = true;
                }
            }
            "--extra-bootargs" => o.extra_bootargs = value("--extra-bootargs")?,
            "--mem" => o.mem = value("--mem")?,
            "--initrd" => o.initrd = Some(value("--initrd")?.into()),
            "--dtb" => o.dtb = Some(value("--dtb")?.into()),
            "--report-dir" => o.report_dir = Some(value("--report-dir")?.into()),
            "--timeout-secs" => {
                timeout = Some(parse(
                    "--timeout-secs",
                    value("--timeout-secs")?,
                    "whole seconds",
                )?)
            }
            "--qemu" => o.qemu = value("--qemu")?,
            "--qemu-arg" => o.qemu_args.push(value("--qemu-arg")?),
            "--replay" => o.replay = Some(value("--replay")?.into()),
            _ => return Err(CliError::UnknownOption(arg)),
        }
    }
    finish(o, timeout)
}

/// Every option at its default.
fn defaults(seed: u64) -> Options {
    Options {
        image: None,
        board: Board::Virt,
        el: 0,
        generations: 1000,
        seed,
        seed_given: false,
        expect_cold: false,
        extra_bootargs: String::new(),
        mem: "1G".to_string(),
        initrd: None,
        dtb: None,
        report_dir: None,
        timeout_secs: 0,
        qemu: "qemu-system-aarch64".to_string(),
        qemu_args: Vec::new(),
        replay: None,
    }
}

/// `--board virt|rpi4`.
fn board(v: &str) -> Result<Board, CliError> {
    match v {
        "virt" => Ok(Board::Virt),
        "rpi4" => Ok(Board::Rpi4),
        other => Err(CliError::BadValue {
            option: "--board",
            value: other.to_string(),
            expected: "virt or rpi4",
        }),
    }
}

/// `--el 1|2`.
fn el(v: &str) -> Result<u8, CliError> {
    match v {
        "1" => Ok(1),
        "2" => Ok(2),
        other => Err(CliError::BadValue {
            option: "--el",
            value: other.to_string(),
            expected: "1 or 2",
        }),
    }
}

/// The defaults that depend on other options, and the checks across options.
fn finish(mut o: Options, timeout: Option<u64>) -> Result<Options, CliError> {
    if o.el == 0 {
        o.el = match o.board {
            Board::Virt => 1,
            Board::Rpi4 => 2,
        };
    }
    if o.board == Board::Rpi4 && o.el == 1 {
        return Err(CliError::Rpi4AtEl1);
    }
    if o.image.is_none() && o.replay.is_none() {
        return Err(CliError::MissingImage);
    }
    o.timeout_secs =
        timeout.unwrap_or_else(|| default_timeout_secs(o.generations, &o.extra_bootargs));
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Options, CliError> {
        parse_args(line.split_whitespace().map(String::from), 77)
    }

    #[test]
    fn defaults_fill_in_around_the_image() {
        let o = args("--image out/Image").expect("valid");
        assert_eq!(o.image, Some(PathBuf::from("out/Image")));
        assert_eq!((o.board, o.el, o.generations), (Board::Virt, 1, 1000));
        assert_eq!((o.seed, o.seed_given), (77, false));
        assert_eq!(o.timeout_secs, 1120);
    }

    #[test]
    fn every_option_is_read_in_both_spellings() {
        let o = args(
            "--image=I --board rpi4 --generations=5 --seed 9 --expect-cold --timeout-secs 3 \
             --qemu-arg -d --qemu-arg=int --report-dir r --initrd rd --dtb t.dtb",
        )
        .expect("valid");
        assert_eq!(
            (o.board, o.el, o.generations, o.seed),
            (Board::Rpi4, 2, 5, 9)
        );
        assert!(o.expect_cold && o.seed_given);
        assert_eq!(o.timeout_secs, 3);
        assert_eq!(o.qemu_args, vec!["-d".to_string(), "int".to_string()]);
        assert_eq!(o.dtb, Some(PathBuf::from("t.dtb")));
    }

    #[test]
    fn the_timeout_grows_with_the_preserved_set() {
        assert_eq!(default_timeout_secs(10, ""), 130);
        assert_eq!(default_timeout_secs(10, "baton.preserve=64M"), 140);
        assert_eq!(
            default_timeout_secs(200, "x=1 baton.preserve=1G baton.shape=scatter"),
            120 + 200 * 17
        );
    }

    #[test]
    fn the_timeout_uses_the_guest_size_parser() {
        // Finding 5: the runner had its own size parser, which wrapped 2^34+1 GiB to 1 GiB.
        assert_eq!(default_timeout_secs(10, "baton.preserve=17179869185G"), 130);
        // Last occurrence wins, as in the guest.
        assert_eq!(
            default_timeout_secs(10, "baton.preserve=1G baton.preserve=64M"),
            140
        );
    }

    #[test]
    fn extra_bootargs_keep_their_spaces() {
        let argv = ["--image", "I", "--extra-bootargs", "a=1 b=2"].map(String::from);
        let o = parse_args(argv, 0).expect("valid");
        assert_eq!(o.extra_bootargs, "a=1 b=2");
    }

    #[test]
    fn bad_input_is_refused_with_the_option_named() {
        assert_eq!(args("--seed"), Err(CliError::MissingValue("--seed")));
        assert!(matches!(
            args("--image I --generations x"),
            Err(CliError::BadValue {
                option: "--generations",
                ..
            })
        ));
        assert!(matches!(
            args("--image I --generations 0"),
            Err(CliError::BadValue {
                option: "--generations",
                ..
            })
        ));
        assert_eq!(
            args("--image I --board rpi4 --el 1"),
            Err(CliError::Rpi4AtEl1)
        );
        assert_eq!(args("--board virt"), Err(CliError::MissingImage));
        assert_eq!(
            args("--image I --frobnicate"),
            Err(CliError::UnknownOption("--frobnicate".into()))
        );
        assert!(args("--replay console.log").is_ok());
        let o = parse_args(["--image", "I", "--seed", ""].map(String::from), 4).expect("valid");
        assert_eq!((o.seed, o.seed_given), (4, false));
    }
}
