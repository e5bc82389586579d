//! Handover chains in QEMU: one process, many generations, each image entering the next.
//!
//! Self-handover chains on virt at EL1 and EL2 and on raspi4b, the A/B cross-version chain
//! (image A with MAX_ORDER 10 and image B with 8, each passing itself on as the other's
//! initrd), the upgrade chain (the previous release, built from git, which writes
//! `baton,kho-typed-v1`, alternating with this one), one chain per kind of damaged handover (the next image must name the failed
//! check, boot cold and go on), and hand-written bad Images that must be refused before
//! any jump. Every `GEN` line is checked the way the soak runner checks it.

use std::path::PathBuf;
use std::time::Duration;

use tests::{boot_with_timeout, workspace_root, write_scratch, Board, Boot, Run};

/// Exit statuses, as defined in board/src/status.rs.
const EXIT_NEXT_IMAGE: i32 = 6;

/// One parsed `GEN` line.
#[derive(Debug)]
struct Gen {
    n: u32,
    cold: bool,
    fields: Vec<(String, u64)>,
}

impl Gen {
    fn get(&self, key: &str) -> u64 {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("GEN n={} has no {key}", self.n))
    }
}

fn gens(run: &Run) -> Vec<Gen> {
    run.output
        .lines()
        .filter_map(|l| l.split_once("GEN n=").map(|(_, rest)| rest))
        .map(|rest| {
            let mut fields = Vec::new();
            for w in format!("n={rest}").split_whitespace() {
                let (k, v) = w.split_once('=').expect("key=value");
                fields.push((k.to_string(), v.parse().expect("number")));
            }
            let n = fields[0].1 as u32;
            let cold = fields.iter().any(|(k, v)| k == "cold" && *v == 1);
            Gen { n, cold, fields }
        })
        .collect()
}

/// Runs a chain of `generations` and checks every GEN line and the SOAK line: consecutive
/// generations, nothing leaked or bad, constant total pages, cold exactly at `cold` (and
/// generation 0), a handover time on every warm generation.
fn chain(board: Board, generations: u32, bootargs: &str, opts: Boot, cold: &[u32]) -> Run {
    let append = format!("baton.generations={generations} baton.seed=7 {bootargs}");
    let opts = Boot {
        append: Some(append),
        memory: opts.memory.or(Some("256M")),
        ..opts
    };
    let run = boot_with_timeout(board, &opts, Duration::from_secs(240));
    run.expect_status(0);
    let gs = gens(&run);
    assert_eq!(gs.len(), generations as usize, "GEN lines\n{}", run.output);
    let total = gs[0].get("total_pages");
    for (i, g) in gs.iter().enumerate() {
        assert_eq!(g.n, i as u32, "sequence\n{}", run.output);
        let expect_cold = g.n == 0 || cold.contains(&g.n);
        assert_eq!(g.cold, expect_cold, "cold at n={}\n{}", g.n, run.output);
        assert_eq!(g.get("leaked"), 0, "n={}", g.n);
        assert_eq!(g.get("bad_pages"), 0, "n={}", g.n);
        assert_eq!(g.get("total_pages"), total, "n={}", g.n);
        if g.cold {
            assert_eq!(g.get("restored"), 0);
        } else {
            assert!(
                g.get("restored") > 0 && g.get("verified_bytes") > 0,
                "n={}",
                g.n
            );
            assert!(g.get("handover_us") > 0, "n={}", g.n);
            // The blackout is its seven phases (each rounded down to a whole µs).
            let phases: u64 = PHASES.iter().map(|k| g.get(k)).sum();
            let total = g.get("handover_us");
            assert!(
                phases <= total && total - phases < PHASES.len() as u64,
                "n={}: phases add up to {phases}, handover_us={total}",
                g.n
            );
        }
    }
    run.expect(&format!(
        "SOAK generations={generations} cold={} ",
        1 + cold.len()
    ))
    .expect("leaked=0 status=ok");
    run
}

/// The blackout's phases on the GEN line, in order.
const PHASES: [&str; 7] = [
    "finalize_us",
    "copyout_us",
    "trampoline_us",
    "early_us",
    "reserve_us",
    "ready_us",
    "restore_us",
];

fn image_b() -> PathBuf {
    std::env::var_os("BATON_IMAGE_B")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/Image-max-order-8"))
}

#[test]
fn fifty_generations_on_virt_el1() {
    let run = chain(Board::Virt, 50, "", Boot::default(), &[]);
    run.expect("next image: own pristine copy")
        .expect("entering at EL1");
}

#[test]
fn fifty_generations_on_virt_el2() {
    let run = chain(Board::VirtEl2, 50, "", Boot::default(), &[]);
    run.expect("entered at EL2, running at EL1")
        .expect("entering at EL2");
}

