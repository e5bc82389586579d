//! The workload's record: the client sub-FDT that tells the next generation what was kept.
//!
//! Owns the record format (`baton,workload-v1`, described on [`Record`]) and its encoder and
//! defensive decoder. The decoder treats the bytes as hostile input from the previous image:
//! every size, count, alignment and overlap is checked, errors are typed, nothing panics.

use super::alloc::vec::Vec;
use core::fmt;

use kho::{Fdt, FdtError, FdtWriteError, FdtWriter};

use super::bulk::Totals;

/// Name of the workload's client node in the KHO FDT.
pub const CLIENT_NAME: &str = "baton-workload";
/// Root `compatible` of the record.
pub const COMPATIBLE: &str = "baton,workload-v1";
/// Bytes per entry of the `blocks` property.
pub const ENTRY_SIZE: usize = 48;
/// Most entries a record may hold (bounds the work a bad record can cause).
pub const MAX_ENTRIES: usize = 1024;
/// Largest block, in pages, an entry may describe (the ABI's order 30).
pub const MAX_ENTRY_PAGES: u64 = 1 << 30;
const PAGE: u64 = 4096;

/// How a kept block was made, and so which page state it must come back with.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A compound page of order `log2(pages)` (CONTIG in the handover).
    Folio,
    /// A non-compound `alloc_pages` block, not split (CONTIG): head refcount 1, tails 0.
    Contig,
    /// A block split before preservation (SPLIT): every page refcount 1.
    Split,
    /// A physical range of an odd number of pages (made of split pages), any alignment.
    PhysRange,
    /// A block preserved CONTIG and then split with `split_preserved_pages` (SPLIT).
    SplitAfterPreserve,
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 5] = [
        Kind::Folio,
        Kind::Contig,
        Kind::Split,
        Kind::PhysRange,
        Kind::SplitAfterPreserve,
    ];

    /// The on-record code.
    pub const fn code(self) -> u32 {
        match self {
            Kind::Folio => 0,
            Kind::Contig => 1,
            Kind::Split => 2,
            Kind::PhysRange => 3,
            Kind::SplitAfterPreserve => 4,
        }
    }

    /// The kind with on-record code `c`.
    pub fn from_code(c: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == c)
    }

    /// True if every page holds its own reference (restored with refcount 1 everywhere).
    pub const fn is_split(self) -> bool {
        matches!(
            self,
            Kind::Split | Kind::PhysRange | Kind::SplitAfterPreserve
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Folio => "folio",
            Kind::Contig => "contig",
            Kind::Split => "split",
            Kind::PhysRange => "phys-range",
            Kind::SplitAfterPreserve => "split-after-preserve",
        })
    }
}

/// One kept block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Physical address (page aligned; block-size aligned for every kind but `PhysRange`).
    pub phys: u64,
    /// Pages covered (a power of two for every kind but `PhysRange`).
    pub pages: u64,
    /// Bytes filled with the pattern, from `phys` (`0 < len <= pages * 4096`).
    pub len: u64,
    /// How the block was made.
    pub kind: Kind,
    /// The generation that filled it.
    pub fill_gen: u32,
    /// Pattern seed (`pattern::pattern_seed(seed, fill_gen, phys)`).
    pub pattern: u64,
    /// Checksum of the `len` filled bytes.
    pub checksum: u64,
}

impl Entry {
    /// `log2(pages)` for a power-of-two block.
    pub fn order(&self) -> u32 {
        self.pages.trailing_zeros()
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.phys + self.pages * PAGE
    }
}

