//! The kernel command line (`/chosen/bootargs`), read once into typed values.
//!
//! The one parser of the command line: the kernel, kho's scratch sizing, the handover chain,
//! the workload and the host soak runner all take values from a [`Cmdline`], never strings.
//! Linux's rules: words split at ASCII whitespace, any bytes accepted, the last occurrence
//! of a key wins, unknown words ignored. A value that does not parse (not UTF-8, not a
//! number, a size that overflows) is refused by name for its own key only ([`ArgError`]).
//! No heap (it runs before the heap exists): values borrow from the command line.

use core::fmt;

use log::LevelFilter;

/// Largest size any key accepts (4 PiB, beyond every physical address range baton maps):
/// a size below it can be rounded up to any page or 2 MiB boundary without wrapping.
pub const MAX_SIZE: u64 = 1 << 52;

/// `loglevel=`: a name (`off`, `error`, `warn`, `info`, `debug`, `trace`) or a Linux number.
pub const KEY_LOGLEVEL: &str = "loglevel";
/// `baton.test=`: a deliberate failure for the QEMU tests ([`TestAction`]).
pub const KEY_TEST: &str = "baton.test";
/// `kho_scratch=`: the scratch size (a size, not zero).
pub const KEY_KHO_SCRATCH: &str = "kho_scratch";
/// `baton.generations=`: the handover chain's length; its presence turns the chain on.
pub const KEY_GENERATIONS: &str = "baton.generations";
/// `baton.gen=`: this generation's number (written by the previous image).
pub const KEY_GEN: &str = "baton.gen";
/// `baton.seed=`: the chain's seed.
pub const KEY_SEED: &str = "baton.seed";
/// `baton.cold=`: cold generations before this one.
pub const KEY_COLD: &str = "baton.cold";
/// `baton.vbytes=`: bytes verified by the generations before this one.
pub const KEY_VBYTES: &str = "baton.vbytes";
/// `baton.leaked=`: pages leaked by the generations before this one.
pub const KEY_LEAKED: &str = "baton.leaked";
/// `baton.damage=`: test only, damage the outgoing handover (a kind name).
pub const KEY_DAMAGE: &str = "baton.damage";
/// `baton.damage-every=`: damage period.
pub const KEY_DAMAGE_EVERY: &str = "baton.damage-every";
/// `baton.preserve=`: the scaled preserved set's size.
pub const KEY_PRESERVE: &str = "baton.preserve";
/// `baton.shape=`: the scaled preserved set's shape (a name).
pub const KEY_SHAPE: &str = "baton.shape";
/// `baton.handover-format=`: `auto`, `baton` or `linux` ([`HandoverFormat`]).
pub const KEY_HANDOVER_FORMAT: &str = "baton.handover-format";
/// `baton.kho-test=`: size of Linux's test_kho-style client to write (a size).
pub const KEY_KHO_TEST: &str = "baton.kho-test";

/// Why a value was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// The value is not valid UTF-8 (only text-valued keys care).
    NotUtf8,
    /// Nothing after `=`.
    Empty,
    /// Not a number (decimal, or `0x` hex where numbers are taken).
    NotANumber,
    /// A number that does not fit 64 bits, or a size above [`MAX_SIZE`].
    Overflow,
    /// Zero where the key needs a non-zero size.
    Zero,
    /// Not one of the names the key takes.
    UnknownName,
}

impl ValueError {
    fn says(self) -> &'static str {
        match self {
            ValueError::NotUtf8 => "is not UTF-8",
            ValueError::Empty => "is empty",
            ValueError::NotANumber => "is not a number",
            ValueError::Overflow => "overflows (sizes stop at 4 PiB, numbers at 2^64-1)",
            ValueError::Zero => "must not be zero",
            ValueError::UnknownName => "names nothing this key takes",
        }
    }
}

/// A refused value: its key, its bytes, and why.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ArgError<'a> {
    pub key: &'static str,
    pub value: &'a [u8],
    pub why: ValueError,
}

impl fmt::Display for ArgError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bootarg {}={} refused: the value {}",
            self.key,
            Escaped(self.value),
            self.why.says()
        )
    }
}

/// One key's value: absent, parsed, or refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arg<'a, T> {
    Absent,
    Set(T),
    Bad(ArgError<'a>),
}

impl<'a, T: Copy> Arg<'a, T> {
    /// `Ok(None)` if absent, the value, or the refusal.
    pub fn get(&self) -> Result<Option<T>, ArgError<'a>> {
        match *self {
            Arg::Absent => Ok(None),
            Arg::Set(v) => Ok(Some(v)),
            Arg::Bad(e) => Err(e),
        }
    }

    /// The value if it parsed (absent and refused both give `None`).
    pub fn ok(&self) -> Option<T> {
        self.get().ok().flatten()
    }

    /// True unless the key is absent.
    pub fn is_present(&self) -> bool {
        !matches!(self, Arg::Absent)
    }

    fn error(&self) -> Option<ArgError<'a>> {
        match self {
            Arg::Bad(e) => Some(*e),
            _ => None,
        }
    }
}

