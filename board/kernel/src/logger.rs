//! The `log` backend: one line per record on the console, `[    0.001234] INFO  target: msg`,
//! stamped with the generic timer (time since the counter started, i.e. QEMU start).
//!
//! Never allocates. The level comes from `loglevel=` in bootargs.

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
        drivers::console::write_fmt(format_args!(
            "[{:5}.{:06}] {:<5} {}: {}\n",
            us / 1_000_000,
            us % 1_000_000,
            record.level(),
            record.target().split("::").next().unwrap_or(""),
            record.args()
        ));
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