/// The record one generation leaves for the next.
///
/// Format: a flattened device tree (version 17) whose root has, every number big-endian:
/// `compatible = "baton,workload-v1"`, `generation` (u32: the writer's generation),
/// `seed` (u64), `max-order` (u32: the writer's buddy max order), `timestamp` (u64:
/// generic-timer ticks just before the handover), `timer-freq` (u64, Hz), `total-pages`
/// (u64), `preserved-pages` (u64: sum of `pages` over the entries) and `blocks`: `n`
/// entries of 48 bytes: `phys` u64, `pages` u64, `len` u64, `kind` u32 (0 folio, 1 contig,
/// 2 split, 3 phys-range, 4 split-after-preserve), `fill-gen` u32, `pattern` u64,
/// `checksum` u64. With a scaled set (`baton.preserve=`): `bulk-blocks`, `bulk-pages`,
/// `bulk-sum` (u64 each, `bulk::Totals`). Unknown properties and child nodes are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The writer's generation.
    pub generation: u32,
    /// Chain seed.
    pub seed: u64,
    /// The writer's buddy max order.
    pub max_order: u32,
    /// Generic-timer ticks at handover.
    pub timestamp: u64,
    /// Generic-timer frequency in Hz.
    pub timer_freq: u64,
    /// `total_pages` the writer reported.
    pub total_pages: u64,
    /// Pages of every entry.
    pub preserved_pages: u64,
    /// Kept blocks.
    pub entries: Vec<Entry>,
    /// The scaled set (`baton.preserve=`): totals only, its blocks describe themselves.
    pub bulk: Totals,
}

/// Why a record from the previous image is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Not a well-formed FDT.
    Fdt(FdtError),
    /// Root `compatible` is not [`COMPATIBLE`].
    BadCompatible,
    /// A required property is missing.
    Missing { prop: &'static str },
    /// A property has the wrong length.
    BadSize { prop: &'static str, len: usize },
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries { count: usize },
    /// Entry `index` is malformed (`why` names the broken rule).
    BadEntry {
        index: usize,
        phys: u64,
        why: &'static str,
    },
    /// Two entries overlap.
    Overlap { phys: u64, other: u64 },
    /// `preserved-pages` is not the sum of the entries' pages.
    PagesMismatch { recorded: u64, sum: u64 },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Fdt(e) => write!(f, "record: {e}"),
            RecordError::BadCompatible => write!(f, "record: compatible is not {COMPATIBLE}"),
            RecordError::Missing { prop } => write!(f, "record: property {prop} missing"),
            RecordError::BadSize { prop, len } => {
                write!(f, "record: property {prop} is {len} bytes")
            }
            RecordError::TooManyEntries { count } => {
                write!(f, "record: {count} entries, at most {MAX_ENTRIES}")
            }
            RecordError::BadEntry { index, phys, why } => {
                write!(f, "record: entry {index} at {phys:#x}: {why}")
            }
            RecordError::Overlap { phys, other } => {
                write!(f, "record: entry at {phys:#x} overlaps entry at {other:#x}")
            }
            RecordError::PagesMismatch { recorded, sum } => {
                write!(
                    f,
                    "record: preserved-pages {recorded} but entries sum to {sum}"
                )
            }
        }
    }
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

fn prop<'a>(fdt: &Fdt<'a>, name: &'static str, len: usize) -> Result<&'a [u8], RecordError> {
    let v = fdt
        .root()
        .prop(name)
        .ok_or(RecordError::Missing { prop: name })?;
    if v.len() != len {
        return Err(RecordError::BadSize {
            prop: name,
            len: v.len(),
        });
    }
    Ok(v)
}

fn entry_at(b: &[u8], index: usize) -> Result<Entry, RecordError> {
    let phys = be_u64(b, 0);
    let bad = |why| RecordError::BadEntry { index, phys, why };
    let pages = be_u64(b, 8);
    let len = be_u64(b, 16);
    let kind = Kind::from_code(be_u32(b, 24)).ok_or(bad("unknown kind"))?;
    let e = Entry {
        phys,
        pages,
        len,
        kind,
        fill_gen: be_u32(b, 28),
        pattern: be_u64(b, 32),
        checksum: be_u64(b, 40),
    };
    if !phys.is_multiple_of(PAGE) {
        return Err(bad("address not page aligned"));
    }
    if pages == 0 || pages > MAX_ENTRY_PAGES {
        return Err(bad("page count 0 or above 2^30"));
    }
    if phys.checked_add(pages * PAGE).is_none() {
        return Err(bad("block wraps the address space"));
    }
    if len == 0 || len > pages * PAGE {
        return Err(bad("filled length 0 or beyond the block"));
    }
    if kind != Kind::PhysRange {
        if !pages.is_power_of_two() {
            return Err(bad("page count of a block is not a power of two"));
        }
        if !phys.is_multiple_of(pages * PAGE) {
            return Err(bad("block not aligned to its size"));
        }
    }
    Ok(e)
}

