//! Kernel command line (`/chosen/bootargs`) options baton understands.
//!
//! `loglevel=` takes a name (`off`, `error`, `warn`, `info`, `debug`, `trace`) or a Linux
//! number (0-3 error, 4 warn, 5-6 info, 7 debug, 8 trace). `baton.test=` selects a
//! deliberate failure for the QEMU tests. Unknown words are ignored.

use log::LevelFilter;

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

/// Options from bootargs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BootArgs {
    pub log_level: LevelFilter,
    pub test: Option<TestAction>,
}

impl Default for BootArgs {
    fn default() -> Self {
        Self {
            log_level: LevelFilter::Info,
            test: None,
        }
    }
}

/// Parses `loglevel=` / `baton.test=` out of a command line.
pub fn parse(cmdline: &str) -> BootArgs {
    let mut args = BootArgs::default();
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("loglevel=") {
            if let Some(l) = parse_level(v) {
                args.log_level = l;
            }
        } else if let Some(v) = word.strip_prefix("baton.test=") {
            args.test = match v {
                "fault" => Some(TestAction::Fault),
                "panic" => Some(TestAction::Panic),
                "stack-overflow" => Some(TestAction::StackOverflow),
                "reenter" => Some(TestAction::Reenter),
                _ => None,
            };
        }
    }
    args
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        n => match n.parse::<u8>().ok()? {
            0..=3 => LevelFilter::Error,
            4 => LevelFilter::Warn,
            5..=6 => LevelFilter::Info,
            7 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loglevel_accepts_names_and_linux_numbers() {
        assert_eq!(parse("loglevel=debug").log_level, LevelFilter::Debug);
        assert_eq!(
            parse("console=ttyAMA0 loglevel=4 quiet").log_level,
            LevelFilter::Warn
        );
        assert_eq!(parse("loglevel=8").log_level, LevelFilter::Trace);
        assert_eq!(parse("loglevel=bogus").log_level, LevelFilter::Info);
        assert_eq!(parse("").log_level, LevelFilter::Info);
    }

    #[test]
    fn test_actions_are_recognised() {
        assert_eq!(parse("baton.test=fault").test, Some(TestAction::Fault));
        assert_eq!(
            parse("baton.test=stack-overflow").test,
            Some(TestAction::StackOverflow)
        );
        assert_eq!(parse("baton.test=nothing").test, None);
    }
}
