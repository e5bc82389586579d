//! The outgoing boot FDT rewrite on real trees (QEMU virt, Raspberry Pi 4), checked with dtc
//! and libfdt.

mod common;

use common::fdt_tools::{check_fdt_with_tools, dtc_decompile, listing};
use kho::bootfdt::{read_handover, rewrite, rewrite_full, ChosenUpdate};
use kho::Fdt;
use mm::{PhysAddr, PhysRange};

const VIRT: &[u8] = include_bytes!("data/virt.dtb");
const RPI4: &[u8] = include_bytes!("../../../shared/fixtures/dtb/bcm2711-rpi-4-b.dtb");

fn update() -> ChosenUpdate<'static> {
    ChosenUpdate {
        kho_fdt: Some(PhysRange::new(PhysAddr(0x4800_0000), 0x1000)),
        kho_scratch: Some(PhysRange::new(PhysAddr(0x4800_1000), 0x10)),
        initrd: Some(PhysRange::new(PhysAddr(0x4400_0000), 0x20_0000)),
        bootargs: Some(b"console=ttyAMA0 kho_scratch=32M"),
    }
}

/// Checks the rewrite of `input` with [`update`] and returns it.
fn rewrite_keeps_everything_else(input: &[u8], tag: &str) -> Vec<u8> {
    let out = rewrite(input, &update()).unwrap();
    check_fdt_with_tools(&out, tag);
    let (fin, fout) = (Fdt::parse(input).unwrap(), Fdt::parse(&out).unwrap());
    assert_eq!(fin.mem_reserve, fout.mem_reserve);
    assert_eq!(
        fin.nodes.len() + usize::from(fin.find("/chosen").is_none()),
        fout.nodes.len()
    );
    // Everything outside /chosen is identical.
    let strip = |l: Vec<String>| -> Vec<String> {
        l.into_iter()
            .filter(|s| !s.starts_with("/chosen:"))
            .collect()
    };
    assert_eq!(strip(listing(&fin)), strip(listing(&fout)));
    assert_eq!(
        read_handover(&fout).unwrap(),
        Some((
            PhysRange::new(PhysAddr(0x4800_0000), 0x1000),
            PhysRange::new(PhysAddr(0x4800_1000), 0x10)
        ))
    );
    let chosen = &fout.nodes[fout.find("/chosen").unwrap()];
    assert_eq!(
        chosen.prop("linux,initrd-start"),
        Some(&0x4400_0000u64.to_be_bytes()[..])
    );
    assert_eq!(
        chosen.prop("bootargs"),
        Some(&b"console=ttyAMA0 kho_scratch=32M\0"[..])
    );
    assert_eq!(
        chosen.props.iter().filter(|p| p.name == "bootargs").count(),
        1
    );

    // A second rewrite drops the stale handover values instead of duplicating them.
    let again = rewrite(&out, &ChosenUpdate::default()).unwrap();
    let f2 = Fdt::parse(&again).unwrap();
    let c2 = &f2.nodes[f2.find("/chosen").unwrap()];
    for p in [
        "linux,kho-fdt",
        "linux,kho-scratch",
        "linux,initrd-start",
        "linux,initrd-end",
    ] {
        assert_eq!(c2.prop(p), None, "{p} survived");
    }
    assert_eq!(c2.prop("bootargs"), chosen.prop("bootargs"));
    assert_eq!(read_handover(&f2).unwrap(), None);
    check_fdt_with_tools(&again, tag);
    out
}