impl Record {
    /// Encodes the record as a flattened device tree.
    pub fn encode(&self) -> Result<Vec<u8>, FdtWriteError> {
        let mut w = FdtWriter::new();
        w.begin_node("")?;
        w.prop_str("compatible", COMPATIBLE)?;
        w.prop("generation", &self.generation.to_be_bytes())?;
        w.prop("seed", &self.seed.to_be_bytes())?;
        w.prop("max-order", &self.max_order.to_be_bytes())?;
        w.prop("timestamp", &self.timestamp.to_be_bytes())?;
        w.prop("timer-freq", &self.timer_freq.to_be_bytes())?;
        w.prop("total-pages", &self.total_pages.to_be_bytes())?;
        w.prop("preserved-pages", &self.preserved_pages.to_be_bytes())?;
        let mut blocks = Vec::with_capacity(self.entries.len() * ENTRY_SIZE);
        for e in &self.entries {
            blocks.extend_from_slice(&e.phys.to_be_bytes());
            blocks.extend_from_slice(&e.pages.to_be_bytes());
            blocks.extend_from_slice(&e.len.to_be_bytes());
            blocks.extend_from_slice(&e.kind.code().to_be_bytes());
            blocks.extend_from_slice(&e.fill_gen.to_be_bytes());
            blocks.extend_from_slice(&e.pattern.to_be_bytes());
            blocks.extend_from_slice(&e.checksum.to_be_bytes());
        }
        w.prop("blocks", &blocks)?;
        if self.bulk != Totals::default() {
            w.prop("bulk-blocks", &self.bulk.blocks.to_be_bytes())?;
            w.prop("bulk-pages", &self.bulk.pages.to_be_bytes())?;
            w.prop("bulk-sum", &self.bulk.sum.to_be_bytes())?;
        }
        w.end_node()?;
        w.finish()
    }

    /// Decodes and checks a record read from the previous image.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let fdt = Fdt::parse(bytes).map_err(RecordError::Fdt)?;
        let compat = fdt
            .root()
            .prop("compatible")
            .ok_or(RecordError::BadCompatible)?;
        if compat.strip_suffix(&[0]) != Some(COMPATIBLE.as_bytes()) {
            return Err(RecordError::BadCompatible);
        }
        let u32p = |name| prop(&fdt, name, 4).map(|v| be_u32(v, 0));
        let u64p = |name| prop(&fdt, name, 8).map(|v| be_u64(v, 0));
        let blocks = fdt
            .root()
            .prop("blocks")
            .ok_or(RecordError::Missing { prop: "blocks" })?;
        if blocks.len() % ENTRY_SIZE != 0 {
            return Err(RecordError::BadSize {
                prop: "blocks",
                len: blocks.len(),
            });
        }
        let count = blocks.len() / ENTRY_SIZE;
        if count > MAX_ENTRIES {
            return Err(RecordError::TooManyEntries { count });
        }
        let mut entries = Vec::with_capacity(count);
        for (i, b) in blocks.chunks_exact(ENTRY_SIZE).enumerate() {
            entries.push(entry_at(b, i)?);
        }
        let mut sorted: Vec<&Entry> = entries.iter().collect();
        sorted.sort_unstable_by_key(|e| e.phys);
        for pair in sorted.windows(2) {
            if pair[0].end() > pair[1].phys {
                return Err(RecordError::Overlap {
                    phys: pair[1].phys,
                    other: pair[0].phys,
                });
            }
        }
        // Each entry is at most 2^30 pages and there are at most 1024: no overflow.
        let sum = entries.iter().map(|e| e.pages).sum();
        let rec = Record {
            generation: u32p("generation")?,
            seed: u64p("seed")?,
            max_order: u32p("max-order")?,
            timestamp: u64p("timestamp")?,
            timer_freq: u64p("timer-freq")?,
            total_pages: u64p("total-pages")?,
            preserved_pages: u64p("preserved-pages")?,
            entries,
            bulk: match fdt.root().prop("bulk-blocks") {
                None => Totals::default(),
                Some(_) => Totals {
                    blocks: u64p("bulk-blocks")?,
                    pages: u64p("bulk-pages")?,
                    sum: u64p("bulk-sum")?,
                },
            },
        };
        if rec.preserved_pages != sum {
            return Err(RecordError::PagesMismatch {
                recorded: rec.preserved_pages,
                sum,
            });
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let entries = vec![
            Entry {
                phys: 0x4040_0000,
                pages: 1024,
                len: 4 << 20,
                kind: Kind::Contig,
                fill_gen: 3,
                pattern: 1,
                checksum: 2,
            },
            Entry {
                phys: 0x4000_3000,
                pages: 5,
                len: 5 * 4096 - 7,
                kind: Kind::PhysRange,
                fill_gen: 4,
                pattern: 3,
                checksum: 4,
            },
            Entry {
                phys: 0x4001_0000,
                pages: 16,
                len: 16 * 4096,
                kind: Kind::SplitAfterPreserve,
                fill_gen: 4,
                pattern: 5,
                checksum: 6,
            },
        ];
        Record {
            generation: 4,
            seed: 42,
            max_order: 10,
            timestamp: 123_456,
            timer_freq: 62_500_000,
            total_pages: 65536,
            preserved_pages: 1045,
            entries,
            bulk: Totals {
                blocks: 262_144,
                pages: 262_144,
                sum: 0xdead_beef,
            },
        }
    }

