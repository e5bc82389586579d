//! kho-inspect over handovers built by kho itself on an `Arena`, written to raw and ELF
//! files: the report lists exactly what was preserved, and damage names kho's check.

use std::mem::MaybeUninit;
use std::path::PathBuf;

use kho::bootfdt::{rewrite, ChosenUpdate};
use kho::{choose_scratch, Arena, BlockType, FdtWriter, Kho, PhysMem};
use kho_inspect::{inspect, run, Dump, InspectError};
use mm::{FrameAllocator, Memblock, Page, PhysAddr, PhysRange};

const BASE: u64 = 0x4000_0000;
const SIZE: u64 = 16 << 20;

/// A finalized handover in an arena: its bytes, where the boot FDT is, and what kho says
/// it preserved (`(phys, order, type)`, sorted) and its tree pages.
struct Built {
    ram: Vec<u8>,
    boot_fdt: u64,
    blocks: Vec<(u64, u32, BlockType)>,
    tree_pages: usize,
    record: (u64, u64),
}

fn boot_fdt_base() -> Vec<u8> {
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    w.prop("#address-cells", &2u32.to_be_bytes()).unwrap();
    w.prop("#size-cells", &2u32.to_be_bytes()).unwrap();
    w.begin_node("chosen").unwrap();
    w.prop_str("bootargs", "loglevel=debug").unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    w.finish().unwrap()
}

