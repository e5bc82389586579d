//! fdt-rs as an independent reader of the trees baton reads and writes: every device tree
//! in `../shared/fixtures/dtb/`, QEMU virt's tree (board/testdata), and what kho writes
//! into them for the next image (the `/chosen` splice and the full writer). For each tree,
//! fdt-rs's token stream must list the same nodes, properties and values, in the same
//! order, as baton's strict walk (`baton_fdt::check_tree_visit`, the boot's one pass) and
//! its reader (`baton_fdt::Fdt::parse`), with the same boot CPU. (fdt-rs 0.4.5 gives no
//! public accessor to a `/memreserve/` entry's fields, so the reservations are not part of
//! the comparison.) A disagreement is a bug in one of the readers (or the writers): a second implementation,
//! written from the specification by others, is the test's oracle.

use std::path::{Path, PathBuf};

use baton_fdt::{Fdt, Visit};
use fdt_rs::base::parse::ParsedTok;
use fdt_rs::base::DevTree;
use fdt_rs::prelude::{FallibleIterator, PropReader};
use kho::bootfdt::{self, ChosenUpdate};
use mm::{PhysAddr, PhysRange};

/// One step of a depth-first walk: a node begins (its name), a property (name, value), or
/// the node begun last ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Begin(String),
    Prop(String, Vec<u8>),
    End,
}

/// What a reader saw of a whole tree.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    events: Vec<Event>,
    boot_cpuid_phys: u32,
}

/// The bytes in a 4-byte aligned buffer (fdt-rs reads the structure block as words).
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    for (i, b) in bytes.iter().enumerate() {
        words[i / 4] |= u32::from(*b) << (8 * (i % 4));
    }
    words
}

fn as_bytes(words: &[u32], len: usize) -> &[u8] {
    // SAFETY: a u32 slice is a valid u8 slice of four times its length; `len` is at most that.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), len) }
}

/// fdt-rs's view: its token stream (no-ops dropped), property names from its property
/// iterator (which reads the strings block itself), the boot CPU from its header.
fn fdt_rs_view(bytes: &[u8]) -> Seen {
    let words = aligned(bytes);
    let buf = as_bytes(&words, bytes.len());
    // SAFETY: `buf` is 4-byte aligned and holds the whole tree (fdt-rs's contract); every
    // tree here passed baton's strict check first, so its blocks lie inside it.
    let dt = unsafe { DevTree::new(buf) }.expect("fdt-rs: header");
    let mut names = dt.props();
    let mut events = Vec::new();
    let mut toks = dt.parse_iter();
    while let Some(tok) = toks.next().expect("fdt-rs: token") {
        match tok {
            ParsedTok::BeginNode(n) => {
                let name = std::str::from_utf8(n.name).expect("fdt-rs: node name");
                events.push(Event::Begin(name.to_string()));
            }
            ParsedTok::Prop(p) => {
                let named = names.next().expect("fdt-rs: property").expect("a property");
                assert_eq!(named.raw(), p.prop_buf, "fdt-rs's two walks disagree");
                let name = named.name().expect("fdt-rs: property name");
                events.push(Event::Prop(name.to_string(), p.prop_buf.to_vec()));
            }
            ParsedTok::EndNode => events.push(Event::End),
            ParsedTok::Nop => {}
        }
    }
    assert!(
        names.next().expect("fdt-rs").is_none(),
        "fdt-rs: props left over"
    );
    Seen {
        events,
        boot_cpuid_phys: dt.boot_cpuid_phys(),
    }
}

/// Records what baton's strict walk reports.
struct Record(Vec<Event>);

impl<'a> Visit<'a> for Record {
    type Error = std::convert::Infallible;
    fn begin_node(&mut self, name: &'a str, _: usize) -> Result<(), Self::Error> {
        self.0.push(Event::Begin(name.to_string()));
        Ok(())
    }
    fn prop(&mut self, name: &'a str, value: &'a [u8], _: usize) -> Result<(), Self::Error> {
        self.0.push(Event::Prop(name.to_string(), value.to_vec()));
        Ok(())
    }
    fn end_node(&mut self, _: usize) -> Result<(), Self::Error> {
        self.0.push(Event::End);
        Ok(())
    }
}