#[test]
fn fifty_generations_on_raspi4b() {
    let run = chain(Board::Rpi4, 50, "", Boot::default(), &[]);
    run.expect("on rpi4 (Raspberry Pi 4 Model B), entered at EL2")
        .expect("entering at EL2");
    // The spin-table page stays reserved in every generation (its reservation may merge
    // with a neighbouring one in the printout).
    assert_eq!(run.output.matches("reserved: [0x000000000-").count(), 50);
}

#[test]
fn image_a_and_b_alternate_across_max_orders() {
    let b = image_b();
    assert!(
        b.is_file(),
        "no image B at {} (make build/Image-max-order-8)",
        b.display()
    );
    let opts = Boot {
        extra: vec!["-initrd".into(), b.display().to_string()],
        ..Boot::default()
    };
    let run = chain(Board::Virt, 30, "", opts, &[]);
    run.expect("next image (initrd)")
        .expect("initrd (own pristine copy)");
    let orders: Vec<&str> = run
        .output
        .lines()
        .filter_map(|l| l.split_once("(max order ").map(|(_, o)| o))
        .collect();
    assert_eq!(orders.len(), 30);
    for (i, o) in orders.iter().enumerate() {
        let want = if i % 2 == 0 { "10)" } else { "8)" };
        assert_eq!(*o, want, "generation {i} ran the wrong image");
    }
}

/// The previous release's Image (`make image-v1`: built from git at the last commit that
/// wrote `baton,kho-typed-v1`).
fn image_v1() -> PathBuf {
    let p = std::env::var_os("BATON_IMAGE_V1")
        .map(PathBuf::from)
        .expect("BATON_IMAGE_V1 (make test sets it; `make image-v1` builds it)");
    assert!(p.is_file(), "no previous-release Image at {}", p.display());
    p
}

/// A live update from the previous release and back: the old image boots first and passes
/// this one on as its initrd, each handing over to the other. Every new generation (odd)
/// reads the old one's v1 handover, restores and verifies everything, and says "v1"; every
/// old generation after the first (even) refuses this one's v2 handover by its compatible,
/// boots cold and hands over again, so the chain goes on.
#[test]
fn previous_release_v1_handover_is_restored_and_v2_is_refused_by_it() {
    let generations = 12;
    let opts = Boot {
        image: Some(image_v1()),
        extra: vec!["-initrd".into(), tests::image_path().display().to_string()],
        ..Boot::default()
    };
    // A third of the scaled set SPLIT, so the v1 split tree carries blocks across.
    let cold: Vec<u32> = (2..generations).step_by(2).collect();
    let run = chain(
        Board::Virt,
        generations,
        "baton.preserve=4M baton.shape=mixed",
        opts,
        &cold,
    );
    let read_v1: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.contains("kho: validated"))
        .collect();
    assert_eq!(read_v1.len(), generations as usize / 2, "{}", run.output);
    for l in &read_v1 {
        assert!(
            l.contains("format baton,kho-typed-v1 (v1, the previous release's two trees)"),
            "{l}"
        );
        assert!(!l.contains("(0 SPLIT)"), "no SPLIT block crossed: {l}");
    }
    let refused: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.contains("handover ignored"))
        .collect();
    assert_eq!(refused.len(), cold.len(), "{}", run.output);
    for l in refused {
        assert!(
            l.contains("root compatible is not \"baton,kho-typed-v1\"")
                && l.ends_with("booting cold"),
            "{l}"
        );
    }
}

/// A scaled set: `baton.preserve=` of order-0 pages a frame apart, every one handed over,
/// restored and verified in each warm generation.
fn scattered(board: Board, generations: u32, size: &str, pages: u64, memory: Option<&'static str>) {
    let run = chain(
        board,
        generations,
        &format!("baton.preserve={size} baton.shape=scatter"),
        Boot {
            memory,
            ..Boot::default()
        },
        &[],
    );
    for g in gens(&run).iter().filter(|g| !g.cold) {
        assert!(
            g.get("blocks") > pages,
            "n={}: blocks {}",
            g.n,
            g.get("blocks")
        );
        assert!(
            g.get("verified_bytes") > pages * 4096,
            "n={}: verified {}",
            g.n,
            g.get("verified_bytes")
        );
    }
}

#[test]
fn a_hand_set_scratch_too_small_for_the_next_image_is_refused_before_any_work() {
    let opts = Boot {
        append: Some("baton.generations=3 kho_scratch=2M".into()),
        ..Boot::default()
    };
    let run = boot_with_timeout(Board::Virt, &opts, Duration::from_secs(60));
    run.expect_status(EXIT_NEXT_IMAGE)
        // kho_scratch=2M is rounded to the 4 MiB scratch granule (kho::SCRATCH_ALIGN).
        .expect("kho: kho_scratch= gives 4 MiB; the next generation needs ")
        .expect("FAIL gen=0 check=handover detail=")
        .expect("no room in scratch for the ")
        .expect("largest free piece");
    assert!(!run.output.contains("GEN n="), "{}", run.output);
}

