//! Corrupted handovers: every single-bit flip and truncation of a small serialized handover,
//! plus wild pointers, cycles, shared nodes, impossible orders and overlapping blocks. Each
//! gives an error naming the check, or the original block set intact; never a panic, never a
//! reservation left behind. Every case runs on this release's format (v2, one tree of typed
//! keys) and on the previous release's (v1, two trees), which the next image still reads.

mod common;

use common::sim::*;
use kho::bootfdt::read_handover;
use kho::testing::{encode, encode_typed};
use kho::testing::{read_kho_fdt, write_view};
use kho::Fdt;
use kho::TreeName;
use kho::{Arena, BlockTotals, BlockType, HandoverRefs, PhysMem, RestoreError, Validated};
use mm::{Memblock, PhysAddr, PhysRange};

struct Fixture {
    format: Format,
    arena: &'static Arena,
    refs: HandoverRefs,
    clean: Validated,
    image2: PhysRange,
    scratch: Vec<PhysRange>,
}

/// A small handover: a folio, a CONTIG block, a SPLIT block, a split-after-preserve block
/// and a client.
fn fixture(format: Format) -> Fixture {
    fixture_of(
        format,
        &[
            Op::Folio(2),
            Op::Contig(3),
            Op::Split(1),
            Op::SplitAfterPreserve(2),
            Op::Contig(0),
        ],
    )
}

/// The smallest handover with every kind of record: order-0 CONTIG and SPLIT blocks, a folio
/// and a client (one leaf per type: v2 11 tree pages, v1 12).
fn tiny_fixture(format: Format) -> Fixture {
    fixture_of(format, &[Op::Folio(0), Op::Split(0), Op::Contig(0)])
}

const FORMATS: [Format; 3] = [Format::V2, Format::V1, Format::LinuxV4];
/// baton's own formats: the metadata checksum catches what no structural check can.
const BATON_FORMATS: [Format; 2] = [Format::V2, Format::V1];

fn fixture_of(format: Format, ops: &[Op]) -> Fixture {
    let arena: &'static Arena = crate::common::keep(Box::new(Arena::new(RAM_BASE, RAM_SIZE)));
    let mut out = outgoing(arena, 10);
    for &op in ops {
        out.apply(op);
    }
    let e = *out.expect.last().unwrap();
    out.kho.add_client("blob", e.phys, 4096).unwrap();
    let boot = out.handover_as(arena, format);
    let refs = handover_refs(&boot);
    let scratch = kho::read_scratch(arena, &[ram()], &refs).unwrap();
    let image2 = PhysRange::new(scratch[0].start, 1 << 20);
    let mut f = Fixture {
        format,
        arena,
        refs,
        clean: empty(),
        image2,
        scratch,
    };
    f.clean = f.attempt(&refs).unwrap();
    // kho-v4 also preserves the KHO FDT page and the kexec-metadata blob as blocks.
    let extra = if format == Format::LinuxV4 { 2 } else { 0 };
    assert_eq!(f.clean.blocks.len(), ops.len() + extra);
    f
}

fn empty() -> Validated {
    Validated {
        blocks: vec![],
        metadata: vec![],
        clients: vec![],
        totals: BlockTotals::default(),
    }
}

impl Fixture {
    /// One boot of the next image: scratch array, validation and reservation on a fresh
    /// memblock. Checks that a failure leaves no reservation and that a success passes every
    /// range and overlap check independently of kho.
    fn attempt(&self, refs: &HandoverRefs) -> Result<Validated, RestoreError> {
        let ram = [ram()];
        let scratch = kho::read_scratch(self.arena, &ram, refs)?;
        let mut mb = Memblock::new();
        mb.add_memory(ram[0]).unwrap();
        mb.reserve(self.image2).unwrap();
        for s in &scratch {
            mb.reserve(*s).unwrap();
        }
        let r = kho::probe(self.arena, refs, &ram, &scratch, &[self.image2])?;
        let v = r.validated().clone();
        check_independently(&v, &scratch, self.image2);
        // Whatever passed validation, mm accepts as preserved ranges (sorted, disjoint, RAM).
        let need = mm::DeferredStorage::for_memblock(&mb);
        let mut pages: Vec<mm::Page> = (0..need.descriptors).map(|_| garbage_page()).collect();
        let mut bits = vec![0u64; need.chunk_words];
        mm::FrameAllocator::new_deferred(&mb, &mut pages, &mut bits, mm::MAX_ORDER, r.preserved())
            .expect("validated ranges refused by mm");
        Ok(v)
    }

