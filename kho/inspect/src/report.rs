//! Running kho's checks over a dump, and printing what they found (text or `--json`).
//!
//! Owns the inspection steps in the next image's order: `/chosen` through
//! `kho::bootfdt::decode_handover`, the scratch array through `kho::read_scratch`, the rest
//! through `kho::probe` (which calls `kho::validate`), with the dump's ranges as RAM and the
//! boot FDT and initrd as the ranges nothing may overlap. Owns no decoding of its own.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use kho::bootfdt::{root_cells, ChosenHandover, CHOSEN_INITRD_END, CHOSEN_INITRD_START};
use kho::{BlockType, ClientEntry, Fdt, HandoverRefs, RestoreError, Validated};
use mm::{PhysAddr, PhysRange, PAGE_SIZE};

use crate::find::{find_boot_fdt, BootFdt, FoundBy};
use crate::nodes::{capture, NodeRec};
use crate::{dts, Dump, InspectError};

/// Everything the inspector learned about one handover.
#[derive(Debug)]
pub struct Report {
    /// The boot FDT the handover was read from.
    pub boot_fdt: BootFdt,
    /// `/chosen`'s handover properties, decoded by kho.
    pub refs: HandoverRefs,
    /// `linux,initrd-start`/`-end`, if both are there.
    pub initrd: Option<PhysRange>,
    /// `bootargs`, if any.
    pub bootargs: Option<String>,
    /// The dump's ranges, used as RAM.
    pub ram: Vec<PhysRange>,
    /// The scratch areas (empty if the scratch array was rejected).
    pub scratch: Vec<PhysRange>,
    /// The KHO FDT in dts text, if it is a well-formed FDT inside the dump.
    pub kho_fdt_dts: Option<String>,
    /// `baton,metadata-crc32` as stored, if readable.
    pub crc_stored: Option<u32>,
    /// Tree nodes as kho's walk checked them (up to the failure, on a rejected handover).
    pub nodes: Vec<NodeRec>,
    /// kho's verdict: the validated handover, or the check that failed.
    pub outcome: Result<Validated, RestoreError>,
}

fn u64_be(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Inspects the handover named by the boot FDT at `fdt` (or found by scanning).
pub fn inspect(dump: &Dump, fdt: Option<u64>) -> Result<Report, InspectError> {
    let mut found = find_boot_fdt(dump, fdt)?;
    if found.len() == 1 {
        return inspect_at(dump, found.remove(0));
    }
    // Several FDTs name a handover (older generations' copies stay in scratch): take the
    // one whose handover kho accepts, if exactly one does.
    let candidates: Vec<u64> = found.iter().map(|b| b.phys).collect();
    let mut ok: Vec<Report> = found
        .into_iter()
        .filter_map(|b| inspect_at(dump, b).ok())
        .filter(|r| r.outcome.is_ok())
        .collect();
    match ok.len() {
        1 => Ok(ok.remove(0)),
        _ => Err(InspectError::AmbiguousBootFdt { candidates }),
    }
}

fn inspect_at(dump: &Dump, boot_fdt: BootFdt) -> Result<Report, InspectError> {
    let phys = boot_fdt.phys;
    let fdt = boot_fdt.fdt();
    let bad = |err| InspectError::BootFdt { phys, err };
    let (address_cells, size_cells) = root_cells(&fdt).map_err(bad)?;
    let chosen = &fdt.nodes[fdt
        .find("/chosen")
        .ok_or(InspectError::NoHandover { phys })?];
    let refs = kho::bootfdt::decode_handover(&ChosenHandover {
        address_cells,
        size_cells,
        kho_fdt: chosen.prop("linux,kho-fdt"),
        kho_scratch: chosen.prop("linux,kho-scratch"),
    })
    .map_err(|e| bad(kho::bootfdt::BootFdtError::Handover(e)))?
    .ok_or(InspectError::NoHandover { phys })?;
    let initrd = match (
        chosen.prop(CHOSEN_INITRD_START).and_then(u64_be),
        chosen.prop(CHOSEN_INITRD_END).and_then(u64_be),
    ) {
        (Some(s), Some(e)) if e > s => Some(PhysRange::from_bounds(s, e)),
        _ => None,
    };
    let bootargs = chosen
        .prop("bootargs")
        .map(|b| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).into_owned());

    let (kho_fdt_dts, crc_stored) = read_kho_fdt(dump, refs.kho_fdt);
    let ram = dump.ranges();
    // What the next image keeps out of the handover: its boot FDT and initrd (its own
    // image is not known from a dump; kho::probe adds the scratch array itself).
    let mut avoid = vec![PhysRange::new(PhysAddr(phys), boot_fdt.bytes.len() as u64).outer_pages()];
    avoid.extend(initrd.map(|r| r.outer_pages()));
    let ((scratch, outcome), nodes) = capture(|| match kho::read_scratch(dump, &ram, &refs) {
        Err(e) => (Vec::new(), Err(e)),
        Ok(scratch) => {
            let v = kho::probe(dump, &refs, &ram, &scratch, &avoid).map(|r| r.validated().clone());
            (scratch, v)
        }
    });
    drop(fdt);
    Ok(Report {
        boot_fdt,
        refs,
        initrd,
        bootargs,
        ram,
        scratch,
        kho_fdt_dts,
        crc_stored,
        nodes,
        outcome,
    })
}