/// The events of node `n` and its subtree, as baton's reader built them.
fn tree_events(fdt: &Fdt<'_>, n: usize, out: &mut Vec<Event>) {
    let node = &fdt.nodes[n];
    out.push(Event::Begin(node.name.to_string()));
    for p in &node.props {
        out.push(Event::Prop(p.name.to_string(), p.value.to_vec()));
    }
    for &c in &node.children {
        tree_events(fdt, c, out);
    }
    out.push(Event::End);
}

/// baton's two views (the strict walk and the reader), which must agree with each other.
fn baton_view(bytes: &[u8]) -> Seen {
    let mut walk = Record(Vec::new());
    let (_, visited) = baton_fdt::check_tree_visit(bytes, &mut walk).expect("baton: check");
    visited.expect("a recording visitor refuses nothing");
    let fdt = Fdt::parse(bytes).expect("baton: parse");
    let mut built = Vec::new();
    tree_events(&fdt, 0, &mut built);
    assert_eq!(walk.0, built, "baton's walk and reader disagree");
    Seen {
        events: built,
        boot_cpuid_phys: fdt.boot_cpuid_phys,
    }
}

/// fdt-rs and baton see the same tree in `bytes`; returns it. `what` names it on failure.
fn same_tree(what: &str, bytes: &[u8]) -> Seen {
    let (ours, theirs) = (baton_view(bytes), fdt_rs_view(bytes));
    assert_eq!(
        ours.boot_cpuid_phys, theirs.boot_cpuid_phys,
        "{what}: boot CPU"
    );
    assert_eq!(
        ours.events.len(),
        theirs.events.len(),
        "{what}: event count"
    );
    for (i, (a, b)) in ours.events.iter().zip(&theirs.events).enumerate() {
        assert_eq!(a, b, "{what}: event {i}");
    }
    assert!(
        ours.events.len() > 2,
        "{what}: an empty tree proves nothing"
    );
    ours
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/dtb")
}

/// Every tree the tests read: the fixtures directory's `.dtb` files and QEMU virt's tree.
fn trees() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "dtb"))
        .collect();
    assert!(!paths.is_empty(), "no .dtb in {}", dir.display());
    paths.sort();
    paths.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/qemu-virt-128m.dtb"));
    paths
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), b)
        })
        .collect()
}

/// The `/chosen` values a handover writes, as the jump passes them.
const KHO_FDT: (u64, u64) = (0x4800_0000, 0x1_0000);
const SCRATCH: (u64, u64) = (0x4900_0000, 0x1000);
const INITRD: (u64, u64) = (0x4a00_0000, 0x6a000);
const BOOTARGS: &[u8] = b"console=ttyAMA0 baton.generations=3 baton.gen=1";

fn range((start, size): (u64, u64)) -> PhysRange {
    PhysRange::new(PhysAddr(start), size)
}

fn update() -> ChosenUpdate<'static> {
    ChosenUpdate {
        kho_fdt: Some(range(KHO_FDT)),
        kho_scratch: Some(range(SCRATCH)),
        initrd: Some(range(INITRD)),
        bootargs: Some(BOOTARGS),
    }
}

/// `/chosen`'s properties as fdt-rs saw them in `seen`.
fn chosen_props(seen: &Seen) -> Vec<(String, Vec<u8>)> {
    let mut depth = 0;
    let mut in_chosen = false;
    let mut props = Vec::new();
    for e in &seen.events {
        match e {
            Event::Begin(name) => {
                depth += 1;
                in_chosen = depth == 2 && name == "chosen";
            }
            Event::Prop(name, value) if in_chosen => props.push((name.clone(), value.clone())),
            Event::Prop(..) => {}
            Event::End => {
                depth -= 1;
                in_chosen = false;
            }
        }
    }
    props
}

