//! The console log line's prefix, `[    0.001234] INFO  `, written digit by digit.
//!
//! Owns only that text: the same bytes `format!("[{:5}.{:06}] {:<5} ", s, us, level)` gives,
//! without `core::fmt`'s padding machinery (about a third of a log line's cost on the target,
//! and a warm boot logs some twenty lines inside the handover blackout). Never allocates.

/// Longest prefix: `[`, 20 digits of seconds, `.`, 6 digits, `] `, a level of up to 5
/// letters padded to 5, a space.
pub const PREFIX_MAX: usize = 1 + 20 + 1 + 6 + 2 + 5 + 1;

/// Width the seconds are right-aligned to.
const SECS_WIDTH: usize = 5;
/// Width the level name is left-aligned to.
const LEVEL_WIDTH: usize = 5;

/// Writes the prefix of a line logged `micros` after the counter started at `level` (`INFO`,
/// `WARN`, ...) into `buf`; returns its length.
pub fn prefix(buf: &mut [u8; PREFIX_MAX], micros: u64, level: &str) -> usize {
    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
    let mut digits = [b' '; 20];
    let mut n = 0;
    let mut s = secs;
    loop {
        digits[19 - n] = b'0' + (s % 10) as u8;
        n += 1;
        s /= 10;
        if s == 0 {
            break;
        }
    }
    let width = n.max(SECS_WIDTH);
    let mut at = 0;
    buf[at] = b'[';
    at += 1;
    buf[at..at + width].copy_from_slice(&digits[20 - width..]);
    at += width;
    buf[at] = b'.';
    at += 1;
    let mut f = frac;
    for i in (0..6).rev() {
        buf[at + i] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    at += 6;
    buf[at..at + 2].copy_from_slice(b"] ");
    at += 2;
    let level = &level.as_bytes()[..level.len().min(LEVEL_WIDTH)];
    buf[at..at + level.len()].copy_from_slice(level);
    buf[at + level.len()..at + LEVEL_WIDTH + 1].fill(b' ');
    at + LEVEL_WIDTH + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    fn text(micros: u64, level: &str) -> std::string::String {
        let mut buf = [0u8; PREFIX_MAX];
        let n = prefix(&mut buf, micros, level);
        std::str::from_utf8(&buf[..n]).unwrap().into()
    }

    /// The bytes `format!` gives, for every level and for seconds of 1 to 20 digits.
    #[test]
    fn prefix_is_what_format_writes() {
        for level in ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"] {
            for micros in [
                0,
                1,
                999_999,
                1_000_000,
                33_700_123,
                99_999_999_999,
                u64::MAX,
            ] {
                let want = format!(
                    "[{:5}.{:06}] {:<5} ",
                    micros / 1_000_000,
                    micros % 1_000_000,
                    level
                );
                assert_eq!(text(micros, level), want);
            }
        }
        assert_eq!(text(33_700, "INFO"), "[    0.033700] INFO  ");
    }
}