    fn tree_pages(&self) -> Vec<u64> {
        let fdt_pages = PhysRange::new(self.refs.kho_fdt.start.align_down(4096), 4096);
        self.clean
            .metadata
            .iter()
            .filter(|m| **m != fdt_pages && m.size() == 4096)
            .map(|m| m.start.0)
            .collect()
    }

    fn read_u64(&self, phys: u64) -> u64 {
        let p = self.arena.ptr(phys, 8).unwrap() as *const u64;
        // SAFETY: the arena owns these 8 bytes; no reference aliases them.
        unsafe { p.read_unaligned() }
    }

    fn write_u64(&self, phys: u64, v: u64) {
        let p = self.arena.ptr(phys, 8).unwrap() as *mut u64;
        // SAFETY: as in read_u64.
        unsafe { p.write_unaligned(v) }
    }

    fn kho_fdt_bytes(&self) -> Vec<u8> {
        let r = self.refs.kho_fdt;
        let p = self.arena.ptr(r.start.0, r.size() as usize).unwrap();
        // SAFETY: as in read_u64.
        unsafe { std::slice::from_raw_parts(p, r.size() as usize) }.to_vec()
    }

    /// The tree's root and, in v1, the split tree's.
    fn roots(&self) -> (u64, Option<u64>) {
        let b = self.kho_fdt_bytes();
        let v = read_kho_fdt(&Fdt::parse(&b).unwrap()).unwrap();
        (v.main_root, v.split_root)
    }

    /// Rewrites the KHO FDT as `edit` changes its view, in its own format (same size).
    fn edit_kho_fdt(&self, edit: impl FnOnce(&mut kho::testing::KhoFdtView)) {
        let b = self.kho_fdt_bytes();
        let mut v = read_kho_fdt(&Fdt::parse(&b).unwrap()).unwrap();
        edit(&mut v);
        let new = write_view(&v).unwrap();
        assert_eq!(new.len(), b.len());
        let p = self
            .arena
            .ptr(self.refs.kho_fdt.start.0, new.len())
            .unwrap();
        // SAFETY: as in read_u64.
        unsafe { std::ptr::copy_nonoverlapping(new.as_ptr(), p, new.len()) };
    }

    /// Rewrites the KHO FDT with `crc`, keeping everything else (same size).
    fn reseal_with(&self, crc: u32) {
        self.edit_kho_fdt(|v| v.crc = crc);
    }

    /// Makes the checksum match the (corrupted) trees, so the structural check is what fires.
    fn reseal(&self) {
        if let Err(RestoreError::Checksum { computed, .. }) = self.attempt(&self.refs) {
            self.reseal_with(computed);
        }
    }

    /// Flips one bit, attempts a boot, flips it back.
    fn flip_case(&self, phys: u64, bit: u32) -> Result<Validated, RestoreError> {
        self.arena.flip_bit(phys, bit);
        let res = self.attempt(&self.refs);
        self.arena.flip_bit(phys, bit);
        res
    }