/// A deliberate failure, for tests of the failure paths.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TestAction {
    /// Read from an unmapped address: a data abort.
    Fault,
    /// `panic!`.
    Panic,
    /// Recurse into the stack guard page.
    StackOverflow,
    /// Enter this same image again through `arch::handover::jump_to_image` (once).
    Reenter,
}

/// Which handover format goes out (`baton.handover-format=`); the default follows the
/// next image.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum HandoverFormat {
    /// baton's own format for a stamped baton next image, Linux's otherwise.
    #[default]
    Auto,
    /// Always baton's own format.
    Baton,
    /// Always Linux's `kho-v4`.
    Linux,
}

/// The whole command line, parsed once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cmdline<'a> {
    /// The bytes it was parsed from.
    pub raw: &'a [u8],
    pub log_level: Arg<'a, LevelFilter>,
    pub test: Arg<'a, TestAction>,
    /// `kho_scratch=`, bytes (non-zero, at most [`MAX_SIZE`]).
    pub kho_scratch: Arg<'a, u64>,
    pub generations: Arg<'a, u64>,
    pub gen: Arg<'a, u64>,
    pub seed: Arg<'a, u64>,
    pub cold: Arg<'a, u64>,
    pub vbytes: Arg<'a, u64>,
    pub leaked: Arg<'a, u64>,
    /// `baton.damage=`: the kind's name (the workload owns the kinds).
    pub damage: Arg<'a, &'a str>,
    pub damage_every: Arg<'a, u64>,
    /// `baton.preserve=`, bytes (0 means none).
    pub preserve: Arg<'a, u64>,
    /// `baton.shape=`: the shape's name (the workload owns the shapes).
    pub shape: Arg<'a, &'a str>,
    pub handover_format: Arg<'a, HandoverFormat>,
    /// `baton.kho-test=`, bytes (non-zero).
    pub kho_test: Arg<'a, u64>,
}

impl<'a> Cmdline<'a> {
    /// Nothing set.
    pub const fn empty() -> Self {
        Cmdline {
            raw: &[],
            log_level: Arg::Absent,
            test: Arg::Absent,
            kho_scratch: Arg::Absent,
            generations: Arg::Absent,
            gen: Arg::Absent,
            seed: Arg::Absent,
            cold: Arg::Absent,
            vbytes: Arg::Absent,
            leaked: Arg::Absent,
            damage: Arg::Absent,
            damage_every: Arg::Absent,
            preserve: Arg::Absent,
            shape: Arg::Absent,
            handover_format: Arg::Absent,
            kho_test: Arg::Absent,
        }
    }

    /// The log level (`info` unless `loglevel=` parsed).
    pub fn log_level(&self) -> LevelFilter {
        self.log_level.ok().unwrap_or(LevelFilter::Info)
    }

    /// The handover format (`auto` unless `baton.handover-format=` parsed).
    pub fn handover_format(&self) -> HandoverFormat {
        self.handover_format.ok().unwrap_or_default()
    }

    /// True if the command line asks for a handover chain (`baton.generations=` is there,
    /// even with a value the workload will refuse by name).
    pub fn chain_requested(&self) -> bool {
        self.generations.is_present()
    }

    /// Every refused value, in key order.
    pub fn errors(&self) -> impl Iterator<Item = ArgError<'a>> {
        [
            self.log_level.error(),
            self.test.error(),
            self.kho_scratch.error(),
            self.generations.error(),
            self.gen.error(),
            self.seed.error(),
            self.cold.error(),
            self.vbytes.error(),
            self.leaked.error(),
            self.damage.error(),
            self.damage_every.error(),
            self.preserve.error(),
            self.shape.error(),
            self.handover_format.error(),
            self.kho_test.error(),
        ]
        .into_iter()
        .flatten()
    }
}

impl Default for Cmdline<'_> {
    fn default() -> Self {
        Self::empty()
    }
}

/// The words of a command line (split at ASCII whitespace, any other byte kept).
pub fn words(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}

/// Parses the whole command line. Never fails: refusals are per key.
pub fn parse(raw: &[u8]) -> Cmdline<'_> {
    let mut c = Cmdline {
        raw,
        ..Cmdline::empty()
    };
    for word in words(raw) {
        let Some(eq) = word.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, v) = (&word[..eq], &word[eq + 1..]);
        // The key is compared as bytes: a non-UTF-8 key is simply not one of ours.
        match key {
            k if k == KEY_LOGLEVEL.as_bytes() => c.log_level = typed(KEY_LOGLEVEL, v, level),
            k if k == KEY_TEST.as_bytes() => c.test = typed(KEY_TEST, v, test_action),
            k if k == KEY_KHO_SCRATCH.as_bytes() => {
                c.kho_scratch = typed(KEY_KHO_SCRATCH, v, nonzero_size)
            }
            k if k == KEY_GENERATIONS.as_bytes() => {
                c.generations = typed(KEY_GENERATIONS, v, parse_number)
            }
            k if k == KEY_GEN.as_bytes() => c.gen = typed(KEY_GEN, v, parse_number),
            k if k == KEY_SEED.as_bytes() => c.seed = typed(KEY_SEED, v, parse_number),
            k if k == KEY_COLD.as_bytes() => c.cold = typed(KEY_COLD, v, parse_number),
            k if k == KEY_VBYTES.as_bytes() => c.vbytes = typed(KEY_VBYTES, v, parse_number),
            k if k == KEY_LEAKED.as_bytes() => c.leaked = typed(KEY_LEAKED, v, parse_number),
            k if k == KEY_DAMAGE.as_bytes() => c.damage = typed(KEY_DAMAGE, v, text),
            k if k == KEY_DAMAGE_EVERY.as_bytes() => {
                c.damage_every = typed(KEY_DAMAGE_EVERY, v, parse_number)
            }
            k if k == KEY_PRESERVE.as_bytes() => c.preserve = typed(KEY_PRESERVE, v, parse_size),
            k if k == KEY_SHAPE.as_bytes() => c.shape = typed(KEY_SHAPE, v, text),
            k if k == KEY_HANDOVER_FORMAT.as_bytes() => {
                c.handover_format = typed(KEY_HANDOVER_FORMAT, v, handover_format)
            }
            k if k == KEY_KHO_TEST.as_bytes() => c.kho_test = typed(KEY_KHO_TEST, v, nonzero_size),
            _ => {}
        }
    }
    c
}