fn build() -> Built {
    let arena = Box::leak(Box::new(Arena::new(BASE, SIZE)));
    let mut mb = Memblock::new();
    mb.add_memory(PhysRange::new(PhysAddr(BASE), SIZE)).unwrap();
    mb.reserve(PhysRange::new(PhysAddr(BASE), 1 << 20)).unwrap();
    let scratch = choose_scratch(&mut mb, 2 << 20).unwrap();
    let storage: &'static mut [MaybeUninit<Page>] = Box::leak(
        (0..FrameAllocator::descriptors_needed(&mb))
            .map(|_| MaybeUninit::uninit())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let mut fa = FrameAllocator::new(&mb, storage, 10).unwrap();
    let mut kho = Kho::new(&*arena, &mut fa, vec![scratch]).unwrap();
    let folio = fa.alloc_folio(3).unwrap();
    kho.preserve_folio(&mut fa, folio).unwrap();
    let pages = fa.alloc_pages(2).unwrap();
    kho.preserve_pages(&mut fa, pages, 4).unwrap();
    let split = fa.alloc_pages(1).unwrap();
    kho.preserve_pages(&mut fa, split, 2).unwrap();
    kho.split_preserved_pages(&mut fa, split, 1).unwrap();
    let record = fa.alloc_pages(0).unwrap();
    kho.preserve_pages(&mut fa, record, 1).unwrap();
    let record = (record.phys().0 + 0x100, 0x200);
    kho.add_client("workload", record.0, record.1).unwrap();
    let h = kho.finalize(&mut fa).unwrap();
    let fdt = rewrite(
        &boot_fdt_base(),
        &ChosenUpdate {
            kho_fdt: Some(h.kho_fdt),
            kho_scratch: Some(h.scratch_array),
            initrd: None,
            bootargs: None,
        },
    )
    .unwrap();
    let at = fa.alloc_pages(0).unwrap().phys().0;
    assert!(fdt.len() <= 4096);
    assert!(kho::write_bytes(&*arena, at, &fdt));
    let mut blocks = kho.blocks().unwrap();
    blocks.sort();
    Built {
        ram: kho::read_bytes(&*arena, BASE, SIZE as usize).unwrap(),
        boot_fdt: at,
        blocks,
        tree_pages: kho.tree_pages(),
        record,
    }
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kho-inspect-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// An ELF64 core as QEMU writes it: header, one PT_NOTE (empty), one PT_LOAD per range.
fn elf_core(segments: &[(u64, &[u8])]) -> Vec<u8> {
    let phnum = segments.len() + 1;
    let mut data_off = 64 + 56 * phnum as u64;
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // ELFDATA2LSB
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
    out[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    out[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
    let ph = |t: u32, off: u64, paddr: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&t.to_le_bytes());
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[16..24].copy_from_slice(&paddr.to_le_bytes());
        p[24..32].copy_from_slice(&paddr.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        p
    };
    out.extend(ph(4, data_off, 0, 0));
    for (phys, bytes) in segments {
        out.extend(ph(1, data_off, *phys, bytes.len() as u64));
        data_off += bytes.len() as u64;
    }
    for (_, bytes) in segments {
        out.extend_from_slice(bytes);
    }
    out
}

#[test]
fn report_lists_exactly_the_preserved_blocks_clients_and_nodes() {
    let b = build();
    let dump = Dump::from_bytes(BASE, &b.ram).unwrap();
    let r = inspect(&dump, None).unwrap();
    assert_eq!(r.boot_fdt.phys, b.boot_fdt);
    let v = r.outcome.as_ref().unwrap();
    let got: Vec<_> = v.blocks.iter().map(|x| (x.phys, x.order, x.kind)).collect();
    assert_eq!(got, b.blocks);
    assert_eq!(
        v.blocks
            .iter()
            .filter(|x| x.kind == BlockType::Split)
            .count(),
        1
    );
    assert_eq!(v.clients.len(), 1);
    assert_eq!((v.clients[0].phys, v.clients[0].size), b.record);
    assert_eq!(r.nodes.len(), b.tree_pages);
    assert_eq!(r.nodes.iter().filter(|n| n.level == 5).count(), 1);
    let text = r.text();
    assert!(
        text.contains("compatible = \"baton,kho-typed-v2\";"),
        "{text}"
    );
    assert!(text.contains("  client workload"), "{text}");
    assert!(
        text.contains("bootargs           = \"loglevel=debug\""),
        "{text}"
    );
    let crc = r.crc_stored.unwrap();
    assert!(
        text.contains(&format!("CRC {crc:#010x} stored, {crc:#010x} computed: ok")),
        "{text}"
    );
    let json = r.json();
    assert!(json.contains("\"ok\":true"), "{json}");
    assert!(json.contains("\"type\":\"SPLIT\""), "{json}");
    assert!(json.contains("\"error\":null"), "{json}");
}

#[test]
fn raw_and_elf_files_give_the_same_report() {
    let b = build();
    let raw = tmp("raw", &b.ram);
    // Split RAM in two segments, the second one first, as a core may list them.
    let (lo, hi) = b.ram.split_at(b.ram.len() / 2);
    let elf = tmp(
        "elf",
        &elf_core(&[(BASE + lo.len() as u64, hi), (BASE, lo)]),
    );
    let go = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&args, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let fdt = format!("{:#x}", b.boot_fdt);
    let (c1, raw_out, e1) = go(&[raw.to_str().unwrap(), "--base", "0x40000000", "--json"]);
    let (c2, elf_out, e2) = go(&[elf.to_str().unwrap(), "--fdt", &fdt, "--json"]);
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    // The ELF report differs only in the RAM ranges and how the FDT was found.
    let strip = |s: &str| {
        let s = s.replace("\"found_by\":\"given\"", "\"found_by\":\"scan\"");
        s.split("\"ram\":").next().unwrap().to_string() + s.split("\"scratch\":").nth(1).unwrap()
    };
    assert_eq!(strip(&raw_out), strip(&elf_out));
    let _ = std::fs::remove_file(raw);
    let _ = std::fs::remove_file(elf);
}

fn flip(ram: &mut [u8], phys: u64, bit: u32) {
    ram[(phys - BASE) as usize] ^= 1 << bit;
}

#[test]
fn a_flipped_leaf_bit_is_the_checksum_check() {
    let mut b = build();
    let leaf = {
        let r = inspect(&Dump::from_bytes(BASE, &b.ram).unwrap(), None).unwrap();
        r.nodes
            .iter()
            .find(|n| n.tree == "main" && n.level == 0)
            .unwrap()
            .phys
    };
    flip(&mut b.ram, leaf + 0x777, 3);
    let dump = Dump::from_bytes(BASE, &b.ram).unwrap();
    let r = inspect(&dump, Some(b.boot_fdt)).unwrap();
    let e = r.outcome.as_ref().unwrap_err();
    assert!(matches!(e, kho::RestoreError::Checksum { .. }), "{e:?}");
    assert!(r
        .text()
        .contains("handover REJECTED by check Checksum: handover ignored: metadata CRC-32"));
    assert!(r.json().contains("\"check\":\"Checksum\""));
}

#[test]
fn a_wild_table_pointer_is_the_node_outside_ram_check() {
    let mut b = build();
    let root = {
        let r = inspect(&Dump::from_bytes(BASE, &b.ram).unwrap(), None).unwrap();
        r.nodes
            .iter()
            .find(|n| n.tree == "main" && n.level == 5)
            .unwrap()
            .phys
    };
    // Entry 1 of the main root: a table far outside RAM.
    let at = (root - BASE) as usize + 8;
    b.ram[at..at + 8].copy_from_slice(&0xdead_0000_0000u64.to_le_bytes());
    let dump = Dump::from_bytes(BASE, &b.ram).unwrap();
    let r = inspect(&dump, Some(b.boot_fdt)).unwrap();
    assert_eq!(
        r.outcome.unwrap_err(),
        kho::RestoreError::NodeOutsideRam {
            tree: kho::TreeName::Main,
            level: 4,
            phys: 0xdead_0000_0000
        }
    );
}

#[test]
fn bad_input_is_a_named_error_not_a_panic() {
    let b = build();
    let dump = Dump::from_bytes(BASE, &b.ram).unwrap();
    assert_eq!(
        inspect(&dump, Some(0x1000)).unwrap_err(),
        InspectError::OutsideDump {
            phys: 0x1000,
            len: 8
        }
    );
    assert!(matches!(
        inspect(&dump, Some(BASE + 0x10_0000)).unwrap_err(),
        InspectError::NotFdt { .. }
    ));
    let empty = Dump::from_bytes(BASE, &[0u8; 8192]).unwrap();
    assert_eq!(
        inspect(&empty, None).unwrap_err(),
        InspectError::NoBootFdtFound { scanned: 0 }
    );
    // An ELF core cut short inside its RAM segment.
    let mut elf = elf_core(&[(BASE, &b.ram)]);
    elf.truncate(elf.len() - 4096);
    let p = tmp("trunc", &elf);
    assert!(matches!(
        Dump::open(&p, None).err().unwrap(),
        InspectError::Truncated { phys: BASE, .. }
    ));
    // A text file without --base, and nonsense arguments: exit 1 with a message.
    let t = tmp("text", b"hello");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run(&[t.display().to_string()], &mut out, &mut err), 1);
    assert!(String::from_utf8_lossy(&err).contains("a raw dump needs --base"));
    let mut err = Vec::new();
    assert_eq!(run(&["--fdt".into()], &mut out, &mut err), 1);
    // Every prefix of a core: an error or a report, never a panic.
    let small = elf_core(&[(BASE, &b.ram[..64 << 10])]);
    for cut in [0, 3, 4, 40, 63, 64, 100, 119, 120, 200, 4096] {
        let p = tmp("cut", &small[..cut]);
        let _ = Dump::open(&p, None).map(|d| inspect(&d, None));
    }
    for p in [p, t] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn dump_reads_only_what_it_holds() {
    let d = Dump::from_bytes(BASE + 0x800, &[7u8; 0x1000]).unwrap();
    assert!(d.ptr(BASE + 0x800, 0x1000).is_some());
    assert!(d.ptr(BASE + 0x800, 0x1001).is_none());
    assert!(d.ptr(BASE, 1).is_none());
    assert_eq!(kho::read_u64(&d, BASE + 0x808), Some(0x0707_0707_0707_0707));
}

/// Runs `f` on a thread and fails if it takes longer than `secs` (a hang is a failure,
/// not a stuck `make test`).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("still running after {secs} s"))
}

#[test]
fn a_segment_at_the_top_of_the_address_space_does_not_hang_the_scan() {
    // Finding 6: one PT_LOAD at p_paddr 0xffffffffffffffc0 made the scan round up to 0
    // and walk 2^52 pages.
    let core = elf_core(&[(0xffff_ffff_ffff_ffc0, &[0u8; 1])]);
    assert_eq!(core.len(), 177);
    let p = tmp("top-segment.elf", &core);
    let r = within(20, move || {
        let d = Dump::open(&p, None).unwrap();
        inspect(&d, None).map(|_| ())
    });
    assert_eq!(r, Err(InspectError::NoBootFdtFound { scanned: 0 }));
}

#[test]
fn segments_claiming_more_than_the_file_are_refused() {
    // Finding 6: 400 PT_LOADs over the same bytes of a 1 MiB core asked for 413 MB.
    let data = vec![0u8; 1 << 20];
    let mut core = elf_core(&[(BASE, &data)]);
    let phnum = 400u64;
    let table: Vec<u8> = (0..phnum)
        .flat_map(|i| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&1u32.to_le_bytes());
            p[8..16].copy_from_slice(&0u64.to_le_bytes());
            p[24..32].copy_from_slice(&(BASE + (i << 20)).to_le_bytes());
            p[32..40].copy_from_slice(&(1u64 << 20).to_le_bytes());
            p
        })
        .collect();
    let phoff = core.len() as u64;
    core.extend(table);
    core[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
    core[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
    let p = tmp("overlapping-segments.elf", &core);
    assert!(matches!(
        Dump::open(&p, None),
        Err(InspectError::BadElf {
            what: "segments larger than the file together",
            ..
        })
    ));
}

#[test]
fn the_fdt_scan_is_linear_in_the_dump() {
    // Finding 6: a raw dump whose every page starts with an FDT header made the scan
    // quadratic (each candidate copied up to the dump's end).
    let len = 8usize << 20;
    let mut raw = vec![0u8; len];
    for page in raw.chunks_mut(4096) {
        let h: [u32; 10] = [
            0xd00d_feed,
            2 << 20,
            0x40,
            0x38,
            0x28,
            17,
            16,
            0,
            0,
            (2 << 20) - 0x40,
        ];
        for (i, w) in h.iter().enumerate() {
            page[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
    }
    let s = within(60, move || {
        let d = Dump::from_bytes(BASE, &raw).unwrap();
        let s = kho_inspect::find::scan_bounded(&d);
        (s.found.len(), s.parsed_bytes, s.gave_up)
    });
    let (found, parsed_bytes, gave_up) = s;
    assert_eq!(found, 0);
    assert!(
        parsed_bytes <= kho_inspect::find::scan_budget(len as u64),
        "parsed {parsed_bytes} bytes of an {len}-byte dump"
    );
    assert!(gave_up);
}

/// Fuzz target: the dump reader (ELF core headers, segments, the FDT scan, the report).
/// Mutated small cores that hold a boot FDT naming a handover never panic (overflow
/// checks on), never hang, and never allocate beyond the file's size.
#[test]
fn fuzz_dump_reader() {
    let fdt_at = BASE + 0x1000;
    let boot = rewrite(
        &boot_fdt_base(),
        &ChosenUpdate {
            kho_fdt: Some(PhysRange::new(PhysAddr(BASE + 0x8000), 0x100)),
            kho_scratch: Some(PhysRange::new(PhysAddr(BASE + 0x9000), 0x10)),
            initrd: None,
            bootargs: None,
        },
    )
    .unwrap();
    let mut ram = vec![0u8; 0x10000];
    ram[0x1000..0x1000 + boot.len()].copy_from_slice(&boot);
    let seed = elf_core(&[(BASE, &ram[..0x8000]), (BASE + 0x8000, &ram[0x8000..])]);
    let path = std::env::temp_dir().join(format!("kho-inspect-{}-fuzz.elf", std::process::id()));
    baton_fuzz::run("dump-reader", 1_500, |rng| {
        let mut core = seed.clone();
        // Mostly the headers (where the sizes are), sometimes anywhere.
        if rng.one_in(2) {
            let mut head = core[..0x100].to_vec();
            baton_fuzz::mutate(&mut head, rng, 6);
            core.splice(..0x100, head);
        } else {
            baton_fuzz::mutate(&mut core, rng, 6);
        }
        std::fs::write(&path, &core).unwrap();
        let Ok(d) = Dump::open(&path, None) else {
            return false;
        };
        let given = rng.one_in(2).then_some(fdt_at);
        match inspect(&d, given) {
            Ok(r) => {
                let _ = (r.text(), r.json());
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    });
}
