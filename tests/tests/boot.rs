//! Boot tests: the one Image on every board and entry EL, the relocation proof, the
//! failure paths (fault, stack overflow, panic) and every malformed-FDT case the image
//! checks. Each test boots QEMU through the shared harness in `tests/src/lib.rs`.

use tests::{
    boot, get_be32, put_be32, replace_bytes, virt_dtb, write_scratch, Board, Boot, Run, Shim,
};

/// Exit statuses, as defined in board/src/status.rs.
const EXIT_PANIC: i32 = 1;
const EXIT_EXCEPTION: i32 = 2;
const EXIT_BAD_FDT: i32 = 3;

fn assert_booted(run: &Run, board: &str, el: &str, load: &str) {
    run.expect_status(0)
        .expect(&format!(
            "BATON-BOOT board={board} el={el} load={load} reloc_ok=1"
        ))
        .expect("memory: [")
        .expect("mmu on: identity map")
        .expect("heap: talc ok")
        .expect("free memory: ")
        .expect("baton: ready");
}

#[test]
fn virt_el1_boots_prints_the_memory_map_and_exits_zero() {
    let run = boot(Board::Virt, &Boot::default());
    assert_booted(&run, "qemu-virt", "1", "0x40200000");
    run.expect("entered at EL1, running at EL1")
        .expect("memory: [0x040000000-0x047ffffff]")
        .expect("psci: hvc")
        .expect("console: pl011 at 0x9000000");
}

#[test]
fn virt_el2_boots_at_el1_and_keeps_the_el2_stub() {
    let run = boot(Board::VirtEl2, &Boot::default());
    assert_booted(&run, "qemu-virt", "2", "0x40200000");
    run.expect("entered at EL2, running at EL1")
        .expect("psci: smc");
}

#[test]
fn rpi4_with_the_linux_device_tree_boots_at_0x200000() {
    let run = boot(Board::Rpi4, &Boot::default());
    assert_booted(&run, "rpi4", "2", "0x200000");
    run.expect("Raspberry Pi 4 Model B")
        // The PL011 sits at bus address 0x7e201000; `ranges` puts it at 0xfe201000.
        .expect("console: pl011 at 0xfe201000, 48000000 Hz")
        // /memreserve/ 0x0 0x1000: the spin-table page.
        .expect("reserved: [0x000000000-0x000000fff]")
        .expect("psci: none");
}

#[test]
fn rpi4_without_a_device_tree_uses_the_default_board() {
    let run = boot(Board::Rpi4NoDtb, &Boot::default());
    assert_booted(&run, "rpi4", "2", "0x200000");
    run.expect("no FDT at x0")
        .expect("default board, no FDT")
        .expect("reserved: [0x000000000-0x000000fff]");
}

/// The same Image file at four load addresses (QEMU's loader on virt and raspi4b, and the
/// boot shim at two more 2 MiB boundaries) must apply its relocations and find every probe
/// pointer equal to its PC-relative address; the link-relative checksum is the same.
#[test]
fn the_same_image_runs_at_any_2mib_aligned_address() {
    let fw_fdt = 0x4000_0000; // where QEMU virt leaves its tree when booting "firmware"
    let runs = [
        (boot(Board::Virt, &Boot::default()), "0x40200000"),
        (boot(Board::Rpi4NoDtb, &Boot::default()), "0x200000"),
        (
            boot(
                Board::Virt,
                &Boot {
                    shim: Some(Shim {
                        image_addr: 0x4060_0000,
                        fdt_addr: fw_fdt,
                        fdt_file: None,
                    }),
                    ..Boot::default()
                },
            ),
            "0x40600000",
        ),
        (
            boot(
                Board::Virt,
                &Boot {
                    memory: Some("512M"),
                    shim: Some(Shim {
                        image_addr: 0x5b40_0000,
                        fdt_addr: fw_fdt,
                        fdt_file: None,
                    }),
                    ..Boot::default()
                },
            ),
            "0x5b400000",
        ),
    ];
    let mut checksums = Vec::new();
    for (run, load) in &runs {
        run.expect_status(0).expect("relocation probe ok");
        assert_eq!(
            run.boot_field("load").as_deref(),
            Some(*load),
            "{}",
            run.output
        );
        assert_eq!(run.boot_field("reloc_ok").as_deref(), Some("1"));
        let applied = run
            .output
            .lines()
            .find_map(|l| {
                l.split(", ")
                    .find_map(|p| p.strip_suffix(" relocations applied"))
            })
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        assert!(applied > 0, "no relocations applied:\n{}", run.output);
        checksums.push(run.boot_field("checksum").expect("checksum"));
    }
    assert!(
        checksums.windows(2).all(|w| w[0] == w[1]),
        "checksums differ: {checksums:?}"
    );
}

#[test]
fn a_data_abort_prints_esr_far_and_registers_then_exits_2() {
    let run = boot(
        Board::Virt,
        &Boot {
            append: Some("baton.test=fault".into()),
            ..Boot::default()
        },
    );
    run.expect_status(EXIT_EXCEPTION)
        .expect("!!! EXCEPTION (synchronous, current EL, SP0): data abort, current EL")
        .expect("ESR_EL1 0x00000000960000")
        .expect("FAR_EL1 0x00000dead0000000")
        .expect("ELR_EL1 0x")
        .expect("SPSR_EL1 0x")
        .expect(" x0  0x")
        .expect(" x30 0x");
}

