//! Simulated images over one arena that stands for RAM: the outgoing image preserves a mix of
//! blocks and finalizes; the incoming image probes, reserves, restores and frees them.
//!
//! Owns the test model (what was preserved, how it must come back); never reaches into kho
//! internals, only its public API, like the board code will.

use std::mem::MaybeUninit;

use kho::bootfdt::{read_handover, rewrite, ChosenUpdate};
use kho::choose_scratch;
use kho::{Arena, BlockType, HandoverRefs, Incoming, Kho, PhysMem};
use kho::{Fdt, FdtWriter};
use mm::{BlockKind, FrameAllocator, Memblock, Page, Pfn, PhysAddr, PhysRange};

pub const RAM_BASE: u64 = 0x4000_0000;
/// Under Miri (where every frame descriptor costs) just big enough for two order-10 blocks
/// outside the image and scratch, as the round-trip mixes need.
pub const RAM_SIZE: u64 = if cfg!(miri) { 16 << 20 } else { 32 << 20 };
pub const SCRATCH_SIZE: u64 = if cfg!(miri) { 2 << 20 } else { 4 << 20 };
/// The outgoing image's own footprint.
pub const IMAGE1: PhysRange = PhysRange {
    start: PhysAddr(RAM_BASE),
    end: PhysAddr(RAM_BASE + (1 << 20)),
};
/// A firmware-reserved range (not allocator memory) preserved with `preserve_phys`: 5 pages.
pub const FIRMWARE: PhysRange = PhysRange {
    start: PhysAddr(RAM_BASE + (1 << 20)),
    end: PhysAddr(RAM_BASE + (1 << 20) + 5 * 4096),
};
const VIRT_DTB: &[u8] = include_bytes!("../data/virt.dtb");

/// The boot FDT the outgoing image rewrites for the next one: QEMU virt's, or under Miri a
/// minimal tree with the same root cells (rewriting virt costs ~10 s per handover there; the
/// virt rewrite itself is checked in `bootfdt.rs`).
fn base_boot_fdt() -> Vec<u8> {
    if !cfg!(miri) {
        return VIRT_DTB.to_vec();
    }
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    w.prop("#address-cells", &2u32.to_be_bytes()).unwrap();
    w.prop("#size-cells", &2u32.to_be_bytes()).unwrap();
    w.begin_node("chosen").unwrap();
    w.end_node().unwrap();
    w.begin_node("memory@40000000").unwrap();
    w.prop_str("device_type", "memory").unwrap();
    let reg: Vec<u8> = [RAM_BASE, RAM_SIZE]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    w.prop("reg", &reg).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    w.finish().unwrap()
}

pub fn ram() -> PhysRange {
    PhysRange::new(PhysAddr(RAM_BASE), RAM_SIZE)
}

/// A frame allocator whose descriptor storage lives for the rest of the test process.
pub fn frame_allocator(mb: &Memblock, max_order: u32) -> FrameAllocator<'static> {
    let n = FrameAllocator::descriptors_needed(mb);
    let storage: &'static mut [MaybeUninit<Page>] = crate::common::keep(
        (0..n)
            .map(|_| MaybeUninit::uninit())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    FrameAllocator::new(mb, storage, max_order).unwrap()
}

/// A descriptor full of junk, as RAM holds before anyone writes it.
pub fn garbage_page() -> Page {
    // SAFETY: `Page` is repr(C) with integer fields only and no padding: any 32 bytes are
    // a valid `Page`.
    unsafe { core::mem::transmute::<[u8; 32], Page>([0x5a; 32]) }
}

/// A frame allocator built as the next image builds it: deferred descriptor init around
/// `preserved`, over storage that starts as garbage (kept for the rest of the process).
pub fn deferred_frame_allocator(
    mb: &Memblock,
    max_order: u32,
    preserved: mm::PreservedSet<'_, kho::Block>,
) -> FrameAllocator<'static> {
    let need = mm::DeferredStorage::for_memblock(mb);
    let pages: &'static mut [Page] = crate::common::keep(
        (0..need.descriptors)
            .map(|_| garbage_page())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let bits: &'static mut [u64] =
        crate::common::keep(vec![u64::MAX; need.chunk_words].into_boxed_slice());
    FrameAllocator::new_deferred_set(mb, pages, bits, max_order, preserved).unwrap()
}

/// How a block must come back.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum As {
    Folio,
    Pages,
}

/// One preserved block of the model.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expect {
    pub phys: u64,
    pub order: u32,
    pub kind: BlockType,
    pub restore: As,
}

/// What the outgoing image does.
#[derive(Copy, Clone, Debug)]
pub enum Op {
    Folio(u32),
    Contig(u32),
    Split(u32),
    Phys(u32),
    SplitAfterPreserve(u32),
    UnpreserveLast,
}