    /// Runs `corrupt`, attempts a boot, restores the bytes it changed (snapshot of the pages).
    fn case(&self, corrupt: impl FnOnce(&Self), reseal: bool) -> Result<Validated, RestoreError> {
        let mut regions = self.clean.metadata.clone();
        regions.push(PhysRange::new(
            PhysAddr(self.refs.scratch_array.start.0 & !4095),
            4096,
        ));
        let snap: Vec<(PhysRange, Vec<u8>)> = regions
            .iter()
            .map(|r| {
                let p = self.arena.ptr(r.start.0, r.size() as usize).unwrap();
                // SAFETY: as in read_u64.
                (
                    *r,
                    unsafe { std::slice::from_raw_parts(p, r.size() as usize) }.to_vec(),
                )
            })
            .collect();
        corrupt(self);
        if reseal {
            self.reseal();
        }
        let res = self.attempt(&self.refs);
        for (r, bytes) in snap {
            let p = self.arena.ptr(r.start.0, bytes.len()).unwrap();
            // SAFETY: as in read_u64.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        }
        res
    }
}

fn check_independently(v: &Validated, scratch: &[PhysRange], image2: PhysRange) {
    // The counts validation kept on the way (v1's SPLIT marks included) are the blocks'.
    assert_eq!(v.totals, BlockTotals::of(&v.blocks));
    let mut last_end = 0;
    for b in &v.blocks {
        let r = b.region();
        assert!(ram().contains_range(&r), "{b:?} outside RAM");
        assert!(
            r.start >= PhysAddr(last_end),
            "{b:?} overlaps its predecessor"
        );
        assert_eq!(b.phys % (4096 << b.order), 0);
        assert!(!scratch.iter().any(|s| s.overlaps(&r)), "{b:?} in scratch");
        assert!(!image2.overlaps(&r));
        assert!(
            !v.metadata.iter().any(|m| m.overlaps(&r)),
            "{b:?} over metadata"
        );
        last_end = r.end.0;
    }
}

#[derive(Default)]
struct Tally {
    tried: u64,
    caught: u64,
    benign: u64,
    /// `kho-v4` only: a flip that leaves another well-formed handover (a leaf bit naming a
    /// block in free RAM, a client renamed). Linux's format has no checksum, so no reader can
    /// tell it from the real one; every structural check still held (`attempt` checked the
    /// set against RAM, scratch, the metadata and itself).
    reshaped: u64,
}

impl Tally {
    fn record(&mut self, f: &Fixture, res: Result<Validated, RestoreError>) {
        self.tried += 1;
        match res {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                self.caught += 1;
            }
            Ok(v) if f.format == Format::LinuxV4 && v != f.clean => {
                self.reshaped += 1;
            }
            Ok(v) => {
                // Only a flip that changes nothing the handover means may pass.
                assert_eq!(
                    v.blocks, f.clean.blocks,
                    "a corrupted handover changed the block set"
                );
                assert_eq!(v.clients, f.clean.clients);
                self.benign += 1;
            }
        }
    }
}

#[test]
fn every_bit_flip_and_truncation_is_caught_or_harmless() {
    for format in FORMATS {
        every_bit_flip_and_truncation(format);
    }
}

fn every_bit_flip_and_truncation(format: Format) {
    let f = tiny_fixture(format);
    let mut t = Tally::default();
    // Every bit of the KHO FDT and of the scratch array.
    let meta_stride = if cfg!(miri) { 53 } else { 1 };
    for region in [f.refs.kho_fdt, f.refs.scratch_array] {
        for bit in (0..region.size() * 8).step_by(meta_stride) {
            let res = f.flip_case(region.start.0 + bit / 8, (bit % 8) as u32);
            t.record(&f, res);
        }
    }
    // Every bit of every tree page (a stride in unoptimized builds keeps the time down; under
    // Miri, where each flip costs a full walk and checksum, two bits a page, at offsets that
    // differ from page to page).
    let stride = if cfg!(miri) {
        16411
    } else if cfg!(debug_assertions) {
        61
    } else {
        1
    };
    for (i, page) in f.tree_pages().into_iter().enumerate() {
        let first = if cfg!(miri) { (i * 1031) % stride } else { 0 } as u64;
        for bit in (first..4096 * 8).step_by(stride) {
            let res = f.flip_case(page + bit / 8, (bit % 8) as u32);
            t.record(&f, res);
        }
    }
    // Every truncation of the KHO FDT and of the scratch array.
    for n in (0..f.refs.kho_fdt.size()).step_by(meta_stride) {
        let refs = HandoverRefs {
            kho_fdt: PhysRange::new(f.refs.kho_fdt.start, n),
            ..f.refs
        };
        t.record(&f, f.attempt(&refs));
    }
    for n in 0..f.refs.scratch_array.size() {
        let refs = HandoverRefs {
            scratch_array: PhysRange::new(f.refs.scratch_array.start, n),
            ..f.refs
        };
        t.record(&f, f.attempt(&refs));
    }
    assert_eq!(
        f.attempt(&f.refs).unwrap(),
        f.clean,
        "flips were not undone"
    );
    println!(
        "corruption {format:?}: {} tree pages, {} cases tried, {} caught with a named error, {} harmless (same block set), {} another well-formed set (kho-v4 has no checksum)",
        f.tree_pages().len(),
        t.tried,
        t.caught,
        t.benign,
        t.reshaped
    );
    let floor = if format == Format::LinuxV4 { 5 } else { 9 };
    assert!(
        t.caught > t.tried * floor / 10,
        "{} of {}",
        t.caught,
        t.tried
    );
}