/// The root's `#address-cells` and `#size-cells` as fdt-rs saw them (2 and 1 if absent).
fn root_cells(seen: &Seen) -> (usize, usize) {
    let mut depth = 0;
    let (mut ac, mut sc) = (2, 1);
    for e in &seen.events {
        match e {
            Event::Begin(_) => depth += 1,
            Event::End => depth -= 1,
            Event::Prop(name, v) if depth == 1 && v.len() == 4 => {
                let cells = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
                match name.as_str() {
                    "#address-cells" => ac = cells,
                    "#size-cells" => sc = cells,
                    _ => {}
                }
            }
            Event::Prop(..) => {}
        }
    }
    (ac, sc)
}

/// `(start, size)` as `ac` address and `sc` size cells, big-endian.
fn reg((ac, sc): (usize, usize), (start, size): (u64, u64)) -> Vec<u8> {
    let cells = |v: u64, n: usize| v.to_be_bytes()[8 - 4 * n..].to_vec();
    [cells(start, ac), cells(size, sc)].concat()
}

/// What fdt-rs must find in a rewritten tree's `/chosen`, independently of baton's reader.
fn assert_chosen_written(what: &str, seen: &Seen) {
    let props = chosen_props(seen);
    let get = |name: &str| {
        let found: Vec<_> = props.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(found.len(), 1, "{what}: /chosen/{name} once");
        found[0].1.clone()
    };
    let cells = root_cells(seen);
    assert_eq!(get("bootargs"), [BOOTARGS, b"\0"].concat(), "{what}");
    assert_eq!(get("linux,kho-fdt"), reg(cells, KHO_FDT), "{what}");
    assert_eq!(get("linux,kho-scratch"), reg(cells, SCRATCH), "{what}");
    let end = INITRD.0 + INITRD.1;
    assert_eq!(get("linux,initrd-start"), INITRD.0.to_be_bytes(), "{what}");
    assert_eq!(get("linux,initrd-end"), end.to_be_bytes(), "{what}");
}

/// The events outside `/chosen` (the node and everything in it left out).
fn outside_chosen(seen: &Seen) -> Vec<Event> {
    let (mut depth, mut skip_below) = (0, None);
    let mut out = Vec::new();
    for e in &seen.events {
        if let Event::Begin(name) = e {
            depth += 1;
            if depth == 2 && name == "chosen" {
                skip_below = Some(depth);
            }
        }
        if skip_below.is_none() {
            out.push(e.clone());
        }
        if let Event::End = e {
            if skip_below == Some(depth) {
                skip_below = None;
            }
            depth -= 1;
        }
    }
    out
}

#[test]
fn fdt_rs_reads_every_fixture_as_baton_does() {
    for (what, bytes) in trees() {
        same_tree(&what, &bytes);
    }
}

#[test]
fn fdt_rs_reads_the_chosen_splice_as_baton_does() {
    for (what, bytes) in trees() {
        let out = bootfdt::rewrite(&bytes, &update()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let what = format!("{what}, /chosen spliced");
        let seen = same_tree(&what, &out);
        assert_chosen_written(&what, &seen);
        // Outside /chosen nothing moved.
        let before = same_tree(&what, &bytes);
        assert_eq!(outside_chosen(&seen), outside_chosen(&before), "{what}");
    }
}

#[test]
fn fdt_rs_reads_the_full_writer_output_as_baton_does() {
    for (what, bytes) in trees() {
        let out =
            bootfdt::rewrite_full(&bytes, &update()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let what = format!("{what}, full rewrite");
        let seen = same_tree(&what, &out);
        assert_chosen_written(&what, &seen);
        let spliced = bootfdt::rewrite(&bytes, &update()).expect("splice");
        // The two writers must give trees that both readers see the same.
        assert_eq!(
            seen,
            same_tree("splice", &spliced),
            "{what}: splice and full writer"
        );
    }
}