#[test]
fn qemu_virt_tree_rewrite_passes_dtc_and_libfdt() {
    let out = rewrite_keeps_everything_else(VIRT, "virt");
    let dts = dtc_decompile(&out, "virt-dts");
    if let Some(dts) = dts {
        assert!(
            dts.contains("linux,kho-fdt = <0x00 0x48000000 0x00 0x1000>;"),
            "{dts}"
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "40 KiB tree: one parse takes ~80 s under Miri, the test ~10 min; the virt test runs the same code"
)]
fn rpi4_tree_rewrite_passes_dtc_and_libfdt() {
    rewrite_keeps_everything_else(RPI4, "rpi4");
}

#[test]
fn one_cell_roots_encode_and_refuse_wide_values() {
    let mut w = kho::FdtWriter::new();
    w.begin_node("").unwrap();
    w.prop("#address-cells", &1u32.to_be_bytes()).unwrap();
    w.prop("#size-cells", &1u32.to_be_bytes()).unwrap();
    w.end_node().unwrap();
    let small = w.finish().unwrap();
    let out = rewrite(&small, &update()).unwrap();
    let f = Fdt::parse(&out).unwrap();
    let c = &f.nodes[f.find("/chosen").unwrap()];
    assert_eq!(
        c.prop("linux,kho-fdt"),
        Some(&[0x48, 0, 0, 0, 0, 0, 0x10, 0][..])
    );
    check_fdt_with_tools(&out, "onecell");
    let wide = ChosenUpdate {
        kho_fdt: Some(PhysRange::new(PhysAddr(1 << 33), 0x1000)),
        ..update()
    };
    assert!(matches!(
        rewrite(&small, &wide),
        Err(kho::bootfdt::BootFdtError::DoesNotFit {
            value: 0x2_0000_0000,
            ..
        })
    ));
}

/// The structure block of `fdt`.
fn structure(fdt: &[u8]) -> &[u8] {
    let h = kho::check_fdt_header(fdt, fdt.len()).unwrap();
    let off = h.off_dt_struct as usize;
    &fdt[off..off + h.size_dt_struct as usize]
}

/// Asserts that the in-place `/chosen` edit ([`rewrite`]) and the full rewrite agree on
/// `input` under `upd`: the same nodes, properties, reservations and boot CPU for kho's
/// strict reader, the same source for `dtc`, and libfdt agreeing with kho on the splice.
fn splice_agrees_with_full_rewrite(input: &[u8], upd: &ChosenUpdate<'_>, tag: &str) -> Vec<u8> {
    let spliced = rewrite(input, upd).unwrap();
    let full = rewrite_full(input, upd).unwrap();
    let (fs, ff) = (Fdt::parse(&spliced).unwrap(), Fdt::parse(&full).unwrap());
    assert_eq!(listing(&fs), listing(&ff), "{tag}");
    assert_eq!(fs.mem_reserve, ff.mem_reserve, "{tag}");
    assert_eq!(fs.boot_cpuid_phys, ff.boot_cpuid_phys, "{tag}");
    assert_eq!(fs.nodes, ff.nodes, "{tag}");
    if let Some(a) = dtc_decompile(&spliced, &format!("{tag}-splice")) {
        let b = dtc_decompile(&full, &format!("{tag}-full")).unwrap();
        assert_eq!(a, b, "dtc sees the two rewrites of {tag} differently");
    }
    check_fdt_with_tools(&spliced, tag);
    spliced
}

#[test]
#[cfg_attr(
    miri,
    ignore = "parses the 40 KiB Pi 4 tree several times; slow under Miri"
)]
fn chosen_splice_matches_the_full_rewrite_on_virt_and_rpi4() {
    for (input, tag) in [(VIRT, "splice-virt"), (RPI4, "splice-rpi4")] {
        let out = splice_agrees_with_full_rewrite(input, &update(), tag);
        // The handover values replaced again, and dropped: no stale or duplicate property.
        splice_agrees_with_full_rewrite(&out, &update(), &format!("{tag}-again"));
        splice_agrees_with_full_rewrite(&out, &ChosenUpdate::default(), &format!("{tag}-drop"));
        // Every node before /chosen is the input's bytes, not a re-encoding.
        let (si, so) = (structure(input), structure(&out));
        let at = si.windows(8).position(|w| w == b"chosen\0\0").unwrap();
        assert_eq!(
            si[..at],
            so[..at],
            "{tag}: the tree before /chosen was re-encoded"
        );
        assert!(so.len() > si.len() / 2);
    }
}

#[test]
fn chosen_splice_keeps_chosen_children_and_the_nodes_after_it() {
    let mut w = kho::FdtWriter::new();
    w.mem_reserve(0x1000, 0x1000);
    w.boot_cpuid_phys(3);
    w.begin_node("").unwrap();
    w.prop("#address-cells", &2u32.to_be_bytes()).unwrap();
    w.prop("#size-cells", &2u32.to_be_bytes()).unwrap();
    w.begin_node("chosen").unwrap();
    w.prop_str("bootargs", "old").unwrap();
    w.prop("linux,kho-fdt", &[0; 16]).unwrap();
    w.prop_str("stdout-path", "/uart").unwrap();
    w.begin_node("sub").unwrap();
    w.prop("bootargs", b"child\0").unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    w.begin_node("after@1").unwrap();
    w.prop("linux,kho-fdt", &[1; 16]).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    let input = w.finish().unwrap();
    let out = splice_agrees_with_full_rewrite(&input, &update(), "children");
    let f = Fdt::parse(&out).unwrap();
    let c = &f.nodes[f.find("/chosen").unwrap()];
    let names: Vec<&str> = c.props.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "stdout-path",
            "linux,kho-fdt",
            "linux,kho-scratch",
            "linux,initrd-start",
            "linux,initrd-end",
            "bootargs"
        ]
    );
    assert_eq!(
        f.nodes[f.find("/chosen/sub").unwrap()].prop("bootargs"),
        Some(&b"child\0"[..])
    );
    assert_eq!(
        f.nodes[f.find("/after@1").unwrap()].prop("linux,kho-fdt"),
        Some(&[1; 16][..])
    );
    assert_eq!(f.boot_cpuid_phys, 3);
    assert_eq!(f.mem_reserve, vec![(0x1000, 0x1000)]);
}

#[test]
fn tree_without_chosen_gets_one_from_the_full_rewrite() {
    let mut w = kho::FdtWriter::new();
    w.begin_node("").unwrap();
    w.prop("#address-cells", &2u32.to_be_bytes()).unwrap();
    w.prop("#size-cells", &2u32.to_be_bytes()).unwrap();
    w.begin_node("chosen-not").unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    let input = w.finish().unwrap();
    let out = rewrite(&input, &update()).unwrap();
    assert_eq!(out, rewrite_full(&input, &update()).unwrap());
    let f = Fdt::parse(&out).unwrap();
    assert_eq!(f.nodes[0].children.len(), 2);
    assert!(f.find("/chosen").is_some());
}