#[test]
fn a_flipped_leaf_bit_is_caught_by_the_checksum() {
    for format in BATON_FORMATS {
        let f = fixture(format);
        // One more leaf bit = one more well-formed block next to an existing one.
        let b = f.clean.blocks[0];
        let key = f.key(b.phys + (4096 << b.order), b.order, BlockType::Contig);
        let res = f.case(|f| set_key(f, f.roots().0, key), false);
        assert!(matches!(res, Err(RestoreError::Checksum { .. })), "{res:?}");
        // v2: flipping a block's type is one leaf bit off and one on: the checksum again.
        if format == Format::V2 {
            let s = *f
                .clean
                .blocks
                .iter()
                .find(|b| b.kind == BlockType::Split)
                .unwrap();
            let res = f.case(
                |f| {
                    clear_key(
                        f,
                        f.roots().0,
                        encode_typed(s.phys, s.order, BlockType::Split),
                    );
                    set_key(
                        f,
                        f.roots().0,
                        encode_typed(s.phys, s.order, BlockType::Contig),
                    );
                },
                false,
            );
            assert!(matches!(res, Err(RestoreError::Checksum { .. })), "{res:?}");
        }
    }
}

impl Fixture {
    /// The key of a block as this fixture's format writes it in the tree of every block.
    fn key(&self, phys: u64, order: u32, kind: BlockType) -> u64 {
        match self.format {
            Format::V2 => encode_typed(phys, order, kind),
            Format::V1 | Format::LinuxV4 => encode(phys, order),
        }
    }
}

/// Clears `key` in the tree at `root` (its path must exist).
fn clear_key(f: &Fixture, root: u64, key: u64) {
    let mut node = root;
    for level in (1..=5).rev() {
        node = f.read_u64(node + 8 * kho::tamper::table_index(key, level) as u64);
        assert_ne!(node, 0, "no path for {key:#x}");
    }
    let w = node + 8 * ((key & 0x7fff) / 64);
    assert_ne!(f.read_u64(w) & 1 << (key % 64), 0, "{key:#x} not set");
    f.write_u64(w, f.read_u64(w) & !(1 << (key % 64)));
}

/// Free pages of the arena (no block, no metadata, not scratch) for building extra paths.
const SPARE: u64 = RAM_BASE + (3 << 20);

/// Sets `key` in the tree at `root`, building missing nodes from spare pages.
fn set_key(f: &Fixture, root: u64, key: u64) {
    let mut spare = SPARE;
    let mut node = root;
    for level in (1..=5).rev() {
        let slot = node + 8 * kho::tamper::table_index(key, level) as u64;
        node = f.read_u64(slot);
        if node == 0 {
            assert!(!f.clean.metadata.iter().any(|m| m.start == PhysAddr(spare)));
            assert!(!f
                .clean
                .blocks
                .iter()
                .any(|b| b.region().overlaps(&PhysRange::new(PhysAddr(spare), 4096))));
            for w in 0..512 {
                f.write_u64(spare + 8 * w, 0);
            }
            f.write_u64(slot, spare);
            node = spare;
            spare += 4096;
        }
    }
    let w = node + 8 * ((key & 0x7fff) / 64);
    f.write_u64(w, f.read_u64(w) | 1 << (key % 64));
}

/// The first non-zero entry of a table and its address.
fn first_entry(f: &Fixture, table: u64) -> (u64, u64) {
    (0..512)
        .map(|i| (table + 8 * i, f.read_u64(table + 8 * i)))
        .find(|e| e.1 != 0)
        .unwrap()
}

/// The last non-zero entry of a table and its address.
fn last_entry(f: &Fixture, table: u64) -> (u64, u64) {
    (0..512)
        .rev()
        .map(|i| (table + 8 * i, f.read_u64(table + 8 * i)))
        .find(|e| e.1 != 0)
        .unwrap()
}

#[test]
fn wild_pointers_cycles_and_shared_nodes_name_their_check() {
    for format in FORMATS {
        wild_pointers_cycles_and_shared_nodes(format);
    }
}

