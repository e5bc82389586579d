//! A whole handover on the host: preserve memory in one simulated image, hand over, restore
//! it in the next. The sequence another kernel follows to adopt `kho`.
//!
//! One `kho::Arena` stands for RAM and outlives both images, as real RAM outlives a kexec.
//! The first image boots `mm`, preserves a folio, a plain block and a split block with their
//! contents, names a client blob and finalizes; the next image reads `/chosen`, validates and
//! reserves what was preserved before its allocator exists, then restores every block with
//! the page state it had. Needs feature `test-helpers` (for `Arena`):
//! `cargo run -p kho --features test-helpers --example handover`.

use kho::bootfdt::{read_handover, rewrite, ChosenUpdate};
use kho::{Arena, Fdt, FdtWriter, HandoverRefs, Kho};
use mm::{BlockKind, DeferredStorage, FrameAllocator, Memblock, Page, Pfn, PhysAddr, PhysRange};
use std::mem::MaybeUninit;

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 32 << 20;
const SCRATCH_SIZE: u64 = 4 << 20;
/// Each image's own footprint (the first one loaded at the start of RAM, the next one at
/// the start of scratch, where a handover places it).
const IMAGE_SIZE: u64 = 1 << 20;

type Result<T> = core::result::Result<T, String>;

/// Turns any of kho's or mm's typed errors into a line saying which step failed.
fn step<T, E: core::fmt::Display>(what: &str, r: core::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn ram() -> PhysRange {
    PhysRange::new(PhysAddr(RAM_BASE), RAM_SIZE)
}

/// What the first image kept, and how the next one must find it.
struct Kept {
    folio: u64,
    block: u64,
    split: u64,
    /// `/chosen` of the next image's boot FDT, with `linux,kho-fdt` and `linux,kho-scratch`.
    boot_fdt: Vec<u8>,
}

/// The boot FDT a loader would pass: root cells, `/memory`, an empty `/chosen`.
fn base_boot_fdt() -> Result<Vec<u8>> {
    let cells = |v: &[u64]| v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    let mut w = FdtWriter::new();
    let r = (|| {
        w.begin_node("")?;
        w.prop("#address-cells", &2u32.to_be_bytes())?;
        w.prop("#size-cells", &2u32.to_be_bytes())?;
        w.begin_node("chosen")?;
        w.end_node()?;
        w.begin_node("memory@40000000")?;
        w.prop_str("device_type", "memory")?;
        w.prop("reg", &cells(&[RAM_BASE, RAM_SIZE]))?;
        w.end_node()?;
        w.end_node()
    })();
    step("boot FDT", r)?;
    step("boot FDT", w.finish())
}

/// Image 1: boot mm, choose scratch, preserve three kinds of block, finalize.
fn first_image(arena: &Arena) -> Result<Kept> {
    let mut mb = Memblock::new();
    step("memblock", mb.add_memory(ram()))?;
    step(
        "memblock",
        mb.reserve(PhysRange::new(PhysAddr(RAM_BASE), IMAGE_SIZE)),
    )?;
    // Scratch: where the next image will run and allocate until it has reserved our blocks.
    let scratch = step("scratch", kho::choose_scratch(&mut mb, SCRATCH_SIZE))?;
    let mut storage: Vec<MaybeUninit<Page>> = (0..FrameAllocator::descriptors_needed(&mb))
        .map(|_| MaybeUninit::uninit())
        .collect();
    let mut fa = step(
        "frames",
        FrameAllocator::new(&mb, &mut storage, mm::MAX_ORDER),
    )?;
    let mut kho = step("kho", Kho::new(arena, &mut fa, vec![scratch]))?;

    // A folio, a plain (CONTIG) block and a SPLIT block, each stamped with its address.
    let folio = step("alloc", fa.alloc_folio(2))?;
    let block = step("alloc", fa.alloc_pages(3))?;
    let split = step("alloc", fa.alloc_pages(1))?;
    step("split", fa.split_page(split, 1))?;
    for pfn in [folio, block, split] {
        kho::write_u64(arena, pfn.phys().0, pfn.phys().0 ^ 0xba70);
    }
    step("preserve", kho.preserve_folio(&mut fa, folio))?;
    step("preserve", kho.preserve_pages(&mut fa, block, 8))?;
    step("preserve", kho.preserve_pages(&mut fa, split, 2))?;
    // The block doubles as a named client blob: the next image finds it by name.
    step(
        "client",
        kho.add_client("example", block.phys().0, 8 * 4096),
    )?;

    let handover = step("finalize", kho.finalize(&mut fa))?;
    let chosen = ChosenUpdate {
        kho_fdt: Some(handover.kho_fdt),
        kho_scratch: Some(handover.scratch_array),
        ..Default::default()
    };
    let boot_fdt = step("rewrite /chosen", rewrite(&base_boot_fdt()?, &chosen))?;
    println!(
        "image 1: preserved {} blocks, KHO FDT at {:#x}",
        kho.block_count(),
        handover.kho_fdt.start.0
    );
    Ok(Kept {
        folio: folio.phys().0,
        block: block.phys().0,
        split: split.phys().0,
        boot_fdt,
    })
}

/// Image 2, early boot: find the handover, validate it, and build memblock so that nothing
/// is allocated outside scratch before the preserved blocks are reserved.
fn second_image_early(arena: &Arena, boot_fdt: &[u8]) -> Result<(Memblock, kho::Reserved)> {
    let fdt = step("boot FDT", Fdt::parse(boot_fdt))?;
    let (kho_fdt, scratch_array) =
        step("/chosen", read_handover(&fdt))?.ok_or("no handover in /chosen")?;
    let refs = HandoverRefs {
        kho_fdt,
        scratch_array,
    };
    let ram = [ram()];
    let scratch = step("scratch", kho::read_scratch(arena, &ram, &refs))?;
    let image = PhysRange::new(scratch[0].start, IMAGE_SIZE);
    let mut mb = Memblock::new();
    step("memblock", mb.add_memory(ram[0]))?;
    step("memblock", mb.reserve(image))?;
    step("memblock", mb.set_alloc_only_in(&scratch))?;
    // Any failure here is a cold boot in a real kernel: the error names the check.
    let reserved = step(
        "validate",
        kho::probe(arena, &refs, &ram, &scratch, &[image]),
    )?;
    mb.clear_alloc_only_in();
    for s in &scratch {
        step("memblock", mb.reserve(*s))?;
    }
    Ok((mb, reserved))
}

/// Image 2: build the allocator around the preserved blocks and restore each one.
fn second_image(arena: &Arena, kept: &Kept) -> Result<()> {
    let (mb, reserved) = second_image_early(arena, &kept.boot_fdt)?;
    // Descriptor storage as the deferred allocator wants it; any bytes will do.
    let need = DeferredStorage::for_memblock(&mb);
    let mut pages: Vec<Page> = (0..need.descriptors).map(|_| Page::default()).collect();
    let mut chunks = vec![0u64; need.chunk_words];
    let preserved = reserved.preserved();
    let mut fa = step(
        "frames",
        FrameAllocator::new_deferred_set(&mb, &mut pages, &mut chunks, mm::MAX_ORDER, preserved),
    )?;
    let mut incoming = step("attach", reserved.attach(&mut fa))?;

    let folio = step("restore", incoming.restore_folio(&mut fa, kept.folio))?;
    step("restore", incoming.restore_pages(&mut fa, kept.block, 8))?;
    step("restore", incoming.restore_pages(&mut fa, kept.split, 2))?;
    // The page state came back as it was: folio head 1, CONTIG tails 0, SPLIT pages 1 each.
    assert_eq!(step("check", fa.block_kind(folio, 2))?, BlockKind::Folio);
    assert_eq!(
        step("check", fa.page_ref_count(Pfn(kept.block / 4096 + 1)))?,
        0
    );
    assert_eq!(
        step("check", fa.page_ref_count(Pfn(kept.split / 4096 + 1)))?,
        1
    );
    for phys in [kept.folio, kept.block, kept.split] {
        assert_eq!(
            kho::read_u64(arena, phys),
            Some(phys ^ 0xba70),
            "contents at {phys:#x}"
        );
    }
    assert_eq!(incoming.client("example"), Some((kept.block, 8 * 4096)));
    let metadata_pages = step("finish", incoming.finish(&mut fa))?;
    println!(
        "image 2: restored 3 blocks with their contents and page state; {metadata_pages} \
         metadata pages back to the allocator; {}",
        fa.stats()
    );
    Ok(())
}

fn main() -> Result<()> {
    let arena = Arena::new(RAM_BASE, RAM_SIZE);
    let kept = first_image(&arena)?;
    second_image(&arena, &kept)
}