pub struct Outgoing {
    pub mb: Memblock,
    pub fa: FrameAllocator<'static>,
    pub kho: Kho<&'static Arena>,
    pub expect: Vec<Expect>,
    pub scratch: PhysRange,
}

/// Boots the outgoing image on `arena` with `max_order`.
pub fn outgoing(arena: &'static Arena, max_order: u32) -> Outgoing {
    let mut mb = Memblock::new();
    mb.add_memory(ram()).unwrap();
    mb.reserve(IMAGE1).unwrap();
    mb.reserve(FIRMWARE).unwrap();
    let scratch = choose_scratch(&mut mb, SCRATCH_SIZE).unwrap();
    let mut fa = frame_allocator(&mb, max_order);
    let kho = Kho::new(arena, &mut fa, vec![scratch]).unwrap();
    Outgoing {
        mb,
        fa,
        kho,
        expect: Vec::new(),
        scratch,
    }
}

fn stamp(arena: &Arena, phys: u64) {
    use kho::PhysMem;
    let p = arena.ptr(phys, 8).unwrap() as *mut u64;
    // SAFETY: the arena owns 8 valid bytes at p; nothing else references them.
    unsafe { p.write_unaligned(phys ^ 0x5a5a) };
}

pub fn check_stamp(arena: &Arena, phys: u64) {
    use kho::PhysMem;
    let p = arena.ptr(phys, 8).unwrap() as *const u64;
    // SAFETY: as in `stamp`.
    assert_eq!(
        unsafe { p.read_unaligned() },
        phys ^ 0x5a5a,
        "contents of {phys:#x} lost"
    );
}

impl Outgoing {
    /// Applies one op; an allocation failure (arena full) is skipped.
    pub fn apply(&mut self, op: Op) {
        let fa = &mut self.fa;
        let phys_of = |p: Pfn| p.0 << 12;
        match op {
            Op::Folio(o) => {
                let Ok(p) = fa.alloc_folio(o) else { return };
                self.kho.preserve_folio(fa, p).unwrap();
                self.expect.push(Expect {
                    phys: phys_of(p),
                    order: o,
                    kind: BlockType::Contig,
                    restore: As::Folio,
                });
            }
            Op::Contig(o) | Op::Phys(o) => {
                let Ok(p) = fa.alloc_pages(o) else { return };
                if matches!(op, Op::Phys(_)) {
                    self.kho.preserve_phys(fa, phys_of(p), 4096 << o).unwrap();
                } else {
                    self.kho.preserve_pages(fa, p, 1 << o).unwrap();
                }
                self.expect.push(Expect {
                    phys: phys_of(p),
                    order: o,
                    kind: BlockType::Contig,
                    restore: As::Pages,
                });
            }
            Op::Split(o) => {
                let Ok(p) = fa.alloc_pages(o) else { return };
                fa.split_page(p, o).unwrap();
                self.kho.preserve_pages(fa, p, 1 << o).unwrap();
                self.expect.push(Expect {
                    phys: phys_of(p),
                    order: o,
                    kind: BlockType::Split,
                    restore: As::Pages,
                });
            }
            Op::SplitAfterPreserve(o) => {
                let Ok(p) = fa.alloc_pages(o) else { return };
                self.kho.preserve_pages(fa, p, 1 << o).unwrap();
                self.kho.split_preserved_pages(fa, p, o).unwrap();
                self.expect.push(Expect {
                    phys: phys_of(p),
                    order: o,
                    kind: BlockType::Split,
                    restore: As::Pages,
                });
            }
            Op::UnpreserveLast => {
                let Some(e) = self.expect.pop() else { return };
                if e.phys == FIRMWARE.start.0 {
                    self.expect.push(e);
                    return;
                }
                match e.restore {
                    As::Folio => self.kho.unpreserve_folio(fa, Pfn(e.phys >> 12)).unwrap(),
                    As::Pages => self
                        .kho
                        .unpreserve_pages(Pfn(e.phys >> 12), 1 << e.order)
                        .unwrap(),
                }
            }
        }
    }

    /// Preserves the firmware range (raw memory, 4 + 1 pages).
    pub fn preserve_firmware(&mut self) {
        self.kho
            .preserve_phys(&mut self.fa, FIRMWARE.start.0, FIRMWARE.size())
            .unwrap();
        for (phys, order) in [
            (FIRMWARE.start, 2),
            (PhysAddr(FIRMWARE.start.0 + 4 * 4096), 0),
        ] {
            self.expect.push(Expect {
                phys: phys.0,
                order,
                kind: BlockType::Contig,
                restore: As::Pages,
            });
        }
    }