fn wild_pointers_cycles_and_shared_nodes(format: Format) {
    let f = fixture(format);
    let (main, split) = f.roots();
    let (slot, _) = first_entry(&f, main);
    // A node reachable from elsewhere: v1 the split tree's root; v2 the level-4 table of the
    // SPLIT keys (root entries 256..), shared into the CONTIG keys' first entry.
    let other = match split {
        Some(root) => root,
        None => {
            let (s, n) = last_entry(&f, main);
            // kho-v4 has no SPLIT keys; its last root entry holds the order-0 keys.
            assert!(
                format == Format::LinuxV4 || s >= main + 8 * 256,
                "no SPLIT subtree in the root"
            );
            n
        }
    };
    type Check = Box<dyn Fn(&RestoreError) -> bool>;
    let cases: Vec<(&str, u64, Check)> = vec![
        (
            "misaligned",
            0x4000_0123,
            Box::new(|e| {
                matches!(
                    e,
                    RestoreError::NodeMisaligned {
                        level: 4,
                        phys: 0x4000_0123,
                        ..
                    }
                )
            }),
        ),
        (
            "outside RAM",
            0x9000_0000,
            Box::new(|e| {
                matches!(
                    e,
                    RestoreError::NodeOutsideRam {
                        level: 4,
                        phys: 0x9000_0000,
                        ..
                    }
                )
            }),
        ),
        (
            "in scratch",
            f.scratch[0].start.0 + f.scratch[0].size() / 2,
            Box::new(|e| matches!(e, RestoreError::NodeOverlaps { .. })),
        ),
        (
            "in the image",
            f.image2.start.0,
            Box::new(|e| matches!(e, RestoreError::NodeOverlaps { .. })),
        ),
        (
            "the KHO FDT",
            f.refs.kho_fdt.start.0,
            Box::new(|e| matches!(e, RestoreError::NodeOverlaps { .. })),
        ),
        (
            "a cycle to the root",
            main,
            Box::new(move |e| {
                *e == RestoreError::NodeReachableTwice {
                    tree: TreeName::Main,
                    level: 4,
                    phys: main,
                }
            }),
        ),
        (
            "shared between the CONTIG and SPLIT records",
            other,
            Box::new(move |e| matches!(e, RestoreError::NodeReachableTwice { .. })),
        ),
    ];
    for (what, value, ok) in cases {
        let res = f.case(|f| f.write_u64(slot, value), false);
        let e = res.expect_err(what);
        assert!(ok(&e), "{format:?} {what}: {e}");
        println!("{format:?} {what}: {e}");
    }
    // Two entries of one table pointing at the same child.
    let (slot, child) = first_entry(&f, main);
    let res = f.case(|f| f.write_u64(slot + 8, child), false);
    assert!(
        matches!(res, Err(RestoreError::NodeReachableTwice { .. })),
        "{res:?}"
    );
    // The root itself outside RAM.
    let res = f.case(|f| f.edit_kho_fdt(|v| v.main_root = 0x7000_0000), false);
    assert!(
        matches!(
            res,
            Err(RestoreError::NodeOutsideRam {
                level: 5,
                phys: 0x7000_0000,
                ..
            })
        ),
        "{res:?}"
    );
}

#[test]
fn impossible_orders_overlaps_and_stray_split_keys_name_their_check() {
    for format in FORMATS {
        impossible_orders_overlaps_and_stray_keys(format);
    }
}

