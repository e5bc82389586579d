//! Hostile but plausible boot device trees: what the boot accepts, the handover can
//! rewrite; command lines with any bytes; firmware ranges that wrap or lie above what the
//! CPU reaches. And the boot FDT parse's fuzz target (mutated virt and Pi 4 trees).

use baton_fdt::{FdtError, FdtWriter};
use board::bootinfo::RangeIssue;
use board::fdt::{self, BootInfoError};
use board::memmap;
use kho::bootfdt::{self, ChosenUpdate};
use mm::{Memblock, PhysAddr, PhysRange};
use std::path::Path;

/// A copy of `b` in a 4-byte aligned buffer (the boot parse refuses a misaligned tree).
fn aligned(b: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; b.len().div_ceil(4)];
    for (i, x) in b.iter().enumerate() {
        words[i / 4] |= u32::from(*x) << (8 * (i % 4));
    }
    words
}

fn bytes(words: &[u32], len: usize) -> &[u8] {
    // SAFETY: any u32 slice is a valid u8 slice of four times the length; len <= that.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), len) }
}

fn fixture(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn virt() -> Vec<u8> {
    fixture("testdata/qemu-virt-128m.dtb")
}

fn rpi4() -> Vec<u8> {
    fixture("../../shared/fixtures/dtb/bcm2711-rpi-4-b.dtb")
}

/// A small tree: root cells 2/2, one RAM node, `/chosen` with `bootargs` of any bytes,
/// and `extra` RAM nodes `(name, start, size)`.
fn tree(bootargs: &[u8], extra: &[(&str, u64, u64)]) -> Vec<u8> {
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    w.prop("#address-cells", &2u32.to_be_bytes()).unwrap();
    w.prop("#size-cells", &2u32.to_be_bytes()).unwrap();
    w.prop_str("compatible", "linux,dummy-virt").unwrap();
    let reg = |a: u64, s: u64| [a.to_be_bytes(), s.to_be_bytes()].concat();
    w.begin_node("memory@40000000").unwrap();
    w.prop_str("device_type", "memory").unwrap();
    w.prop("reg", &reg(0x4000_0000, 0x800_0000)).unwrap();
    w.end_node().unwrap();
    for &(name, a, s) in extra {
        w.begin_node(name).unwrap();
        w.prop_str("device_type", "memory").unwrap();
        w.prop("reg", &reg(a, s)).unwrap();
        w.end_node().unwrap();
    }
    w.begin_node("chosen").unwrap();
    let mut v = bootargs.to_vec();
    v.push(0);
    w.prop("bootargs", &v).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    w.finish().unwrap()
}

/// The update the handover writes, with values of a realistic size.
fn update() -> ChosenUpdate<'static> {
    let r = PhysRange::new(PhysAddr(0x4100_0000), 0x1000);
    ChosenUpdate {
        kho_fdt: Some(r),
        kho_scratch: Some(r),
        initrd: Some(r),
        bootargs: Some(b"baton.generations=2 baton.gen=1"),
    }
}

/// Offset of the first FDT_PROP token's name offset in the structure block of `t`.
fn first_prop_nameoff(t: &[u8]) -> usize {
    let off_struct = u32::from_be_bytes(t[8..12].try_into().unwrap()) as usize;
    let mut pos = off_struct;
    loop {
        match u32::from_be_bytes(t[pos..pos + 4].try_into().unwrap()) {
            1 => {
                let n = t[pos + 4..].iter().position(|&b| b == 0).unwrap();
                pos = (pos + 4 + n + 1).next_multiple_of(4);
            }
            3 => return pos + 8,
            _ => pos += 4,
        }
    }
}

#[test]
fn a_property_name_the_rewrite_cannot_read_is_refused_at_boot() {
    // Finding 1: the boot parse took an empty property name (a name offset at the
    // strings block's last NUL) that kho's reader refuses; baton booted, preserved, and
    // failed at the jump ("boot FDT: FDT name at 0x... is malformed").
    let mut t = virt();
    let size_strings = u32::from_be_bytes(t[32..36].try_into().unwrap());
    let at = first_prop_nameoff(&t);
    t[at..at + 4].copy_from_slice(&(size_strings - 1).to_be_bytes());
    assert!(bootfdt::rewrite(&t, &update()).is_err());
    let w = aligned(&t);
    assert!(matches!(
        fdt::parse(bytes(&w, t.len()), 0x4000_0000),
        Err(BootInfoError::Fdt(FdtError::BadName { .. }))
    ));
}

#[test]
fn a_nameless_node_the_rewrite_cannot_write_is_refused_at_boot() {
    // Found by the long fuzz run: kho's reader takes an empty child node name, its writer
    // refuses one, so such a tree booted and could not be handed over.
    let mut t = tree(b"", &[]);
    // "chosen\0\0" becomes an empty name (padded to 4 bytes) and a NOP token.
    let at = t.windows(8).position(|w| w == b"chosen\0\0").unwrap();
    t[at..at + 8].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4]);
    assert!(bootfdt::rewrite(&t, &update()).is_err());
    let a = aligned(&t);
    assert!(matches!(
        fdt::parse(bytes(&a, t.len()), 0x4000_0000),
        Err(BootInfoError::Fdt(FdtError::BadName { .. }))
    ));
}

