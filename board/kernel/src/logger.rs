//! The `log` backend: one line per record on the console, `[    0.001234] INFO  target: msg`,
//! stamped with the generic timer (time since the counter started, i.e. QEMU start).
//!
//! Never allocates. The level comes from `loglevel=` in bootargs.

use board::logline;
use log::{LevelFilter, Log, Metadata, Record};

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = arch::timer::uptime_micros();
        let mut prefix = [0u8; logline::PREFIX_MAX];
        let n = logline::prefix(&mut prefix, us, record.level().as_str());
        // The prefix is ASCII (digits, brackets, a level name): `utf8`'s ASCII fast path.
        let prefix = baton_fdt::utf8(&prefix[..n]).unwrap_or("");
        // The crate: the target up to its first `::`.
        let target = record.target();
        let crate_name = target
            .as_bytes()
            .windows(2)
            .position(|w| w == b"::")
            .map_or(target, |i| &target[..i]);
        drivers::console::write_fmt(format_args!("{prefix}{crate_name}: {}\n", record.args()));
    }

    fn flush(&self) {
        drivers::console::flush();
    }
}

/// Installs the console logger at `level`.
pub fn init(level: LevelFilter) {
    // A second call only keeps the first logger; the level is updated either way.
    // `set_logger` is a compare-and-swap, which may never succeed with the MMU off (this
    // runs before it; docs/hardware.md); the racy variant is a load and a store.
    // SAFETY: no other `set_logger*` call can race this one: baton runs on one core with
    // interrupts masked, and only `kernel_main` calls `init`.
    let _ = unsafe { log::set_logger_racy(&LOGGER) };
    log::set_max_level(level);
}