fn typed<'a, T>(
    key: &'static str,
    v: &'a [u8],
    f: impl FnOnce(&'a [u8]) -> Result<T, ValueError>,
) -> Arg<'a, T> {
    match f(v) {
        Ok(t) => Arg::Set(t),
        Err(why) => Arg::Bad(ArgError { key, value: v, why }),
    }
}

fn text(v: &[u8]) -> Result<&str, ValueError> {
    if v.is_empty() {
        return Err(ValueError::Empty);
    }
    core::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)
}

fn digits(v: &[u8], radix: u64) -> Result<u64, ValueError> {
    if v.is_empty() {
        return Err(ValueError::NotANumber);
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            b'a'..=b'f' => u64::from(b - b'a') + 10,
            b'A'..=b'F' => u64::from(b - b'A') + 10,
            _ => return Err(ValueError::NotANumber),
        };
        if d >= radix {
            return Err(ValueError::NotANumber);
        }
        acc.checked_mul(radix)
            .and_then(|a| a.checked_add(d))
            .ok_or(ValueError::Overflow)
    })
}

/// A number: decimal, or hexadecimal after `0x`/`0X`; anything above `u64::MAX` is
/// [`ValueError::Overflow`].
pub fn parse_number(v: &[u8]) -> Result<u64, ValueError> {
    if v.is_empty() {
        return Err(ValueError::Empty);
    }
    match v.strip_prefix(b"0x").or_else(|| v.strip_prefix(b"0X")) {
        Some(hex) => digits(hex, 16),
        None => digits(v, 10),
    }
}

/// A size: decimal digits with an optional binary suffix `K`, `M`, `G` or `T` (either
/// case). At most [`MAX_SIZE`]; zero is allowed (callers that need more say so).
pub fn parse_size(v: &[u8]) -> Result<u64, ValueError> {
    let (&last, head) = v.split_last().ok_or(ValueError::Empty)?;
    let (num, shift) = match last {
        b'k' | b'K' => (head, 10),
        b'm' | b'M' => (head, 20),
        b'g' | b'G' => (head, 30),
        b't' | b'T' => (head, 40),
        _ => (v, 0),
    };
    let n = digits(num, 10)?;
    n.checked_mul(1 << shift)
        .filter(|&b| b <= MAX_SIZE)
        .ok_or(ValueError::Overflow)
}

fn nonzero_size(v: &[u8]) -> Result<u64, ValueError> {
    match parse_size(v)? {
        0 => Err(ValueError::Zero),
        n => Ok(n),
    }
}

fn level(v: &[u8]) -> Result<LevelFilter, ValueError> {
    Ok(match v {
        b"off" => LevelFilter::Off,
        b"error" => LevelFilter::Error,
        b"warn" => LevelFilter::Warn,
        b"info" => LevelFilter::Info,
        b"debug" => LevelFilter::Debug,
        b"trace" => LevelFilter::Trace,
        n => match digits(n, 10).map_err(|_| ValueError::UnknownName)? {
            0..=3 => LevelFilter::Error,
            4 => LevelFilter::Warn,
            5..=6 => LevelFilter::Info,
            7 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        },
    })
}

fn test_action(v: &[u8]) -> Result<TestAction, ValueError> {
    Ok(match v {
        b"fault" => TestAction::Fault,
        b"panic" => TestAction::Panic,
        b"stack-overflow" => TestAction::StackOverflow,
        b"reenter" => TestAction::Reenter,
        _ => return Err(ValueError::UnknownName),
    })
}

fn handover_format(v: &[u8]) -> Result<HandoverFormat, ValueError> {
    Ok(match v {
        b"auto" => HandoverFormat::Auto,
        b"baton" => HandoverFormat::Baton,
        b"linux" => HandoverFormat::Linux,
        _ => return Err(ValueError::UnknownName),
    })
}

/// Shows bytes as text: printable ASCII as is, every other byte as `\xNN`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if b == b' ' || b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