#[test]
fn a_root_cell_count_the_rewrite_cannot_use_is_refused_at_boot() {
    // Root #address-cells 3 booted, then failed at the jump with BadCells.
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    w.prop("#address-cells", &3u32.to_be_bytes()).unwrap();
    w.end_node().unwrap();
    let t = w.finish().unwrap();
    assert!(bootfdt::rewrite(&t, &update()).is_err());
    let a = aligned(&t);
    assert!(matches!(
        fdt::parse(bytes(&a, t.len()), 0),
        Err(BootInfoError::BadCells { value: 3, .. })
    ));
}

#[test]
fn a_non_utf8_command_line_keeps_the_tree() {
    // Finding 2: one \xff byte in bootargs refused the whole device tree.
    let t = tree(b"baton.generations=2 \xff", &[]);
    let a = aligned(&t);
    let info = fdt::parse(bytes(&a, t.len()), 0x4000_0000).unwrap();
    assert_eq!(info.bootargs, b"baton.generations=2 \xff");
    let c = board::cmdline::parse(info.bootargs);
    assert_eq!(c.generations.ok(), Some(2));
    // And the handover writes the bytes on.
    let out = bootfdt::rewrite(
        &t,
        &ChosenUpdate {
            bootargs: Some(b"x \xfe"),
            ..update()
        },
    )
    .unwrap();
    let o = aligned(&out);
    assert_eq!(
        fdt::parse(bytes(&o, out.len()), 0).unwrap().bootargs,
        b"x \xfe"
    );
}

#[test]
fn memory_that_wraps_or_lies_above_the_limit_is_clipped_or_refused_by_name() {
    // Finding 3: a RAM node at 0xffffffff_fffff001 wrapped when rounded, memblock got
    // [0, 0xfffffffffffff000) as RAM and the boot faulted; one at 0xffffffff_ffff0000
    // (no wrap, above 48 bits) faulted too.
    let t = tree(
        b"",
        &[
            ("ram@0", 0xffff_ffff_ffff_f001, 0x2000),
            ("ram@1", 0xffff_ffff_ffff_0000, 0x10000),
            ("ram@2", 0xffff_ff00_0000, 0x200_0000),
        ],
    );
    let a = aligned(&t);
    let info = fdt::parse_limited(bytes(&a, t.len()), 0x4000_0000, 1 << 48).unwrap();
    assert_eq!(
        info.memory.as_slice(),
        &[
            PhysRange::new(PhysAddr(0x4000_0000), 0x800_0000),
            PhysRange::from_bounds(0xffff_ff00_0000, 1 << 48),
        ]
    );
    let w: Vec<_> = info.range_warnings().copied().collect();
    assert_eq!(w.len(), 3);
    assert_eq!(
        (w[0].node, w[0].issue, w[0].kept),
        ("ram@0", RangeIssue::Wraps, None)
    );
    assert_eq!(
        (w[1].node, w[1].issue, w[1].kept),
        ("ram@1", RangeIssue::AboveLimit { limit: 1 << 48 }, None)
    );
    assert_eq!(
        w[2].to_string(),
        "firmware range ram@2 [0xffffff000000 size 0x2000000] reaches above the addressable \
         limit 0x1000000000000: clipped to [0xffffff000000-0xffffffffffff]"
    );
    let mut mb = Memblock::new();
    memmap::fill_memblock(
        &mut mb,
        &info,
        PhysRange::new(PhysAddr(0x4020_0000), 0x10_0000),
    )
    .unwrap();
    assert_eq!(mb.memory_size(), 0x800_0000 + 0x100_0000);
    // A smaller CPU (PARange 40 bits) refuses the high range whole.
    let info = fdt::parse_limited(bytes(&a, t.len()), 0x4000_0000, 1 << 40).unwrap();
    assert_eq!(info.memory.len(), 1);
}

/// Parses a tree the way the boot does and, when it is accepted, checks that the handover
/// can rewrite it (finding 1's invariant). Returns whether the boot accepted it.
fn boot_accepts_only_rewritable(t: &[u8]) -> bool {
    let a = aligned(t);
    let Ok(info) = fdt::parse(bytes(&a, t.len()), 0x4000_0000) else {
        return false;
    };
    let _ = memmap::fill_memblock(
        &mut Memblock::new(),
        &info,
        PhysRange::new(PhysAddr(0), 0x1000),
    );
    let _ = memmap::normal_ranges(&info, PhysRange::new(PhysAddr(0), 0x1000));
    let _ = memmap::device_ranges(&info, 1 << 48);
    for w in info.range_warnings() {
        let _ = w.to_string();
    }
    let _ = board::cmdline::parse(info.bootargs).errors().count();
    if let Err(e) = bootfdt::rewrite(t, &update()) {
        panic!("the boot accepted a tree the handover cannot rewrite: {e}");
    }
    true
}

/// Fuzz target: the boot FDT parse over mutated QEMU virt and Raspberry Pi 4 trees. No
/// panic (overflow checks on), and every accepted tree is one the handover can rewrite.
#[test]
fn fuzz_boot_fdt_parse() {
    let trees = [virt(), rpi4()];
    assert!(trees.iter().all(|t| boot_accepts_only_rewritable(t)));
    baton_fuzz::run("boot-fdt", 6_000, |rng| {
        let mut t = trees[rng.index(trees.len())].clone();
        baton_fuzz::mutate(&mut t, rng, 4);
        boot_accepts_only_rewritable(&t)
    });
}