    /// Model check before handover: the recorded set equals the model, and each recorded type
    /// agrees with both mm's `block_kind` and the tail-refcount heuristic.
    pub fn check_recorded(&self) {
        let mut want: Vec<_> = self
            .expect
            .iter()
            .map(|e| (e.phys, e.order, e.kind))
            .collect();
        want.sort();
        let mut got = self.kho.blocks().unwrap();
        got.sort();
        assert_eq!(got, want);
        for e in &self.expect {
            if e.phys >= FIRMWARE.start.0 && e.phys < FIRMWARE.end.0 {
                continue;
            }
            let pfn = Pfn(e.phys >> 12);
            let kind = self.fa.block_kind(pfn, e.order).unwrap();
            assert_eq!(kind == BlockKind::Split, e.kind == BlockType::Split);
            if e.order > 0 {
                let tail = self.fa.page_ref_count(Pfn(pfn.0 + 1)).unwrap();
                assert_eq!(
                    tail != 0,
                    e.kind == BlockType::Split,
                    "tail refcount vs type at {:#x}",
                    e.phys
                );
            }
        }
    }

    /// Finalizes and writes the next image's boot FDT; returns it.
    pub fn handover(&mut self, arena: &Arena) -> Vec<u8> {
        self.handover_as(arena, Format::V2)
    }

    /// Finalizes and writes the boot FDT for the next image, the handover in `format`: v1 is
    /// what the previous release wrote (its two trees built from this image's blocks, in
    /// pages of this image's allocator; the v1 KHO FDT in the KHO FDT's own pages).
    pub fn handover_as(&mut self, arena: &Arena, format: Format) -> Vec<u8> {
        for e in &self.expect {
            stamp(arena, e.phys);
        }
        let mut h = if format == Format::LinuxV4 {
            let m = kho::linux::KexecMetadata {
                release: String::from("7.2.13"),
                count: 1,
            };
            self.kho.finalize_linux(&mut self.fa, &m).unwrap()
        } else {
            self.kho.finalize(&mut self.fa).unwrap()
        };
        if format == Format::V1 {
            h.kho_fdt = self.rewrite_as_v1(arena, h.kho_fdt);
        }
        if format == Format::LinuxV4 {
            h.scratch_array = linux_scratch_array(arena, self.kho.scratch());
        }
        rewrite(
            &base_boot_fdt(),
            &ChosenUpdate {
                kho_fdt: Some(h.kho_fdt),
                kho_scratch: Some(h.scratch_array),
                ..Default::default()
            },
        )
        .unwrap()
    }
}

/// Which release's handover format the outgoing image writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// `baton,kho-typed-v1`: the previous release (two trees).
    V1,
    /// `baton,kho-typed-v2`: this one (one tree, typed keys).
    V2,
    /// Linux's `kho-v4`, laid out the way Linux lays it out: the scratch array in the last
    /// page of the first scratch area, followed by an area of size 0 (a node without memory).
    LinuxV4,
}

/// Writes the scratch array the way Linux does (inside scratch, with an empty entry) and
/// returns its range.
fn linux_scratch_array(arena: &Arena, scratch: &[PhysRange]) -> PhysRange {
    let at = scratch[0].end.0 - 4096;
    let mut bytes = Vec::new();
    for a in scratch {
        bytes.extend_from_slice(&a.start.0.to_le_bytes());
        bytes.extend_from_slice(&a.size().to_le_bytes());
    }
    bytes.extend_from_slice(&0x8000_0000u64.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    assert!(kho::write_bytes(arena, at, &bytes));
    PhysRange::new(mm::PhysAddr(at), bytes.len() as u64)
}

/// Tree pages for the v1 writer, from the outgoing image's allocator (never scratch: it is
/// reserved there).
struct FaSource<'f>(&'f mut FrameAllocator<'static>);

impl kho::testing::PageSource for FaSource<'_> {
    fn alloc_page(&mut self) -> Option<u64> {
        self.0.alloc_pages(0).ok().map(|p| p.0 << 12)
    }
    fn free_page(&mut self, phys: u64) {
        self.0.free_pages(Pfn(phys >> 12), 0).unwrap();
    }
}

impl Outgoing {
    /// Every block this image preserved, as validation would list them.
    pub fn blocks(&self) -> Vec<kho::Block> {
        self.kho
            .blocks()
            .unwrap()
            .into_iter()
            .map(|(phys, order, kind)| kho::Block { phys, order, kind })
            .collect()
    }

