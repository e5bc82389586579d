//! Linux's formats over a simulated RAM: the `kho-test-v1` client baton authors is the one
//! its own reader (the checks Linux's test module makes) accepts, damage to it is named, and
//! a `kho-v4` handover laid out the way Linux lays it out validates with untyped blocks.

mod common;

use common::sim::*;
use kho::linux::{author_kho_test, verify_kho_test, LinuxClientError, KHO_TEST_NODE};
use kho::{Arena, BlockType, Fdt};

fn rand_from(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn arena() -> &'static Arena {
    common::keep(Box::new(Arena::new(RAM_BASE, RAM_SIZE)))
}

#[test]
fn authored_kho_test_client_verifies_and_damage_is_named() {
    let arena = arena();
    let mut out = outgoing(arena, 10);
    let mut rand = rand_from(7);
    let s = author_kho_test(&mut out.kho, &mut out.fa, arena, 3 << 20, &mut rand).unwrap();
    assert_eq!(s.bytes, 3 << 20);
    let blocks = out.kho.blocks().unwrap();
    // Every test folio, the list page, its chunk page and the sub-FDT folio are preserved.
    assert_eq!(blocks.len() as u32, s.folios + 3);
    assert!(blocks.iter().all(|b| b.2 == BlockType::Contig));
    let preserved = |p: u64, o: u32| blocks.contains(&(p, o, BlockType::Contig));
    let h = out.kho.finalize(&mut out.fa).unwrap();
    let view = {
        let b = kho::read_bytes(arena, h.kho_fdt.start.0, h.kho_fdt.size() as usize).unwrap();
        kho::testing::read_kho_fdt(&Fdt::parse(&b).unwrap()).unwrap()
    };
    let c = view
        .clients
        .iter()
        .find(|c| c.name == KHO_TEST_NODE)
        .unwrap();
    assert_eq!(verify_kho_test(arena, c.phys, c.size, &preserved), Ok(s));
    // A flipped byte in a folio changes the checksum.
    let first = blocks.iter().find(|b| b.0 != c.phys & !4095).unwrap().0;
    arena.flip_bit(first + 100, 3);
    assert!(matches!(
        verify_kho_test(arena, c.phys, c.size, &preserved),
        Err(LinuxClientError::Checksum { stored, .. }) if stored == s.csum
    ));
    arena.flip_bit(first + 100, 3);
    // A folio that is not preserved is named, before its bytes are read.
    let not = |p: u64, o: u32| preserved(p, o) && p != first;
    assert!(matches!(
        verify_kho_test(arena, c.phys, c.size, &not),
        Err(LinuxClientError::NotPreserved { phys, .. }) if phys == first
    ));
    // A truncated sub-FDT is named.
    assert!(matches!(
        verify_kho_test(arena, c.phys, c.size / 2, &preserved),
        Err(LinuxClientError::SubFdt { .. })
    ));
}

