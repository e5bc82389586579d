//! baton and a real Linux KHO peer in QEMU virt: Linux 7.2 with Kexec HandOver and its own
//! test module, test_kho (built once by `scripts/linux-peer.sh` and cached; `make test`
//! passes its directory in `BATON_LINUX_PEER`). Linux's test module is the judge: its
//! folios must survive Linux -> baton -> Linux, and the `kho-test-v1` client baton writes
//! must pass Linux's own restore. Also: baton reading damaged `kho-v4` handovers.

use std::path::PathBuf;
use std::time::Duration;

use tests::cpio::Cpio;
use tests::{boot_with_timeout, image_path, write_scratch, Board, Boot, Run};

/// Linux's line for a passed restore.
const TEST_KHO_OK: &str = "test_kho: KHO restore succeeded";
/// Linux's line when it ignores a handover.
const KHO_REJECTED: &str = "disabling KHO revival";
/// A Linux boot with its own kexec and baton's chain stays well inside this.
const TIMEOUT: Duration = Duration::from_secs(240);

/// The peer's directory (Image, init).
fn peer() -> PathBuf {
    let dir = std::env::var_os("BATON_LINUX_PEER").unwrap_or_else(|| {
        panic!("BATON_LINUX_PEER is not set: run `make test` (or `make linux-peer` and export BATON_LINUX_PEER=<its last line>)")
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("Image").is_file() && dir.join("init").is_file(),
        "no Linux peer in {}",
        dir.display()
    );
    dir
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The peer's initramfs: its init, the kernel it kexecs into, that kernel's initrd and
/// command line.
fn initramfs(name: &str, kernel: &[u8], next_initrd: Option<&[u8]>, cmdline: &str) -> PathBuf {
    let mut c = Cpio::new()
        .file("init", &read(peer().join("init")), true)
        .file("kernel", kernel, false)
        .file("next.cmdline", cmdline.as_bytes(), false);
    if let Some(i) = next_initrd {
        c = c.file("next.initrd", i, false);
    }
    write_scratch(name, &c.finish())
}

/// Boots the Linux peer on virt (one CPU) with `initrd`; it exits through `panic=-1`.
fn boot_linux(memory: &'static str, initrd: PathBuf, max_mem: u64) -> Run {
    boot_with_timeout(
        Board::Virt,
        &Boot {
            image: Some(peer().join("Image")),
            memory: Some(memory),
            append: Some(format!(
                "console=ttyAMA0 kho=on panic=-1 test_kho.max_mem={max_mem}"
            )),
            extra: vec![
                "-initrd".into(),
                initrd.display().to_string(),
                "-smp".into(),
                "1".into(),
                "-no-reboot".into(),
            ],
            ..Boot::default()
        },
        TIMEOUT,
    )
}

fn count(run: &Run, needle: &str) -> usize {
    run.output.matches(needle).count()
}

fn refute(run: &Run, needle: &str) {
    assert!(
        !run.output.contains(needle),
        "unexpected {needle:?} in\n  {}\n--- output ---\n{}",
        run.command,
        run.output
    );
}

#[test]
fn linux_peer_passes_its_own_kexec_test() {
    let k = read(peer().join("Image"));
    let initrd = initramfs(
        "linux-linux.cpio",
        &k,
        None,
        "console=ttyAMA0 kho=on panic=-1",
    );
    let run = boot_linux("1G", initrd, 16 << 20);
    run.expect("peer-init: reboot(RB_KEXEC)")
        .expect("KHO: exec from: 7.2")
        .expect(TEST_KHO_OK);
    refute(&run, KHO_REJECTED);
}

#[test]
fn linux_hands_over_to_baton_which_verifies_and_carries_it() {
    let initrd = initramfs(
        "linux-baton.cpio",
        &read(image_path()),
        None,
        "baton.generations=3",
    );
    let run = boot_linux("1G", initrd, 16 << 20);
    run.expect("format kho-v4")
        .expect("peer: client kho_test at")
        .expect("compatible \"kho-test-v1\"")
        .expect("peer: kexec from 7.2")
        .expect("peer: carrying")
        .expect("SOAK generations=3 cold=1")
        .expect("status=ok");
    // Verified by baton in every generation: Linux's, then twice more while carried.
    let verified = run
        .output
        .lines()
        .filter(|l| l.contains("kho-test: ") && l.contains(" bytes, csum ") && l.ends_with(" ok"))
        .count();
    assert_eq!(verified, 3, "{}", run.output);
    refute(&run, "booting cold");
    refute(&run, "leaked=1");
}

fn linux_baton_linux(memory: &'static str, max_mem: u64, name: &str) {
    let linux = read(peer().join("Image"));
    let initrd = initramfs(
        name,
        &read(image_path()),
        Some(&linux),
        "console=ttyAMA0 kho=on panic=-1 baton.generations=2",
    );
    let run = boot_linux(memory, initrd, max_mem);
    run.expect("format kho-v4")
        .expect("finalized for Linux (kho-v4)")
        .expect("KHO: exec from: baton-0.1.0 (count 2)");
    assert_eq!(count(&run, "kho-test: "), 1, "{}", run.output);
    assert_eq!(count(&run, TEST_KHO_OK), 1, "{}", run.output);
    refute(&run, KHO_REJECTED);
    refute(&run, "verification FAILED");
}

#[test]
fn linux_to_baton_to_linux_keeps_test_kho_folios_at_1g() {
    linux_baton_linux("1G", 16 << 20, "linux-baton-linux-1g.cpio");
}

#[test]
fn linux_to_baton_to_linux_keeps_a_gib_of_test_kho_folios_at_4g() {
    linux_baton_linux("4G", 1 << 30, "linux-baton-linux-4g.cpio");
}

/// baton (cold) hands over to the Linux peer with a `kho-test-v1` client of `size`.
fn baton_linux(memory: &'static str, size: &str) -> Run {
    boot_with_timeout(
        Board::Virt,
        &Boot {
            memory: Some(memory),
            append: Some(format!(
                "console=ttyAMA0 kho=on panic=-1 baton.generations=2 baton.kho-test={size}"
            )),
            extra: vec![
                "-initrd".into(),
                peer().join("Image").display().to_string(),
                "-no-reboot".into(),
            ],
            ..Boot::default()
        },
        TIMEOUT,
    )
}

#[test]
fn baton_hands_over_to_linux_whose_test_kho_verifies_baton_s_client() {
    let run = baton_linux("1G", "64M");
    run.expect("kho-test: authored")
        .expect("finalized for Linux (kho-v4)")
        .expect("KHO: found kexec handover data.")
        .expect("KHO: exec from: baton-0.1.0 (count 1)")
        .expect(TEST_KHO_OK);
    refute(&run, KHO_REJECTED);
}

#[test]
fn scratch_holds_a_linux_next_image_s_early_boot_from_256m_to_16g() {
    // Linux allocates only in scratch until its walk is done: too little and it panics early.
    for memory in ["256M", "4G", "16G"] {
        let run = baton_linux(memory, "8M");
        run.expect("kho-test: authored").expect(TEST_KHO_OK);
        refute(&run, KHO_REJECTED);
    }
}

/// baton hands over to itself in Linux's format, damaged as `kind`: the next image names
/// `check` and boots cold.
fn damaged_kho_v4(kind: &str, check: &str) {
    let run = boot_with_timeout(
        Board::Virt,
        &Boot {
            memory: Some("256M"),
            append: Some(format!(
                "baton.generations=2 baton.handover-format=linux baton.damage={kind} baton.damage-every=1"
            )),
            ..Boot::default()
        },
        TIMEOUT,
    );
    run.expect_status(0)
        .expect("finalized for Linux (kho-v4)")
        .expect(&format!("baton.damage={kind}: damaging"));
    let rejected: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.contains("handover ignored"))
        .collect();
    assert_eq!(rejected.len(), 1, "{}", run.output);
    assert!(
        rejected[0].contains(check) && rejected[0].ends_with("booting cold"),
        "{kind}: expected {check:?} in {:?}",
        rejected[0]
    );
    run.expect("SOAK generations=2 cold=2");
}

#[test]
fn kho_v4_leaf_bit_flip_is_caught() {
    // No checksum in Linux's format: the flipped bit names a block outside RAM.
    damaged_kho_v4("leaf-bitflip", "outside RAM");
}

#[test]
fn kho_v4_wild_table_pointer_is_caught() {
    damaged_kho_v4("wild-pointer", "node 0x7fffdead0000 outside RAM");
}

#[test]
fn kho_v4_truncated_kho_fdt_is_caught() {
    damaged_kho_v4("truncate-fdt", "does not fit the");
}

#[test]
fn kho_v4_typed_key_is_caught() {
    damaged_kho_v4("bad-type", "has a bit above the order-0 marker");
}

#[test]
fn kho_v4_impossible_order_is_caught() {
    damaged_kho_v4("bad-order", "encodes order 31");
}

#[test]
fn bad_peer_options_are_refused_before_any_work() {
    for (arg, named) in [
        ("baton.handover-format=bogus", "baton.handover-format=bogus"),
        ("baton.kho-test=12Q", "baton.kho-test=12Q"),
    ] {
        let run = boot_with_timeout(
            Board::Virt,
            &Boot {
                append: Some(format!("baton.generations=2 {arg}")),
                ..Boot::default()
            },
            TIMEOUT,
        );
        run.expect("FAIL gen=0 check=handover").expect(named);
        // Refused before the generation preserved anything.
        refute(&run, "GEN n=0");
    }
}