/// dts text and stored CRC of the KHO FDT, for display only (kho's validation decides).
fn read_kho_fdt(dump: &Dump, r: PhysRange) -> (Option<String>, Option<u32>) {
    let Ok(bytes) = dump.read(r.start.0, r.size().min(1 << 20) as usize) else {
        return (None, None);
    };
    let Ok(fdt) = Fdt::parse(&bytes) else {
        return (None, None);
    };
    let crc = fdt
        .root()
        .prop("baton,metadata-crc32")
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .and_then(|b| u32::try_from(u64::from_le_bytes(b)).ok());
    (Some(dts::text(&fdt)), crc)
}

/// The variant name of a `RestoreError`: the check that failed (`Checksum`, `NodeOutsideRam`).
pub fn check_name(e: &RestoreError) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn client_of<'a>(clients: &'a [ClientEntry], b: &kho::Block) -> Option<&'a ClientEntry> {
    let r = b.region();
    clients
        .iter()
        .find(|c| c.phys < r.end.0 && r.start.0 < c.phys.saturating_add(c.size))
}

fn range(r: &PhysRange) -> String {
    format!("[{:#x}-{:#x})", r.start.0, r.end.0)
}

impl Report {
    /// The text report.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let by = match self.boot_fdt.found_by {
            FoundBy::Given => String::from("given with --fdt"),
            FoundBy::Scan { of: 1 } => String::from("found by scanning the dump"),
            FoundBy::Scan { of } => {
                format!("found by scanning; the only one of {of} whose handover passes")
            }
        };
        let _ = writeln!(
            o,
            "boot FDT at {:#x} ({} bytes, {by})",
            self.boot_fdt.phys,
            self.boot_fdt.bytes.len()
        );
        let _ = writeln!(o, "/chosen:");
        let _ = writeln!(
            o,
            "  linux,kho-fdt      = {} ({} bytes)",
            range(&self.refs.kho_fdt),
            self.refs.kho_fdt.size()
        );
        let _ = writeln!(
            o,
            "  linux,kho-scratch  = {} ({} bytes)",
            range(&self.refs.scratch_array),
            self.refs.scratch_array.size()
        );
        if let Some(r) = self.initrd {
            let _ = writeln!(o, "  linux,initrd-start = {:#x}", r.start.0);
            let _ = writeln!(o, "  linux,initrd-end   = {:#x}", r.end.0);
        }
        if let Some(b) = &self.bootargs {
            let _ = writeln!(o, "  bootargs           = \"{b}\"");
        }
        let ram: Vec<String> = self.ram.iter().map(range).collect();
        let _ = writeln!(o, "RAM (the dump's ranges): {}", ram.join(" "));
        let _ = writeln!(o, "scratch areas:");
        for s in &self.scratch {
            let _ = writeln!(o, "  {} {} MiB", range(s), s.size() >> 20);
        }
        match &self.kho_fdt_dts {
            Some(t) => {
                let _ = writeln!(o, "KHO FDT at {:#x}:", self.refs.kho_fdt.start.0);
                for l in t.lines() {
                    let _ = writeln!(o, "  {l}");
                }
            }
            None => {
                let _ = writeln!(
                    o,
                    "KHO FDT at {:#x}: not a readable FDT",
                    self.refs.kho_fdt.start.0
                );
            }
        }
        self.text_nodes(&mut o);
        match &self.outcome {
            Ok(v) => self.text_valid(&mut o, v),
            Err(e) => {
                let _ = writeln!(o, "handover REJECTED by check {}: {e}", check_name(e));
            }
        }
        o
    }

    fn text_nodes(&self, o: &mut String) {
        let _ = writeln!(o, "tree nodes ({} pages):", self.nodes.len());
        for tree in ["main", "split"] {
            for level in (0..=5).rev() {
                let at: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| n.tree == tree && n.level == level)
                    .map(|n| format!("{:#x}", n.phys))
                    .collect();
                if !at.is_empty() {
                    let _ = writeln!(
                        o,
                        "  {tree:<5} level {level}: {:>4}  {}",
                        at.len(),
                        at.join(" ")
                    );
                }
            }
        }
    }

    fn text_valid(&self, o: &mut String, v: &Validated) {
        let _ = writeln!(o, "preserved blocks ({}):", v.blocks.len());
        for b in &v.blocks {
            let client = client_of(&v.clients, b)
                .map(|c| format!("  client {}", c.name))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {:#014x} order {:>2} {:>8} pages {}{client}",
                b.phys,
                b.order,
                1u64 << b.order,
                b.kind
            );
        }
        let _ = writeln!(o, "clients ({}):", v.clients.len());
        for c in &v.clients {
            let _ = writeln!(o, "  {} {:#x} size {:#x}", c.name, c.phys, c.size);
        }
        let pages: u64 = v.blocks.iter().map(|b| 1u64 << b.order).sum();
        let split = v
            .blocks
            .iter()
            .filter(|b| b.kind == BlockType::Split)
            .count();
        let _ = writeln!(
            o,
            "totals: {} blocks ({} CONTIG, {split} SPLIT), {pages} pages ({} KiB), {} tree pages, {} metadata ranges",
            v.blocks.len(),
            v.blocks.len() - split,
            pages * PAGE_SIZE / 1024,
            self.nodes.len(),
            v.metadata.len()
        );
        // validate() accepted: the computed CRC is the stored one.
        let crc = self
            .crc_stored
            .map(|c| format!("{c:#010x}"))
            .unwrap_or_default();
        let _ = writeln!(o, "CRC {crc} stored, {crc} computed: ok");
    }

    /// The same as JSON (addresses as hex strings, counts as numbers): where the handover
    /// was found, the memory it names, then what validation made of it.
    pub fn json(&self) -> String {
        let mut o = String::from("{");
        self.json_sources(&mut o);
        self.json_memory(&mut o);
        match &self.outcome {
            Ok(v) => self.json_accepted(&mut o, v),
            Err(e) => self.json_rejected(&mut o, e),
        }
        o
    }

    /// `boot_fdt` and `chosen`: where the handover was found.
    fn json_sources(&self, o: &mut String) {
        let _ = write!(
            o,
            "\"boot_fdt\":{{\"phys\":{},\"size\":{},\"found_by\":\"{}\"}},",
            json_hex(self.boot_fdt.phys),
            self.boot_fdt.bytes.len(),
            match self.boot_fdt.found_by {
                FoundBy::Given => "given",
                FoundBy::Scan { .. } => "scan",
            }
        );
        let _ = write!(
            o,
            "\"chosen\":{{\"kho_fdt\":{},\"kho_scratch\":{},\"initrd\":{},\"bootargs\":{}}},",
            json_range(&self.refs.kho_fdt),
            json_range(&self.refs.scratch_array),
            json_or_null(self.initrd.as_ref().map(json_range)),
            json_or_null(self.bootargs.as_deref().map(json_str))
        );
    }

    /// `ram`, `scratch`, `kho_fdt_dts` and `nodes`: the memory the handover names.
    fn json_memory(&self, o: &mut String) {
        let _ = write!(o, "\"ram\":{},", json_list(self.ram.iter().map(json_range)));
        let _ = write!(
            o,
            "\"scratch\":{},",
            json_list(self.scratch.iter().map(json_range))
        );
        let _ = write!(
            o,
            "\"kho_fdt_dts\":{},",
            json_or_null(self.kho_fdt_dts.as_deref().map(json_str))
        );
        let nodes = self.nodes.iter().map(|n| {
            format!(
                "{{\"tree\":\"{}\",\"level\":{},\"phys\":{}}}",
                n.tree,
                n.level,
                json_hex(n.phys)
            )
        });
        let _ = write!(o, "\"nodes\":{},", json_list(nodes));
    }

    /// The stored metadata checksum, or `null`.
    fn json_crc_stored(&self) -> String {
        json_or_null(self.crc_stored.map(|c| json_hex(c.into())))
    }

    /// An accepted handover: `blocks`, `clients`, `totals`, `crc`, and a `null` error.
    fn json_accepted(&self, o: &mut String, v: &Validated) {
        let blocks = v.blocks.iter().map(|b| {
            format!(
                "{{\"phys\":{},\"order\":{},\"pages\":{},\"type\":\"{}\",\"client\":{}}}",
                json_hex(b.phys),
                b.order,
                1u64 << b.order,
                b.kind,
                json_or_null(client_of(&v.clients, b).map(|c| json_str(&c.name)))
            )
        });
        let clients = v.clients.iter().map(|c| {
            format!(
                "{{\"name\":{},\"phys\":{},\"size\":{}}}",
                json_str(&c.name),
                json_hex(c.phys),
                json_hex(c.size)
            )
        });
        let _ = write!(
            o,
            "\"blocks\":{},\"clients\":{},",
            json_list(blocks),
            json_list(clients)
        );
        let pages: u64 = v.blocks.iter().map(|b| 1u64 << b.order).sum();
        let split = v
            .blocks
            .iter()
            .filter(|b| b.kind == BlockType::Split)
            .count();
        let _ = write!(
            o,
            "\"totals\":{{\"blocks\":{},\"contig\":{},\"split\":{split},\"pages\":{pages},\"tree_pages\":{},\"metadata_ranges\":{}}},",
            v.blocks.len(),
            v.blocks.len() - split,
            self.nodes.len(),
            v.metadata.len()
        );
        // validate() accepted: the computed checksum is the stored one.
        let stored = self.json_crc_stored();
        let _ = write!(
            o,
            "\"crc\":{{\"stored\":{stored},\"computed\":{stored},\"ok\":true}},\"error\":null}}"
        );
    }

    /// A rejected handover: `null` lists, the checksum as far as it is known, and the check
    /// that failed.
    fn json_rejected(&self, o: &mut String, e: &RestoreError) {
        let crc = match e {
            RestoreError::Checksum { stored, computed } => format!(
                "{{\"stored\":{},\"computed\":{},\"ok\":false}}",
                json_hex((*stored).into()),
                json_hex((*computed).into())
            ),
            _ => format!(
                "{{\"stored\":{},\"computed\":null,\"ok\":false}}",
                self.json_crc_stored()
            ),
        };
        let _ = write!(
            o,
            "\"blocks\":null,\"clients\":null,\"totals\":null,\"crc\":{crc},\"error\":{{\"check\":\"{}\",\"message\":{}}}}}",
            check_name(e),
            json_str(&e.to_string())
        );
    }
}