#[test]
fn kho_v4_laid_out_as_linux_does_validates_and_restores_as_linux() {
    let arena = arena();
    let mut out = outgoing(arena, 10);
    out.apply(Op::Folio(3));
    out.apply(Op::Contig(2));
    out.apply(Op::Split(1));
    let boot = out.handover_as(arena, Format::LinuxV4);
    let refs = handover_refs(&boot);
    // Linux's layout: the array inside scratch, an empty area skipped.
    let scratch = kho::read_scratch(arena, &[ram()], &refs).unwrap();
    assert_eq!(scratch, vec![out.scratch]);
    assert!(out.scratch.contains_range(&refs.scratch_array));
    let r = kho::probe(arena, &refs, &[ram()], &scratch, &[]).unwrap();
    assert_eq!(r.format(), kho::AbiVersion::LinuxV4);
    let v = r.validated();
    // Three blocks, the KHO FDT page and kexec-metadata; the SPLIT block arrives untyped.
    assert_eq!(v.blocks.len(), 5);
    assert!(v.blocks.iter().all(|b| b.kind == BlockType::Contig));
    assert!(v
        .blocks
        .iter()
        .any(|b| b.phys == refs.kho_fdt.start.0 & !4095));
    let names: Vec<&str> = v.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["kexec-metadata"]);
    let (phys, size) = (v.clients[0].phys, v.clients[0].size);
    let b = kho::read_bytes(arena, phys, size as usize).unwrap();
    let m = kho::linux::KexecMetadata::decode(&b).unwrap();
    assert_eq!((m.release.as_str(), m.count), ("7.2.13", 1));
    // Linux's restore contract in the next image: pages restored as pages each hold a
    // reference; a folio comes back compound (head 1, tails 0).
    let expect = out.expect.clone();
    let mut next = incoming(arena, &boot, 10).unwrap();
    let (contig, folio) = (expect[1], expect[0]);
    next.inc
        .restore_pages(&mut next.fa, contig.phys, 1 << contig.order)
        .unwrap();
    for i in 0..(1u64 << contig.order) {
        let pfn = mm::Pfn((contig.phys >> 12) + i);
        assert_eq!(next.fa.page_ref_count(pfn), Ok(1), "page {i}");
    }
    let head = next.inc.restore_folio(&mut next.fa, folio.phys).unwrap();
    assert_eq!(next.fa.folio_order(head), Ok(folio.order));
    assert_eq!(next.fa.page_ref_count(head), Ok(1));
    assert_eq!(next.fa.page_ref_count(mm::Pfn(head.0 + 1)), Ok(0));
}

/// The three client formats a previous image hands over besides the tree: the `baton-carry`
/// list, `kexec-metadata` and a `kho-test-v1` sub-FDT (verified in place, in the arena).
/// Mutated inputs give a named error or a well-formed value; never a panic or a wrap
/// (debug builds check overflow).
#[test]
fn fuzz_peer_clients() {
    let list = kho::CarryList {
        blocks: vec![
            (0x4000_0000, 3, BlockType::Contig),
            (0x4001_0000, 0, BlockType::Split),
        ],
        clients: vec![String::from("kho_test")],
    }
    .encode(4);
    baton_fuzz::run("carry_list", 20_000, |rng| {
        let mut b = list.clone();
        baton_fuzz::mutate(&mut b, rng, 4);
        kho::CarryList::decode(&b).is_ok()
    });
    let meta = kho::linux::KexecMetadata {
        release: String::from("7.2.13"),
        count: 1,
    }
    .encode()
    .to_vec();
    baton_fuzz::run("kexec_metadata", 20_000, |rng| {
        let mut b = meta.clone();
        baton_fuzz::mutate(&mut b, rng, 4);
        kho::linux::KexecMetadata::decode(&b).is_ok()
    });
    let arena = arena();
    let mut out = outgoing(arena, 10);
    let mut rand = rand_from(3);
    author_kho_test(&mut out.kho, &mut out.fa, arena, 1 << 20, &mut rand).unwrap();
    let blocks = out.kho.blocks().unwrap();
    let preserved = |p: u64, o: u32| blocks.contains(&(p, o, BlockType::Contig));
    let h = out.kho.finalize(&mut out.fa).unwrap();
    let b = kho::read_bytes(arena, h.kho_fdt.start.0, h.kho_fdt.size() as usize).unwrap();
    let view = kho::testing::read_kho_fdt(&Fdt::parse(&b).unwrap()).unwrap();
    let c = view
        .clients
        .iter()
        .find(|c| c.name == KHO_TEST_NODE)
        .unwrap()
        .clone();
    let sub = kho::read_bytes(arena, c.phys, c.size as usize).unwrap();
    baton_fuzz::run("kho_test_client", 3_000, |rng| {
        let mut b = sub.clone();
        baton_fuzz::mutate(&mut b, rng, 3);
        // Same place, same preserved folio: at most the folio's size.
        b.truncate(4096);
        assert!(kho::write_bytes(arena, c.phys, &b));
        let ok = verify_kho_test(arena, c.phys, b.len() as u64, &preserved).is_ok();
        assert!(kho::write_bytes(arena, c.phys, &sub));
        ok
    });
}