fn impossible_orders_overlaps_and_stray_keys(format: Format) {
    let f = fixture(format);
    let (main, split) = f.roots();
    let b = *f.clean.blocks.iter().find(|b| b.order >= 1).unwrap();
    let inside = f.key(b.phys + 4096, 0, BlockType::Split);
    let free_page = SPARE + (1 << 20);
    let contig = |p| f.key(p, 0, BlockType::Contig);
    type Check = Box<dyn Fn(&RestoreError) -> bool>;
    let mut cases: Vec<(&str, u64, u64, Check)> = vec![
        (
            "order 31",
            main,
            1 << 21,
            Box::new(|e| {
                matches!(
                    e,
                    RestoreError::BadKey {
                        err: kho::KeyError::OrderTooLarge { order: 31, .. },
                        ..
                    }
                )
            }),
        ),
        (
            "bit above the order-0 marker",
            main,
            1 << 55 | 7,
            Box::new(move |e| match format {
                Format::V1 | Format::LinuxV4 => matches!(
                    e,
                    RestoreError::BadKey {
                        err: kho::KeyError::MarkerAboveOrder0 { .. },
                        ..
                    }
                ),
                Format::V2 => matches!(
                    e,
                    RestoreError::BadKey {
                        err: kho::KeyError::UnknownTypeBits {
                            key: 0x0080_0000_0000_0007
                        },
                        ..
                    }
                ),
            }),
        ),
        (
            "key zero",
            main,
            0,
            Box::new(|e| {
                matches!(
                    e,
                    RestoreError::BadKey {
                        err: kho::KeyError::NoMarker,
                        ..
                    }
                )
            }),
        ),
        (
            "overlapping blocks",
            main,
            inside,
            Box::new(|e| matches!(e, RestoreError::BlocksOverlap { .. })),
        ),
        (
            "block outside RAM",
            main,
            contig(0x9000_0000),
            Box::new(|e| {
                matches!(
                    e,
                    RestoreError::BlockOutsideRam {
                        phys: 0x9000_0000,
                        order: 0
                    }
                )
            }),
        ),
        (
            "block in scratch",
            main,
            contig(f.scratch[0].start.0 + f.scratch[0].size() / 2),
            Box::new(|e| matches!(e, RestoreError::BlockOverlaps { .. })),
        ),
        (
            "block over a tree node",
            main,
            contig(main),
            Box::new(
                move |e| matches!(e, RestoreError::BlockOverlaps { phys, .. } if *phys == main),
            ),
        ),
    ];
    // In baton's formats the KHO FDT is metadata; in kho-v4 it is a preserved block itself
    // (the same key again changes nothing, and a missing one is its own check below).
    if format != Format::LinuxV4 {
        cases.push((
            "block over the KHO FDT",
            main,
            contig(f.refs.kho_fdt.start.0 & !4095),
            Box::new(|e| matches!(e, RestoreError::BlockOverlaps { .. })),
        ));
    }
    match split {
        // Linux computes a negative order from a typed key: baton refuses it by name.
        None if format == Format::LinuxV4 => cases.push((
            "a typed (SPLIT) key in Linux's format",
            main,
            encode_typed(free_page, 0, BlockType::Split),
            Box::new(|e| {
                matches!(
                    e,
                    RestoreError::BadKey {
                        err: kho::KeyError::MarkerAboveOrder0 { .. },
                        ..
                    }
                )
            }),
        )),
        Some(split) => cases.push((
            "split key not in main",
            split,
            encode(free_page, 0),
            Box::new(move |e| {
                *e == RestoreError::SplitKeyNotPreserved {
                    phys: free_page,
                    order: 0,
                }
            }),
        )),
        None => {
            let (p, o) = (b.phys, b.order);
            let other = match b.kind {
                BlockType::Contig => BlockType::Split,
                BlockType::Split => BlockType::Contig,
            };
            cases.push((
                "one block recorded as both CONTIG and SPLIT",
                main,
                encode_typed(p, o, other),
                Box::new(move |e| {
                    *e == RestoreError::BlocksOverlap {
                        phys: p,
                        order: o,
                        other: p,
                        other_order: o,
                    }
                }),
            ));
            for bit in [53u64, 56, 58] {
                let key = encode_typed(free_page, 0, BlockType::Split) | 1 << bit;
                cases.push((
                    "a key with an unknown type bit",
                    main,
                    key,
                    Box::new(move |e| {
                        *e == RestoreError::BadKey {
                            tree: TreeName::Main,
                            err: kho::KeyError::UnknownTypeBits { key },
                        }
                    }),
                ));
            }
        }
    }
    for (what, root, key, ok) in cases {
        let res = f.case(|f| set_key(f, root, key), true);
        let e = res.expect_err(what);
        assert!(ok(&e), "{format:?} {what}: {e}");
        println!("{format:?} {what}: {e}");
    }
    // kho-v4: the KHO FDT's own page must be a preserved block.
    if format == Format::LinuxV4 {
        let fdt_page = f.refs.kho_fdt.start.0 & !4095;
        let res = f.case(|f| clear_key(f, main, contig(fdt_page)), false);
        assert!(
            matches!(res, Err(RestoreError::KhoFdtNotPreserved { phys, .. }) if phys == f.refs.kho_fdt.start.0),
            "{res:?}"
        );
    }
    // A client blob that is not preserved (same name length keeps the FDT size).
    let res = f.case(|f| f.edit_kho_fdt(|v| v.clients[0].phys = free_page), true);
    assert!(
        matches!(res, Err(RestoreError::ClientNotPreserved { phys, .. }) if phys == free_page),
        "{res:?}"
    );
    // A checksum that does not match (kho-v4 has none).
    if format == Format::LinuxV4 {
        return;
    }
    let res = f.case(|f| f.reseal_with(0x1234_5678), false);
    assert!(
        matches!(
            res,
            Err(RestoreError::Checksum {
                stored: 0x1234_5678,
                ..
            })
        ),
        "{res:?}"
    );
}