    #[test]
    fn record_round_trips() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode().unwrap()), Ok(r));
    }

    /// Re-encodes `r` after `f` mangles it, then decodes.
    fn decode_mangled(f: impl FnOnce(&mut Record)) -> Result<Record, RecordError> {
        let mut r = sample();
        f(&mut r);
        Record::decode(&r.encode().unwrap())
    }

    #[test]
    fn malformed_entries_are_named() {
        assert_eq!(
            decode_mangled(|r| r.entries[0].phys += 0x1000),
            Err(RecordError::BadEntry {
                index: 0,
                phys: 0x4040_1000,
                why: "block not aligned to its size"
            })
        );
        assert_eq!(
            decode_mangled(|r| {
                r.entries[2].pages = 12;
                r.entries[2].len = 12 * 4096;
                r.preserved_pages -= 4;
            }),
            Err(RecordError::BadEntry {
                index: 2,
                phys: 0x4001_0000,
                why: "page count of a block is not a power of two"
            })
        );
        assert_eq!(
            decode_mangled(|r| r.entries[1].len = 6 * 4096),
            Err(RecordError::BadEntry {
                index: 1,
                phys: 0x4000_3000,
                why: "filled length 0 or beyond the block"
            })
        );
        assert_eq!(
            decode_mangled(|r| r.entries[1].phys = 0x4001_f000),
            Err(RecordError::Overlap {
                phys: 0x4001_f000,
                other: 0x4001_0000
            })
        );
        assert_eq!(
            decode_mangled(|r| r.preserved_pages = 1),
            Err(RecordError::PagesMismatch {
                recorded: 1,
                sum: 1045
            })
        );
        assert_eq!(
            decode_mangled(|r| r.entries[0].phys = !0xfff),
            Err(RecordError::BadEntry {
                index: 0,
                phys: !0xfff,
                why: "block wraps the address space"
            })
        );
    }

    #[test]
    fn garbage_and_truncation_give_errors_not_panics() {
        let bytes = sample().encode().unwrap();
        for cut in [0, 8, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            x = crate::rng::mix64(x);
            b[i] ^= (x as u8) | 1;
            let _ = Record::decode(&b);
        }
    }

    /// Fuzz target: the workload record (the sub-FDT the previous generation wrote).
    /// Mutated records never panic (overflow checks on), and a record that decodes
    /// encodes again.
    #[test]
    fn fuzz_workload_record() {
        let bytes = sample().encode().expect("encode");
        baton_fuzz::run("workload-record", 20_000, |rng| {
            let mut v = bytes.clone();
            baton_fuzz::mutate(&mut v, rng, 4);
            match Record::decode(&v) {
                Ok(r) => {
                    assert!(r.encode().is_ok());
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        });
    }
}
