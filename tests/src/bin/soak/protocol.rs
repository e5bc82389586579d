//! The guest's soak line protocol: finds a `GEN`, `SOAK` or `FAIL` record anywhere in a
//! console line (after any log prefix) and parses its `key=value` fields.
//!
//! Owns the record types and their parse errors. Text in, typed records out: it never
//! applies a check that spans lines (that is `check`), and guest output never panics it.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use workload::{GenReport, GenValue, GEN_FIELDS};

/// One generation's report: `GEN n=.. cold=.. ... handover_us=..`. The known keys are the
/// guest's own [`GenReport`] (defined once, in the workload, by [`GEN_FIELDS`]); reading
/// `g.n` goes through to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRecord {
    /// The fields the guest defines.
    pub report: GenReport,
    /// Keys this runner does not know, in line order; kept, never checked.
    pub extra: Vec<(String, String)>,
}

impl Deref for GenRecord {
    type Target = GenReport;

    fn deref(&self) -> &GenReport {
        &self.report
    }
}

/// How the guest judged the whole chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoakStatus {
    Ok,
    Fail,
}

/// The end-of-chain summary: `SOAK generations=.. cold=.. verified_bytes=.. leaked=.. status=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakRecord {
    pub generations: u32,
    pub cold: u32,
    pub verified_bytes: u64,
    pub leaked: u64,
    pub status: SoakStatus,
}

/// A failure the guest found itself: `FAIL gen=.. check=.. detail=<rest of line>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRecord {
    pub gen: u32,
    pub check: String,
    pub detail: String,
}

/// A protocol record found in a console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Gen(GenRecord),
    Soak(SoakRecord),
    Fail(FailRecord),
}

/// Why a line that carries a marker is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A required key is absent.
    MissingField {
        record: &'static str,
        key: &'static str,
    },
    /// A key's value does not parse as the type the protocol gives it.
    BadValue {
        record: &'static str,
        key: &'static str,
        value: String,
    },
    /// The same key appears twice in one record.
    DuplicateKey { record: &'static str, key: String },
    /// A token after the marker is not `key=value`.
    NotKeyValue { record: &'static str, token: String },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingField { record, key } => write!(f, "{record} line has no `{key}=`"),
            Self::BadValue { record, key, value } => {
                write!(f, "{record} line has a bad value `{key}={value}`")
            }
            Self::DuplicateKey { record, key } => {
                write!(f, "{record} line has `{key}=` more than once")
            }
            Self::NotKeyValue { record, token } => {
                write!(f, "{record} line has `{token}` where a key=value belongs")
            }
        }
    }
}

impl ParseError {
    /// The marker of the record that failed to parse: `GEN`, `SOAK` or `FAIL`.
    pub fn record(&self) -> &'static str {
        match self {
            Self::MissingField { record, .. }
            | Self::BadValue { record, .. }
            | Self::DuplicateKey { record, .. }
            | Self::NotKeyValue { record, .. } => record,
        }
    }
}

const MARKERS: [&str; 3] = ["GEN", "SOAK", "FAIL"];

/// Finds the first protocol marker in `line` and parses the record after it.
///
/// A marker counts only as a whole word followed by a space and a `key=` token, so log
/// text such as `REGEN` or `FAILED to map` is not mistaken for a record. Returns `None`
/// for a line without a marker.
pub fn parse_line(line: &str) -> Option<Result<Record, ParseError>> {
    let (marker, body) = find_marker(line)?;
    Some(match marker {
        "GEN" => parse_gen(body).map(Record::Gen),
        "SOAK" => parse_soak(body).map(Record::Soak),
        _ => parse_fail(body).map(Record::Fail),
    })
}