#[test]
fn a_47_mib_next_image_fits_the_scratch_sized_for_it_on_1_gib() {
    // A stamped copy of baton's Image that asks for 47 MiB once running, as a
    // distribution's arm64 Linux Image does: A -> B -> A -> B, no kho_scratch=.
    let mut b = image_a();
    set_u64(&mut b, baton_image::OFF_IMAGE_SIZE, 47 << 20);
    baton_image::stamp(&mut b).expect("stamp");
    let f = write_scratch("image-47m", &b);
    let opts = Boot {
        memory: Some("1G"),
        extra: vec!["-initrd".into(), f.display().to_string()],
        ..Boot::default()
    };
    let run = chain(Board::Virt, 4, "", opts, &[]);
    run.expect("image_size 0x2f00000");
}

#[test]
fn sixty_four_mib_in_16384_scattered_pages_survive_on_virt() {
    scattered(Board::Virt, 3, "64M", 16_384, Some("1G"));
}

#[test]
fn sixteen_mib_in_4096_scattered_pages_survive_on_raspi4b() {
    scattered(Board::Rpi4, 2, "16M", 4_096, None);
}

/// Damages every third handover (after generations 2, 5, 8): generations 3, 6 and 9 must
/// name the failed check, boot cold and carry on.
fn damaged(kind: &str, check: &str) {
    let run = chain(
        Board::Virt,
        11,
        &format!("baton.damage={kind} baton.damage-every=3"),
        Boot::default(),
        &[3, 6, 9],
    );
    run.expect(&format!("baton.damage={kind}: damaging"));
    let rejected: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.contains("handover ignored"))
        .collect();
    assert_eq!(rejected.len(), 3, "{}", run.output);
    for l in rejected {
        assert!(l.contains(check), "{kind}: expected {check:?} in {l:?}");
        assert!(l.ends_with("booting cold"), "{l}");
    }
}

#[test]
fn leaf_bit_flip_is_caught_by_the_checksum() {
    damaged("leaf-bitflip", "metadata CRC-32");
}

#[test]
fn wild_table_pointer_is_caught() {
    damaged("wild-pointer", "node 0x7fffdead0000 outside RAM");
}

#[test]
fn impossible_order_is_caught() {
    damaged("bad-order", "encodes order 31");
}

#[test]
fn unknown_type_bit_is_caught() {
    damaged(
        "bad-type",
        "sets a bit in 53..=63 other than the type bit 59",
    );
}

#[test]
fn truncated_kho_fdt_is_caught() {
    damaged("truncate-fdt", "does not fit the");
}

#[test]
fn scratch_overlap_is_caught() {
    damaged("scratch-overlap", "overlaps [");
}

/// Boots image A with `bytes` as its initrd (the next image): it must be refused before
/// generation 0 runs, naming `check`, and nothing may be entered.
fn refused(name: &str, bytes: &[u8], check: &str) {
    let f = write_scratch(name, bytes);
    let opts = Boot {
        append: Some("baton.generations=3".into()),
        extra: vec!["-initrd".into(), f.display().to_string()],
        ..Boot::default()
    };
    let run = boot_with_timeout(Board::Virt, &opts, Duration::from_secs(60));
    run.expect_status(EXIT_NEXT_IMAGE)
        .expect("FAIL gen=0 check=handover detail=next image refused: initrd at 0x")
        .expect(check);
    assert!(!run.output.contains("GEN n="), "{}", run.output);
    assert!(!run.output.contains("entering at"), "{}", run.output);
}

fn image_a() -> Vec<u8> {
    std::fs::read(tests::image_path()).expect("read the Image")
}

fn set_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn text_file_is_not_an_image() {
    refused(
        "not-an-image",
        b"#!/bin/sh\necho this is not an arm64 Image, it is a shell script padded out\n\n\n",
        "magic: 0x",
    );
}

#[test]
fn big_endian_image_is_refused() {
    let mut a = image_a();
    set_u64(&mut a, 24, 0b1011);
    refused("big-endian", &a, "flags: big-endian image");
}

#[test]
fn sixty_four_k_page_image_is_refused() {
    let mut a = image_a();
    set_u64(&mut a, 24, 0b1110);
    refused("64k-pages", &a, "flags: page size code 3");
}

#[test]
fn image_size_smaller_than_file_is_refused() {
    let mut a = image_a();
    set_u64(&mut a, 16, 0x1000);
    refused(
        "small-image-size",
        &a,
        "image_size: 0x1000 smaller than the file",
    );
}

#[test]
fn changed_byte_breaks_the_stamp() {
    let mut a = image_a();
    let mid = a.len() / 2;
    a[mid] ^= 0x01;
    refused("one-bit-changed", &a, "stamp: stored CRC-32");
}

#[test]
fn truncated_header_is_refused() {
    refused("header-only", &image_a()[..40], "length: 40 bytes");
}