/// Fuzz target over the restore path's input: random mutations of a real handover (bit
/// flips, random words, pointers to other nodes, truncations), then a full probe. Cases from
/// `KHO_FUZZ_CASES` (default 2,000; 8 under Miri). Run 10 million with
/// `KHO_FUZZ_CASES=10000000 cargo test --release -p kho --test corruption fuzz -- --nocapture`.
#[test]
fn fuzz_restore_path() {
    let cases: u32 = std::env::var("KHO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(miri) { 8 } else { 2_000 });
    for format in FORMATS {
        fuzz_restore(format, cases);
    }
}

fn fuzz_restore(format: Format, cases: u32) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let f = fixture(format);
    let mut regions: Vec<PhysRange> = f.clean.metadata.clone();
    regions.push(f.refs.kho_fdt);
    regions.push(f.refs.scratch_array);
    let nodes = f.tree_pages();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let mutation = (0u8..5, any::<u64>(), any::<u64>());
    let tally = std::cell::RefCell::new(Tally::default());
    runner
        .run(&proptest::collection::vec(mutation, 1..6), |muts| {
            let mut undo: Vec<(u64, u64)> = Vec::new();
            let mut refs = f.refs;
            for (kind, a, b) in muts {
                let r = regions[(a % regions.len() as u64) as usize];
                let at = (r.start.0 + (a >> 8) % r.size().max(1)) & !7;
                let at = at.max(r.start.0 & !7);
                undo.push((at, f.read_u64(at)));
                match kind {
                    0 => f.write_u64(at, f.read_u64(at) ^ (1 << (b % 64))),
                    1 => f.write_u64(at, b),
                    2 => f.write_u64(at, nodes[(b % nodes.len() as u64) as usize]),
                    3 => {
                        refs.kho_fdt =
                            PhysRange::new(refs.kho_fdt.start, b % (refs.kho_fdt.size() + 64))
                    }
                    _ => f.write_u64(at, RAM_BASE + (b % RAM_SIZE)),
                }
            }
            let res = f.attempt(&refs);
            for (at, v) in undo.into_iter().rev() {
                f.write_u64(at, v);
            }
            let mut t = tally.borrow_mut();
            t.tried += 1;
            match res {
                Err(_) => t.caught += 1,
                // kho-v4 has no checksum: a mutation may leave another well-formed set,
                // which `attempt` checked structurally.
                Ok(v) if format == Format::LinuxV4 && v != f.clean => t.reshaped += 1,
                Ok(v) => {
                    // Only mutations that changed nothing meaningful pass; the set is intact.
                    prop_assert_eq!(&v.blocks, &f.clean.blocks);
                    t.benign += 1;
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(f.attempt(&f.refs).unwrap(), f.clean);
    let t = tally.into_inner();
    println!(
        "fuzz {format:?}: {} cases, {} rejected with a named error, {} harmless, {} another well-formed set",
        t.tried, t.caught, t.benign, t.reshaped
    );
}

/// Arbitrary bytes as a KHO FDT and as a boot FDT: errors, never panics.
#[test]
fn fuzz_fdt_parsers_on_random_bytes() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let cases = if cfg!(miri) { 8 } else { 2_000 };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let seed = include_bytes!("data/virt.dtb").to_vec();
    runner
        .run(
            &(
                proptest::collection::vec((any::<usize>(), any::<u8>()), 0..16),
                any::<usize>(),
            ),
            |(edits, cut)| {
                let mut b = seed.clone();
                for (i, v) in edits {
                    let n = b.len();
                    b[i % n] = v;
                }
                b.truncate(cut % (seed.len() + 1));
                if let Ok(fdt) = Fdt::parse(&b) {
                    let _ = read_kho_fdt(&fdt);
                    let _ = read_handover(&fdt);
                    let _ = kho::bootfdt::rewrite(&b, &Default::default());
                }
                Ok(())
            },
        )
        .unwrap();
}