/// Returns the earliest marker in `line` and the text after `"<marker> "`.
fn find_marker(line: &str) -> Option<(&'static str, &str)> {
    let mut best: Option<(usize, &'static str, &str)> = None;
    for marker in MARKERS {
        for (at, _) in line.match_indices(marker) {
            if best.is_some_and(|(b, _, _)| b <= at) {
                break;
            }
            let word_start = line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let Some(body) = line[at + marker.len()..].strip_prefix(' ') else {
                continue;
            };
            let first = body.split_whitespace().next().unwrap_or("");
            let keyed = first.find('=').is_some_and(|eq| eq > 0);
            if word_start && keyed {
                best = Some((at, marker, body));
                break;
            }
        }
    }
    best.map(|(_, marker, body)| (marker, body))
}

/// The `key=value` tokens of one record, taken out one by one by the record parser.
struct Fields<'a> {
    record: &'static str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn split(record: &'static str, body: &'a str) -> Result<Self, ParseError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for token in body.split_whitespace() {
            let Some((key, value)) = token.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(ParseError::NotKeyValue {
                    record,
                    token: token.to_string(),
                });
            };
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(ParseError::DuplicateKey {
                    record,
                    key: key.to_string(),
                });
            }
            pairs.push((key, value));
        }
        Ok(Self { record, pairs })
    }

    fn raw(&mut self, key: &'static str) -> Result<&'a str, ParseError> {
        let at =
            self.pairs
                .iter()
                .position(|(k, _)| *k == key)
                .ok_or(ParseError::MissingField {
                    record: self.record,
                    key,
                })?;
        Ok(self.pairs.remove(at).1)
    }

    fn take<T: FromStr>(&mut self, key: &'static str) -> Result<T, ParseError> {
        let value = self.raw(key)?;
        value.parse().map_err(|_| ParseError::BadValue {
            record: self.record,
            key,
            value: value.to_string(),
        })
    }

    fn rest(self) -> Vec<(String, String)> {
        self.pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn parse_gen(body: &str) -> Result<GenRecord, ParseError> {
    let mut f = Fields::split("GEN", body)?;
    let mut report = GenReport::default();
    for field in &GEN_FIELDS {
        let raw = f.raw(field.key)?;
        let value = match field.value {
            GenValue::Count => raw.parse().ok(),
            GenValue::Flag => match raw {
                "0" => Some(0),
                "1" => Some(1),
                _ => None,
            },
        };
        if !value.is_some_and(|v| (field.set)(&mut report, v)) {
            return Err(ParseError::BadValue {
                record: "GEN",
                key: field.key,
                value: raw.to_string(),
            });
        }
    }
    Ok(GenRecord {
        report,
        extra: f.rest(),
    })
}

fn parse_soak(body: &str) -> Result<SoakRecord, ParseError> {
    let mut f = Fields::split("SOAK", body)?;
    let generations = f.take("generations")?;
    let cold = f.take("cold")?;
    let verified_bytes = f.take("verified_bytes")?;
    let leaked = f.take("leaked")?;
    let status = match f.raw("status")? {
        "ok" => SoakStatus::Ok,
        "fail" => SoakStatus::Fail,
        other => {
            return Err(ParseError::BadValue {
                record: "SOAK",
                key: "status",
                value: other.to_string(),
            })
        }
    };
    Ok(SoakRecord {
        generations,
        cold,
        verified_bytes,
        leaked,
        status,
    })
}

/// `detail=` runs to the end of the line, spaces included; the keys before it are
/// ordinary tokens. A missing `detail=` gives an empty detail.
fn parse_fail(body: &str) -> Result<FailRecord, ParseError> {
    let (head, detail) = match detail_start(body) {
        Some(at) => (&body[..at], body[at + "detail=".len()..].trim_end()),
        None => (body, ""),
    };
    let mut f = Fields::split("FAIL", head)?;
    Ok(FailRecord {
        gen: f.take("gen")?,
        check: f.raw("check")?.to_string(),
        detail: detail.to_string(),
    })
}

/// Byte offset of the first `detail=` that starts a token.
fn detail_start(body: &str) -> Option<usize> {
    body.match_indices("detail=")
        .map(|(at, _)| at)
        .find(|&at| at == 0 || body[..at].ends_with(char::is_whitespace))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A well-formed GEN line for generation `n`, with the given overrides appended.
    pub(crate) fn gen_line(n: u32, cold: bool, leaked: u64, handover_us: u64) -> String {
        format!(
            "GEN n={n} cold={} restored=3 verified_bytes=4096 freed=1 split=1 preserved=2 \
             preserved_pages=9 free_pages=200000 total_pages=262144 leaked={leaked} \
             bad_pages=0 handover_us={handover_us} {PHASES}",
            u8::from(cold)
        )
    }

    /// The GEN line's blackout phases and after-blackout figures (all 0 in fixtures).
    pub(crate) const PHASES: &str = "blocks=0 finalize_us=0 copyout_us=0 trampoline_us=0 \
        early_us=0 reserve_us=0 ready_us=0 restore_us=0 verify_us=0 deferred_us=0";

    fn gen(line: &str) -> Result<GenRecord, ParseError> {
        match parse_line(line) {
            Some(Ok(Record::Gen(g))) => Ok(g),
            Some(Err(e)) => Err(e),
            other => panic!("not a GEN line: {other:?}"),
        }
    }

    #[test]
    fn bare_gen_line_parses_every_field() {
        let g = gen(&gen_line(7, false, 0, 1234)).expect("valid line");
        assert_eq!(g.n, 7);
        assert!(!g.cold);
        assert_eq!(g.restored, 3);
        assert_eq!(g.verified_bytes, 4096);
        assert_eq!(g.preserved_pages, 9);
        assert_eq!(g.total_pages, 262_144);
        assert_eq!(g.handover_us, 1234);
        assert!(g.extra.is_empty());
    }

    #[test]
    fn gen_line_after_log_prefix_parses() {
        let line = format!("[    1.234567] INFO baton: {}", gen_line(3, true, 0, 0));
        let g = gen(&line).expect("valid line");
        assert_eq!((g.n, g.cold), (3, true));
    }

    #[test]
    fn gen_keys_in_any_order_and_unknown_keys_are_kept() {
        let line = format!(
            "GEN {PHASES} handover_us=5 bad_pages=0 leaked=0 total_pages=10 free_pages=4 \
             preserved_pages=1 preserved=1 split=0 freed=0 verified_bytes=8 \
             restored=1 cold=0 n=2 future=yes"
        );
        let g = gen(&line).expect("valid line");
        assert_eq!((g.n, g.handover_us, g.total_pages), (2, 5, 10));
        assert_eq!(g.extra, vec![("future".to_string(), "yes".to_string())]);
    }

    #[test]
    fn gen_line_without_leaked_names_the_missing_key() {
        let line = gen_line(1, false, 0, 9).replace("leaked=0 ", "");
        assert_eq!(
            gen(&line),
            Err(ParseError::MissingField {
                record: "GEN",
                key: "leaked"
            })
        );
    }

    #[test]
    fn garbled_numbers_and_flags_are_bad_values() {
        let line = gen_line(1, false, 0, 9).replace("handover_us=9", "handover_us=9x");
        assert_eq!(
            gen(&line),
            Err(ParseError::BadValue {
                record: "GEN",
                key: "handover_us",
                value: "9x".to_string()
            })
        );
        let line = gen_line(1, false, 0, 9).replace("cold=0", "cold=2");
        assert_eq!(
            gen(&line),
            Err(ParseError::BadValue {
                record: "GEN",
                key: "cold",
                value: "2".to_string()
            })
        );
        let line = gen_line(1, false, 0, 9).replace("n=1", "n=-1");
        assert!(matches!(
            gen(&line),
            Err(ParseError::BadValue { key: "n", .. })
        ));
    }

    #[test]
    fn duplicate_keys_and_stray_tokens_are_errors() {
        let line = format!("{} n=2", gen_line(1, false, 0, 9));
        assert_eq!(
            gen(&line),
            Err(ParseError::DuplicateKey {
                record: "GEN",
                key: "n".to_string()
            })
        );
        let line = format!("{} oops", gen_line(1, false, 0, 9));
        assert_eq!(
            gen(&line),
            Err(ParseError::NotKeyValue {
                record: "GEN",
                token: "oops".to_string()
            })
        );
    }

    #[test]
    fn words_that_merely_contain_a_marker_are_not_records() {
        assert_eq!(parse_line("INFO baton: REGEN n=1"), None);
        assert_eq!(parse_line("WARN baton: FAILED to map page"), None);
        assert_eq!(parse_line("GEN 5 done"), None);
        assert_eq!(parse_line("booting baton"), None);
    }

    #[test]
    fn soak_line_parses_and_rejects_unknown_status() {
        let line =
            "[ 9.0] INFO baton: SOAK generations=1000 cold=1 verified_bytes=77 leaked=0 status=ok";
        assert_eq!(
            parse_line(line),
            Some(Ok(Record::Soak(SoakRecord {
                generations: 1000,
                cold: 1,
                verified_bytes: 77,
                leaked: 0,
                status: SoakStatus::Ok
            })))
        );
        let line = "SOAK generations=1 cold=1 verified_bytes=0 leaked=0 status=maybe";
        assert!(matches!(
            parse_line(line),
            Some(Err(ParseError::BadValue { key: "status", .. }))
        ));
    }

    #[test]
    fn fail_detail_keeps_the_rest_of_the_line() {
        let line =
            "ERROR baton: FAIL gen=12 check=checksum detail=block 0x4000_0000 got 0x1 want 0x2";
        assert_eq!(
            parse_line(line),
            Some(Ok(Record::Fail(FailRecord {
                gen: 12,
                check: "checksum".to_string(),
                detail: "block 0x4000_0000 got 0x1 want 0x2".to_string()
            })))
        );
    }
}
