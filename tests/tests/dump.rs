//! A real handover, dumped at the jump and explained on the host: `scripts/dump-handover.sh`
//! (QEMU gdbstub + `dump-guest-memory`) dumps generation 1 of a virt chain at
//! `loglevel=debug`, and kho-inspect must list exactly the blocks the guest logged at
//! finalize, with the CRC it logged; damaged copies of the dump (a flipped leaf bit, a wild
//! root-table pointer) must name kho's check.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{image_path, qemu, scratch_dir, workspace_root};

/// The ELF of the Image under test (for the trampoline's offset): `$BATON_ELF`, else the
/// release build.
fn elf_path() -> PathBuf {
    std::env::var_os("BATON_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/aarch64-unknown-none/release/baton"))
}

struct Dumped {
    dump: PathBuf,
    fdt: String,
    console: String,
}

fn dump_generation(gen: u32) -> Dumped {
    dump_generation_with(gen, "dump", "")
}

/// Generation `gen`'s handover dumped into scratch dir `name`, `extra` added to the bootargs.
fn dump_generation_with(gen: u32, name: &str, extra: &str) -> Dumped {
    let dir = scratch_dir(name);
    let script = workspace_root().join("scripts/dump-handover.sh");
    let out = Command::new("timeout")
        .arg("300")
        .arg(&script)
        .arg(image_path())
        .arg(elf_path())
        .arg(gen.to_string())
        .arg(&dir)
        .args(extra.split_whitespace())
        .env("QEMU", qemu())
        .output()
        .expect("run scripts/dump-handover.sh");
    let say = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dump-handover failed:\n{say}");
    let dump = dir.join(format!("handover-gen{gen}.elf"));
    let fdt = std::fs::read_to_string(dir.join(format!("handover-gen{gen}.elf.fdt")))
        .expect("FDT address file")
        .trim()
        .to_string();
    let console = std::fs::read_to_string(dir.join(format!("console-gen{gen}.log"))).unwrap();
    Dumped { dump, fdt, console }
}

/// One preserved block as both sides print it: `(phys, order, type, client)`.
type Listed = (u64, u32, String, Option<String>);

/// Every block the guest logged at its last finalize, and the CRC it logged.
fn guest_blocks(console: &str) -> (Vec<Listed>, u32) {
    let last = console
        .rfind("kho: finalized")
        .expect("a finalize in the console log");
    let mut blocks = Vec::new();
    let mut crc = None;
    for l in console[last..].lines() {
        if let Some(c) = l.split("metadata CRC-32 0x").nth(1) {
            crc = Some(u32::from_str_radix(c.trim(), 16).unwrap());
        }
        let Some(rest) = l.split("kho: preserved 0x").nth(1) else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        blocks.push((
            u64::from_str_radix(w[0], 16).unwrap(),
            w[2].parse().unwrap(),
            w[3].to_string(),
            (w.get(4) == Some(&"client")).then(|| w[5].to_string()),
        ));
    }
    blocks.sort();
    (blocks, crc.expect("the guest logged its CRC"))
}

fn inspect(dump: &Path, fdt: &str) -> (i32, String) {
    let args = [
        dump.display().to_string(),
        "--fdt".into(),
        fdt.into(),
        "--json".into(),
    ];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = kho_inspect::run(&args, &mut out, &mut err);
    let text = String::from_utf8(out).unwrap() + &String::from_utf8(err).unwrap();
    (code, text)
}

/// The string value of `"key":"..."` or raw value of `"key":...` in one JSON object text.
fn field<'a>(obj: &'a str, key: &str) -> &'a str {
    let v = obj
        .split(&format!("\"{key}\":"))
        .nth(1)
        .unwrap_or_else(|| panic!("{key} in {obj}"));
    let v = v.split([',', '}']).next().unwrap();
    v.trim_matches('"')
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// The JSON objects of array `key` (flat objects only, as kho-inspect writes them).
fn objects<'a>(json: &'a str, key: &str) -> Vec<&'a str> {
    let arr = json
        .split(&format!("\"{key}\":["))
        .nth(1)
        .unwrap_or_else(|| panic!("{key}"));
    let arr = &arr[..arr.find(']').unwrap()];
    arr.split("},{").filter(|o| !o.is_empty()).collect()
}

