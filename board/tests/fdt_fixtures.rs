//! BootInfo from real device trees: the Raspberry Pi 4 tree Linux ships (../shared) and a
//! QEMU virt tree (board/testdata, from `-M virt,dumpdtb= -m 128M`, padding removed by dtc),
//! plus header corruptions that must give a typed error, never a panic.

use baton_fdt::FdtError;
use board::boards::BoardKind;
use board::fdt::{self, BootInfoError};
use mm::{PhysAddr, PhysRange};
use std::path::Path;

/// The file's bytes in a 4-byte aligned buffer (the boot parse refuses a misaligned tree).
fn load(path: &Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    for (i, b) in bytes.iter().enumerate() {
        words[i / 4] |= (*b as u32) << (8 * (i % 4));
    }
    words
}

fn bytes(words: &[u32]) -> &[u8] {
    // SAFETY: any u32 slice is a valid u8 slice of four times the length.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 4) }
}

fn bytes_mut(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: as above, exclusive borrow.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 4) }
}

fn rpi4() -> Vec<u32> {
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/dtb/bcm2711-rpi-4-b.dtb"),
    )
}

fn virt() -> Vec<u32> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/qemu-virt-128m.dtb"))
}

#[test]
fn rpi4_tree_gives_the_translated_pl011_and_the_spin_table_reservation() {
    let w = rpi4();
    let info = fdt::parse(bytes(&w), 0x100_0000).unwrap();
    assert_eq!(info.board, BoardKind::Rpi4);
    assert_eq!(info.model, "Raspberry Pi 4 Model B");
    // serial@7e201000 on /soc, whose ranges map 0x7e000000 -> 0xfe000000.
    assert_eq!(info.console.map(|c| c.base), Some(0xfe20_1000));
    assert_eq!(info.console.and_then(|c| c.clock_hz), Some(48_000_000));
    assert_eq!(
        info.memreserve.as_slice(),
        &[PhysRange::new(PhysAddr(0), 0x1000)]
    );
    assert_eq!(info.stdout_path, "serial1:115200n8");
    assert!(info.psci.is_none());
    assert!(info.timer.is_some());
    // memory@0 has a zero-length reg until firmware fills it: no RAM, and the image says so.
    assert!(info.memory.is_empty());
    assert_eq!(fdt::check_usable(&info), Err(BootInfoError::NoMemory));
    // Every device lands in the BCM2711's CPU-side peripheral windows.
    assert!(info
        .devices
        .iter()
        .any(|d| d.start.0 <= 0xfe20_1000 && d.end.0 > 0xfe20_1000));
    assert!(
        info.devices.iter().all(|d| d.start.0 >= 0xfc00_0000),
        "{:x?}",
        info.devices
    );
}

#[test]
fn virt_tree_gives_ram_pl011_psci_and_devices() {
    let w = virt();
    let info = fdt::parse(bytes(&w), 0x4400_0000).unwrap();
    assert_eq!(info.board, BoardKind::QemuVirt);
    assert_eq!(
        info.memory.as_slice(),
        &[PhysRange::new(PhysAddr(0x4000_0000), 0x800_0000)]
    );
    assert_eq!(info.console.map(|c| c.base), Some(0x0900_0000));
    assert_eq!(info.psci, Some(arch::PsciMethod::Hvc));
    assert_eq!(info.stdout_path, "/pl011@9000000");
    assert!(info
        .devices
        .iter()
        .all(|d| !d.overlaps(&PhysRange::new(PhysAddr(0x4000_0000), 0x800_0000))));
    assert_eq!(fdt::check_usable(&info), Ok(()));
}

#[test]
fn header_corruptions_are_typed_errors() {
    type Check = fn(&BootInfoError) -> bool;
    let cases: [(usize, u32, Check); 5] = [
        (0, 0x1234_5678, |e| {
            matches!(
                e,
                BootInfoError::Fdt(FdtError::BadMagic { magic: 0x1234_5678 })
            )
        }),
        (4, 0x7fff_0000, |e| {
            matches!(e, BootInfoError::Fdt(FdtError::BadTotalSize { .. }))
        }),
        (8, 0x00ff_fff0, |e| {
            matches!(
                e,
                BootInfoError::Fdt(FdtError::BlockOutOfBounds {
                    block: "structure",
                    ..
                })
            )
        }),
        (20, 1, |e| {
            matches!(
                e,
                BootInfoError::Fdt(FdtError::UnsupportedVersion { version: 1, .. })
            )
        }),
        (36, 0x40, |e| {
            matches!(e, BootInfoError::Fdt(FdtError::Truncated { .. }))
        }),
    ];
    for (off, value, ok) in cases {
        let mut w = virt();
        bytes_mut(&mut w)[off..off + 4].copy_from_slice(&value.to_be_bytes());
        let err = fdt::parse(bytes(&w), 0).unwrap_err();
        assert!(ok(&err), "offset {off} = {value:#x}: got {err:?} ({err})");
    }
}

#[test]
fn every_truncation_of_a_real_tree_is_an_error_not_a_panic() {
    let w = rpi4();
    let full = bytes(&w);
    let total = u32::from_be_bytes(full[4..8].try_into().unwrap()) as usize;
    for len in (0..total).step_by(97) {
        assert!(fdt::parse(&full[..len], 0).is_err(), "len {len}");
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let pristine = virt();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut w = pristine.clone();
        let b = bytes_mut(&mut w);
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % b.len();
            b[i] ^= (seed >> 32) as u8 | 1;
        }
        let _ = fdt::parse(bytes(&w), 0);
    }
}