/// A JSON string holding `v` in hex.
fn json_hex(v: u64) -> String {
    format!("\"{v:#x}\"")
}

/// A range as `{"start":..,"size":..}`.
fn json_range(r: &PhysRange) -> String {
    format!(
        "{{\"start\":{},\"size\":{}}}",
        json_hex(r.start.0),
        json_hex(r.size())
    )
}

/// Already-encoded JSON values as an array.
fn json_list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

/// An encoded JSON value, or `null`.
fn json_or_null(v: Option<String>) -> String {
    v.unwrap_or_else(|| "null".into())
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

const USAGE: &str = "usage: kho-inspect DUMP [--fdt ADDR] [--base ADDR] [--json]
  DUMP         QEMU dump-guest-memory ELF core, or a raw pmemsave file with --base
  --fdt ADDR   the boot FDT handed to the next image (default: scan the dump)
  --base ADDR  physical address of a raw dump's first byte
  --json       print JSON instead of text
exit status: 0 the handover passes kho's checks, 2 kho rejects it, 1 bad input";

fn parse_addr(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16).ok(),
        None => s.parse().ok(),
    }
}

struct Args {
    dump: PathBuf,
    fdt: Option<u64>,
    base: Option<u64>,
    json: bool,
}

fn parse_args(args: &[String]) -> Result<Args, InspectError> {
    let usage = |m: String| InspectError::Usage(format!("{m}\n{USAGE}"));
    let (mut dump, mut fdt, mut base, mut json) = (None, None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut addr = |name: &str| {
            let v = it
                .next()
                .ok_or_else(|| usage(format!("{name} needs an address")))?;
            parse_addr(v).ok_or_else(|| usage(format!("{name} {v}: not an address")))
        };
        match a.as_str() {
            "--fdt" => fdt = Some(addr("--fdt")?),
            "--base" => base = Some(addr("--base")?),
            "--json" => json = true,
            "-h" | "--help" => return Err(InspectError::Usage(USAGE.into())),
            s if s.starts_with('-') => return Err(usage(format!("unknown option {s}"))),
            s if dump.is_none() => dump = Some(PathBuf::from(s)),
            s => return Err(usage(format!("one dump only ({s})"))),
        }
    }
    Ok(Args {
        dump: dump.ok_or_else(|| usage("no dump given".into()))?,
        fdt,
        base,
        json,
    })
}

/// The command line tool: `args` without the program name. Writes the report to `out`,
/// input errors to `err`; returns the exit status (0 valid, 2 rejected, 1 bad input).
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let go = || -> Result<(Report, bool), InspectError> {
        let a = parse_args(args)?;
        let dump = Dump::open(&a.dump, a.base)?;
        Ok((inspect(&dump, a.fdt)?, a.json))
    };
    match go() {
        Ok((r, json)) => {
            let text = if json { r.json() + "\n" } else { r.text() };
            let _ = out.write_all(text.as_bytes());
            if r.outcome.is_ok() {
                0
            } else {
                2
            }
        }
        Err(e) => {
            let _ = writeln!(err, "kho-inspect: {e}");
            1
        }
    }
}