    fn rewrite_as_v1(&mut self, arena: &Arena, kho_fdt: PhysRange) -> PhysRange {
        let p = arena.ptr(kho_fdt.start.0, kho_fdt.size() as usize).unwrap();
        // SAFETY: the arena owns the KHO FDT's bytes; nothing else references them now.
        let v2 = unsafe { std::slice::from_raw_parts(p, kho_fdt.size() as usize) }.to_vec();
        let view = kho::testing::read_kho_fdt(&Fdt::parse(&v2).unwrap()).unwrap();
        let blocks = self.blocks();
        let (fdt, _) = kho::testing::write_v1_handover(
            arena,
            &mut FaSource(&mut self.fa),
            &blocks,
            &view.clients,
        )
        .unwrap();
        // The KHO FDT got whole pages; v1's is a property longer and still fits.
        assert!(fdt.len() as u64 <= kho_fdt.size().next_multiple_of(4096));
        let p = arena.ptr(kho_fdt.start.0, fdt.len()).unwrap();
        // SAFETY: as above; the pages are the KHO FDT's own.
        unsafe { std::ptr::copy_nonoverlapping(fdt.as_ptr(), p, fdt.len()) };
        PhysRange::new(kho_fdt.start, fdt.len() as u64)
    }
}

pub struct IncomingImage {
    pub fa: FrameAllocator<'static>,
    pub inc: Incoming,
    /// The format the handover was read in.
    pub format: kho::AbiVersion,
}

/// Where the boot FDT's `/chosen` says the handover is (it must name one).
pub fn handover_refs(boot_fdt: &[u8]) -> HandoverRefs {
    let fdt = Fdt::parse(boot_fdt).unwrap();
    let (kho_fdt, scratch_array) = read_handover(&fdt).unwrap().expect("handover in /chosen");
    HandoverRefs {
        kho_fdt,
        scratch_array,
    }
}

/// Boots the next image from `boot_fdt` on the same arena; `Err` = boots cold.
pub fn incoming(
    arena: &'static Arena,
    boot_fdt: &[u8],
    max_order: u32,
) -> Result<IncomingImage, kho::RestoreError> {
    let refs = handover_refs(boot_fdt);
    let ram = [ram()];
    let scratch = kho::read_scratch(arena, &ram, &refs)?;
    let mut mb = Memblock::new();
    mb.add_memory(ram[0]).unwrap();
    // The next image runs from the start of scratch.
    let image2 = PhysRange::new(scratch[0].start, 1 << 20);
    mb.reserve(image2).unwrap();
    mb.set_alloc_only_in(&scratch).unwrap();
    let reserved = kho::probe(arena, &refs, &ram, &scratch, &[image2])?;
    mb.clear_alloc_only_in();
    // Scratch stays scratch: nothing of this image's own handover may land there.
    for s in &scratch {
        mb.reserve(*s).unwrap();
    }
    let mut fa = deferred_frame_allocator(&mb, max_order, reserved.preserved());
    let format = reserved.format();
    let inc = reserved.attach(&mut fa).unwrap();
    Ok(IncomingImage { fa, inc, format })
}

impl IncomingImage {
    /// Restores every expected block and checks the refcount pattern and contents.
    pub fn restore_all(&mut self, arena: &Arena, expect: &[Expect]) {
        let fa = &mut self.fa;
        for e in expect {
            let pfn = Pfn(e.phys >> 12);
            match e.restore {
                As::Folio => {
                    assert_eq!(self.inc.restore_folio(fa, e.phys).unwrap(), pfn);
                    assert_eq!(fa.folio_order(pfn).unwrap(), e.order);
                    assert_eq!(
                        fa.block_kind(pfn, e.order).unwrap(),
                        if e.order == 0 {
                            fa.block_kind(pfn, 0).unwrap()
                        } else {
                            BlockKind::Folio
                        }
                    );
                }
                As::Pages => self.inc.restore_pages(fa, e.phys, 1 << e.order).unwrap(),
            }
            assert_eq!(fa.page_ref_count(pfn).unwrap(), 1);
            let n = 1u64 << e.order;
            for i in 1..n.min(64) {
                let want = u32::from(e.kind == BlockType::Split);
                assert_eq!(
                    fa.page_ref_count(Pfn(pfn.0 + i)).unwrap(),
                    want,
                    "{e:?} page {i}"
                );
            }
            if e.kind == BlockType::Split {
                assert_eq!(fa.block_kind(pfn, e.order).unwrap(), BlockKind::Split);
            }
            check_stamp(arena, e.phys);
        }
        assert_eq!(self.inc.unclaimed(), 0);
    }

    /// Frees every restored block the way its owner would; asserts no bad page.
    pub fn free_all(&mut self, expect: &[Expect]) {
        let fa = &mut self.fa;
        for e in expect {
            let pfn = Pfn(e.phys >> 12);
            match (e.restore, e.kind) {
                (As::Folio, _) => fa.folio_put(pfn).unwrap(),
                (As::Pages, BlockType::Contig) => fa.free_pages(pfn, e.order).unwrap(),
                (As::Pages, BlockType::Split) => {
                    for i in 0..1u64 << e.order {
                        fa.put_page(Pfn(pfn.0 + i)).unwrap();
                    }
                }
            }
        }
        assert_eq!(fa.stats().bad, 0);
    }
}