#[test]
fn a_stack_overflow_hits_the_guard_page_and_is_reported() {
    let run = boot(
        Board::Virt,
        &Boot {
            append: Some("baton.test=stack-overflow".into()),
            ..Boot::default()
        },
    );
    run.expect_status(EXIT_EXCEPTION)
        .expect("FAR is in the stack guard page");
}

#[test]
fn a_panic_prints_its_location_and_exits_1() {
    let run = boot(
        Board::Virt,
        &Boot {
            append: Some("baton.test=panic".into()),
            ..Boot::default()
        },
    );
    run.expect_status(EXIT_PANIC)
        .expect("PANIC at board/kernel/src/boot.rs:")
        .expect("deliberate panic (baton.test=panic)");
}

/// Boots virt through the shim with x0 pointing at QEMU's own tree after `corrupt` edited
/// it; the image must name the failed check and exit with status 3.
fn boot_corrupted_fdt(name: &str, corrupt: impl FnOnce(&mut Vec<u8>)) -> Run {
    let mut dtb = virt_dtb("128M");
    corrupt(&mut dtb);
    let file = write_scratch(&format!("{name}.dtb"), &dtb);
    let run = boot(
        Board::Virt,
        &Boot {
            shim: Some(Shim {
                image_addr: 0x4020_0000,
                fdt_addr: 0x4400_0000,
                fdt_file: Some(file),
            }),
            ..Boot::default()
        },
    );
    run.expect_status(EXIT_BAD_FDT)
        .expect("cannot continue without a valid device tree");
    run
}

#[test]
fn fdt_with_a_bad_magic_is_refused() {
    boot_corrupted_fdt("magic", |d| put_be32(d, 0, 0x1234_5678))
        .expect("FDT error: FDT magic 0x12345678 is not 0xd00dfeed");
}

#[test]
fn fdt_with_a_huge_totalsize_is_refused() {
    boot_corrupted_fdt("totalsize", |d| put_be32(d, 4, 0x7fff_0000))
        .expect("FDT error: FDT totalsize 2147418112 does not fit the 2097152 bytes given");
}

#[test]
fn fdt_with_the_structure_block_outside_totalsize_is_refused() {
    boot_corrupted_fdt("struct-offset", |d| {
        let total = get_be32(d, 4);
        put_be32(d, 8, total - 8);
    })
    .expect("FDT error: FDT structure block at ");
}

#[test]
fn fdt_with_a_truncated_structure_block_is_refused() {
    boot_corrupted_fdt("truncated", |d| put_be32(d, 36, 0x40))
        .expect("FDT error: FDT structure truncated at ");
}

#[test]
fn fdt_with_an_unsupported_version_is_refused() {
    boot_corrupted_fdt("version", |d| put_be32(d, 20, 1))
        .expect("FDT error: FDT version 1 (last compatible");
}

#[test]
fn fdt_with_a_bad_token_is_refused() {
    boot_corrupted_fdt("token", |d| {
        let off = get_be32(d, 8) as usize;
        put_be32(d, off, 0xff); // no such token (FDT_END is 9)
    })
    // The strict reader's rules (baton_fdt::check_tree) name the token and its offset.
    .expect("FDT error: FDT token 0xff at 0x40 is unknown");
}

#[test]
fn fdt_without_a_memory_node_is_refused() {
    boot_corrupted_fdt("no-memory", |d| {
        assert!(replace_bytes(d, b"memory@", b"memorx@") > 0);
        assert!(replace_bytes(d, b"memory\0", b"memorx\0") > 0);
    })
    .expect("FDT error: no /memory node describes any RAM");
}

/// `arch::handover::jump_to_image` into the same image: directly at EL1, and through the
/// EL2 stub's HVC when the image was entered at EL2. The second boot must come up at the
/// entry EL of the first.
#[test]
fn jump_to_image_reenters_at_the_entry_el() {
    for (board, el) in [(Board::Virt, "EL1"), (Board::VirtEl2, "EL2")] {
        let run = boot(
            board,
            &Boot {
                append: Some("baton.test=reenter".into()),
                ..Boot::default()
            },
        );
        run.expect_status(0)
            .expect(&format!(
                "jumping to 0x40200000 with x0 = 0x44000000 at {el}"
            ))
            .expect(&format!("re-entered through jump_to_image at {el}"));
        assert_eq!(
            run.output.matches("BATON-BOOT ").count(),
            2,
            "{}",
            run.output
        );
    }
}

/// Without `-semihosting` the exit trap is undefined: the image must notice and power off
/// through PSCI instead of hanging (QEMU then exits 0 on its own).
#[test]
fn without_semihosting_virt_powers_off_through_psci() {
    let run = boot(
        Board::Virt,
        &Boot {
            no_semihosting: true,
            ..Boot::default()
        },
    );
    run.expect_status(0).expect("baton: ready");
}