/// A copy of `dump` with `patch` applied at physical address `phys`.
fn damaged_copy(dump: &Path, name: &str, phys: u64, patch: impl FnOnce(&mut [u8])) -> PathBuf {
    let (off, base, _) = kho_inspect::elf_segments(dump)
        .unwrap()
        .into_iter()
        .find(|&(_, p, s)| p <= phys && phys < p + s)
        .expect("address in the dump");
    let mut bytes = std::fs::read(dump).unwrap();
    let at = (off + phys - base) as usize;
    patch(&mut bytes[at..at + 8]);
    let p = dump.with_file_name(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn inspector_agrees_with_the_guest_and_names_damage() {
    let d = dump_generation(1);
    let (want, guest_crc) = guest_blocks(&d.console);
    assert!(want.len() >= 3, "too few blocks logged:\n{}", d.console);

    let (code, json) = inspect(&d.dump, &d.fdt);
    assert_eq!(code, 0, "{json}");
    let mut got: Vec<Listed> = objects(&json, "blocks")
        .iter()
        .map(|o| {
            let client = field(o, "client");
            (
                hex(field(o, "phys")),
                field(o, "order").parse().unwrap(),
                field(o, "type").to_string(),
                (client != "null").then(|| client.to_string()),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "kho-inspect and the guest's debug log disagree");
    let crc = json.split("\"crc\":").nth(1).unwrap();
    assert_eq!(hex(field(crc, "stored")), u64::from(guest_crc));
    assert_eq!(field(crc, "computed"), field(crc, "stored"));
    assert_eq!(field(crc, "ok"), "true");

    let nodes = objects(&json, "nodes");
    let node = |level: &str| {
        let n = nodes
            .iter()
            .find(|n| field(n, "tree") == "main" && field(n, "level") == level)
            .unwrap_or_else(|| panic!("no main level-{level} node in {json}"));
        hex(field(n, "phys"))
    };

    // A flipped bit in a leaf still decodes to a well-formed set: only the CRC sees it.
    let leaf = damaged_copy(&d.dump, "leaf-bitflip.elf", node("0") + 0x100, |b| {
        b[0] ^= 0x10
    });
    let (code, json) = inspect(&leaf, &d.fdt);
    assert_eq!(code, 2, "{json}");
    assert!(json.contains("\"error\":{\"check\":\"Checksum\""), "{json}");
    let _ = std::fs::remove_file(leaf);

    // A wild pointer in the main root table: the walk refuses the level-4 node.
    let wild = damaged_copy(&d.dump, "wild-pointer.elf", node("5") + 3 * 8, |b| {
        b.copy_from_slice(&0xdead_0000_0000u64.to_le_bytes())
    });
    let (code, json) = inspect(&wild, &d.fdt);
    assert_eq!(code, 2, "{json}");
    assert!(
        json.contains("\"error\":{\"check\":\"NodeOutsideRam\""),
        "{json}"
    );
    assert!(
        json.contains("main tree level-4 node 0xdead00000000 outside RAM"),
        "{json}"
    );
    let _ = std::fs::remove_file(wild);
    let _ = std::fs::remove_file(&d.dump);
}

#[test]
fn inspector_reads_a_kho_v4_handover() {
    // baton handing over in Linux's format: the dump holds a kho-v4 KHO FDT, its page a
    // preserved block, and kexec-metadata.
    let d = dump_generation_with(1, "dump-kho-v4", "baton.handover-format=linux");
    assert!(
        d.console.contains("finalized for Linux (kho-v4)"),
        "{}",
        d.console
    );
    let (code, text) = inspect(&d.dump, &d.fdt);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("kho-v4"), "{text}");
    assert!(text.contains("kexec-metadata"), "{text}");
    assert!(
        text.contains("baton-carry") || text.contains("baton-workload"),
        "{text}"
    );
}
