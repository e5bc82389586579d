//! What the next generation takes in scratch, decided once. [`scratch_need`] is the one
//! estimate: it sizes scratch on a cold boot and tells a too-small `kho_scratch=` apart.
//! [`place`] is the one placement of the next image, the image it passes on and the device
//! tree: the chain runs it before the generation's work (a refusal then costs nothing) and
//! the jump copies to exactly those addresses.
//!
//! Reads the initrd's header only; never writes memory.

use arch::entry::ImageLayout;
use board::bootinfo::BootInfo;
use board::placement::{NoRoom, Placer};
use mm::{PhysAddr, PhysRange};

use super::memory;
use super::next_image::Plan;
use super::physmem::IdentityMem;

/// Scratch the next image's early boot needs besides its frame allocator storage and the
/// images: identity-map page tables, the early heap (validating a handover of a million
/// blocks takes tens of MiB; more is found by growing into scratch), the FDT.
const NEXT_IMAGE_EARLY_BYTES: u64 = 16 << 20;

/// Bytes the boot FDT may grow by when the handover rewrites `/chosen` (the KHO FDT and
/// scratch properties, the bootargs with the chain's counters).
const FDT_GROWTH: u64 = 4096;

/// 2 MiB: the boundary an arm64 Image is placed on.
const IMAGE_ALIGN: u64 = 2 << 20;

/// What scratch must hold for the next generation: the next image at a 2 MiB boundary
/// (its own header's image_size: the initrd's if there is one, else this image's), the
/// image it passes on as its initrd, and the next image's early boot (frame allocator
/// storage for this RAM, page tables, early heap, FDT).
pub fn scratch_need(info: &BootInfo<'_>, layout: &ImageLayout, mem: &IdentityMem) -> u64 {
    next_image_room(info, layout, mem) + memory::frame_storage_bytes() + NEXT_IMAGE_EARLY_BYTES
}

/// Room the next image and the image it passes on take in scratch: the next image's
/// `image_size` from a 2 MiB boundary plus its `text_offset` (read from the initrd's
/// header when the initrd is an Image, else this image's own), plus this image's file
/// when it is passed on as the next initrd.
fn next_image_room(info: &BootInfo<'_>, layout: &ImageLayout, mem: &IdentityMem) -> u64 {
    let own = layout.size;
    let initrd = info
        .initrd
        .filter(|r| r.size() >= baton_image::HEADER_SIZE as u64);
    let next = initrd.and_then(|r| {
        // SAFETY: the initrd is reserved RAM the loader wrote and nothing writes.
        let hdr = unsafe { mem.bytes(r.start.0, baton_image::HEADER_SIZE as u64) }?;
        // Unchecked header values (the image checks come later, in the chain): a size no
        // RAM could hold is left to those checks to refuse, not used to size scratch.
        let (size, text) = baton_image::room_needed(hdr)?;
        let room = size
            .checked_add(text)
            .filter(|&n| n <= mem.total())?
            .checked_next_multiple_of(IMAGE_ALIGN)?;
        Some((room, baton_image::has_stamp_tag(hdr)))
    });
    match next {
        // A baton next image gets this one as its initrd (A/B).
        Some((n, true)) => n + IMAGE_ALIGN + layout.file_size,
        // Any other (Linux): its early boot lives in scratch until its reservations are done.
        Some((n, false)) => n + IMAGE_ALIGN + kho::linux_early_bytes(mem.total()),
        None => own.next_multiple_of(IMAGE_ALIGN) + IMAGE_ALIGN,
    }
}

/// Where the handover puts what the next image reads, all in free scratch.
#[derive(Copy, Clone, Debug)]
pub struct Placement {
    /// The next image's first byte (a 2 MiB boundary plus its `text_offset`).
    pub entry: u64,
    /// The image passed on as the next initrd, if any.
    pub initrd: Option<u64>,
    /// Room for the rewritten device tree: the boot FDT's size plus its worst-case growth.
    pub fdt: PhysRange,
}

/// Places the plan's images and a device tree of the boot FDT's size (`boot_fdt_size`) plus
/// its growth in `free_scratch`, first fit, in that order.
pub fn place(
    plan: &Plan,
    free_scratch: &[PhysRange],
    boot_fdt_size: u64,
) -> Result<Placement, NoRoom> {
    let mut placer = Placer::new(free_scratch.to_vec());
    let entry = placer.place_image(&plan.next.header)?;
    let initrd = match plan.pass_on {
        Some(p) => Some(placer.place_blob("initrd", p.len)?),
        None => None,
    };
    let fdt_room = boot_fdt_size + FDT_GROWTH;
    let fdt_at = placer.place_blob("device tree", fdt_room)?;
    Ok(Placement {
        entry,
        initrd,
        fdt: PhysRange::new(PhysAddr(fdt_at), fdt_room),
    })
}
