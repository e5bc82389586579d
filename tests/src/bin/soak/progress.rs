//! The progress display on stderr: a one-line bar redrawn in place on a terminal, plain
//! periodic lines otherwise (CI logs).
//!
//! Owns only stderr's current line; stdout is left to the summary. Write errors on stderr
//! are ignored: progress is a courtesy, never a reason to fail a soak.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const BAR_WIDTH: usize = 30;
/// A terminal bar is redrawn at most this often.
const REDRAW: Duration = Duration::from_millis(100);
/// Plain mode prints a line at least this often while generations arrive.
const PLAIN_EVERY: Duration = Duration::from_secs(15);

/// Progress of one soak of `total` generations.
pub struct Progress {
    total: u32,
    start: Instant,
    terminal: bool,
    /// Unit tests keep stderr quiet: the harness does not capture direct writes.
    quiet: bool,
    last_draw: Option<Instant>,
    /// Plain mode: the tenth of the run last reported.
    last_tenth: u32,
}

/// `1h02m03s`-style duration, coarse on purpose.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60),
    }
}

/// The text of the bar for `done` of `total` after `elapsed`.
pub fn bar_text(done: u32, total: u32, elapsed: Duration) -> String {
    let total_f = f64::from(total.max(1));
    let filled = ((f64::from(done) / total_f) * BAR_WIDTH as f64) as usize;
    let filled = filled.min(BAR_WIDTH);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        f64::from(done) / secs
    } else {
        0.0
    };
    let eta = if rate > 0.0 && done < total {
        human_duration(Duration::from_secs_f64(f64::from(total - done) / rate))
    } else {
        "-".to_string()
    };
    format!(
        "[{}{}] {done}/{total} gen/s={rate:.1} eta={eta}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled)
    )
}

impl Progress {
    pub fn new(total: u32) -> Self {
        Self {
            total,
            start: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            quiet: cfg!(test),
            last_draw: None,
            last_tenth: 0,
        }
    }

    /// Records that `done` generations have passed their checks.
    pub fn update(&mut self, done: u32) {
        let now = Instant::now();
        let since = self.last_draw.map(|t| now.duration_since(t));
        if self.terminal {
            if since.is_none_or(|d| d >= REDRAW) || done == self.total {
                self.draw(done, now);
            }
            return;
        }
        let tenth = done.saturating_mul(10) / self.total.max(1);
        if tenth > self.last_tenth || since.is_none_or(|d| d >= PLAIN_EVERY) {
            self.last_tenth = tenth;
            self.draw(done, now);
        }
    }

    fn draw(&mut self, done: u32, now: Instant) {
        self.last_draw = Some(now);
        if self.quiet {
            return;
        }
        let text = bar_text(done, self.total, now.duration_since(self.start));
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r{text}\x1b[K")
        } else {
            writeln!(err, "soak: {text}")
        };
        let _ = err.flush();
    }

    /// Ends the bar's line so that what follows starts on a fresh one.
    pub fn finish(&mut self) {
        if self.terminal && !self.quiet && self.last_draw.is_some() {
            let _ = writeln!(std::io::stderr());
        }
        self.last_draw = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_shows_count_rate_and_eta() {
        let text = bar_text(417, 1000, Duration::from_secs(10));
        assert_eq!(
            text,
            "[############..................] 417/1000 gen/s=41.7 eta=13s"
        );
    }

    #[test]
    fn finished_bar_is_full_without_eta() {
        let text = bar_text(10, 10, Duration::from_secs(2));
        assert_eq!(text, format!("[{}] 10/10 gen/s=5.0 eta=-", "#".repeat(30)));
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(3723)), "1h02m03s");
    }
}
