//! The end of a generation: choose and check the next image, place it, its device tree and
//! its initrd in the parts of scratch this image never used, clean everything the next
//! image reads with its MMU off to the point of coherency, drain the console and jump.
//!
//! Never jumps into bytes it has not just re-checked; returns the reason instead.

extern crate alloc;

use core::fmt;

use arch::entry::ImageLayout;
use arch::ExceptionLevel;
use baton_image::{self as image, ImageError, ImageHeader};
use board::bootinfo::BootInfo;
use board::placement::NoRoom;
use kho::bootfdt::{BootFdtError, ChosenUpdate, RewritePlan};
use kho::{Handover, Kho, PhysMem};
use log::{info, warn};
use mm::{PhysAddr, PhysRange, PAGE_SIZE};

use super::physmem::IdentityMem;
use super::scratch_need::Placement;

/// Where the bytes of a candidate next image came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The pristine copy of this image the entry code made.
    OwnCopy,
    /// The initrd (`linux,initrd-start/end`).
    Initrd,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::OwnCopy => "own pristine copy",
            Source::Initrd => "initrd",
        })
    }
}

/// A checked Image in memory: `len` bytes, the first `split` of them at `at` and the rest at
/// `rest_at` (one piece when `split == len`; two for the own pristine copy: the running
/// text, which nothing writes, then the copy of what relocation changes).
#[derive(Copy, Clone, Debug)]
pub struct ImageBytes {
    pub source: Source,
    pub at: u64,
    pub len: u64,
    pub header: ImageHeader,
    pub split: u64,
    pub rest_at: u64,
}

/// Where the bytes of an Image come from: one piece, or the file's first `split` bytes at
/// `at` and the rest at `rest_at`.
#[derive(Copy, Clone, Debug)]
struct Pieces {
    at: u64,
    len: u64,
    split: u64,
    rest_at: u64,
}

impl Pieces {
    fn one(at: u64, len: u64) -> Self {
        Pieces {
            at,
            len,
            split: len,
            rest_at: at,
        }
    }

    /// This image's file: the running bytes before `copy_from`, then the pristine copy.
    fn own(layout: &ImageLayout) -> Self {
        let len = layout.file_size;
        Pieces {
            at: layout.base,
            len,
            split: layout.copy_from.min(len),
            rest_at: layout.copy,
        }
    }
}

/// Why there is no next image to enter.
#[derive(Clone, Debug)]
pub enum NextImageError {
    /// The bytes are not all RAM.
    NotRam { source: Source, at: u64, len: u64 },
    /// The bytes are not a valid (or not an unchanged) arm64 Image.
    Invalid {
        source: Source,
        at: u64,
        len: u64,
        err: ImageError,
    },
    /// No room in scratch.
    Place(NoRoom),
    /// The outgoing device tree could not be written.
    Fdt(BootFdtError),
    /// The boot device tree is gone (a board default without an FDT cannot hand over).
    NoFdt,
    /// The image's header is not the one its placement was made for.
    Changed { source: Source, at: u64 },
}

impl fmt::Display for NextImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRam { source, at, len } => write!(
                f,
                "next image refused: {source} at {at:#x} ({len} bytes) is not RAM"
            ),
            Self::Invalid {
                source,
                at,
                len,
                err,
            } => write!(
                f,
                "next image refused: {source} at {at:#x} ({len} bytes): {err}"
            ),
            Self::Place(e) => write!(f, "{e}"),
            Self::Fdt(e) => write!(f, "outgoing device tree: {e}"),
            Self::NoFdt => write!(f, "no boot device tree to pass on (board defaults)"),
            Self::Changed { source, at } => write!(
                f,
                "next image refused: {source} at {at:#x} changed its header since it was placed"
            ),
        }
    }
}

/// Checks `len` bytes at `at` as an Image; `need_stamp` requires baton's build stamp.
fn check(
    mem: &IdentityMem,
    source: Source,
    at: u64,
    len: u64,
    need_stamp: bool,
) -> Result<ImageBytes, NextImageError> {
    check_with(
        mem,
        source,
        Pieces::one(at, len),
        need_stamp,
        image::StampCrc::Compute(arch::crc::crc32_update),
    )
}

/// [`check`] of the Image in `p` with the stamp's CRC from `crc` (`Deferred`: only the
/// header now, which lies in the first piece; `Compute` needs one piece).
fn check_with(
    mem: &IdentityMem,
    source: Source,
    p: Pieces,
    need_stamp: bool,
    crc: image::StampCrc,
) -> Result<ImageBytes, NextImageError> {
    let (at, len) = (p.at, p.len);
    let not_ram = NextImageError::NotRam { source, at, len };
    mem.ptr(p.rest_at, (len - p.split) as usize)
        .ok_or(not_ram.clone())?;
    // The parse reads the header and, with `Compute`, every byte: the first piece is the
    // whole of `len` bytes at `at` for a one-piece image; for the own copy (`Deferred`)
    // only its header is read, which lies before `split`.
    // SAFETY: the bytes are this image's own (its text, which nothing writes), or the
    // initrd, reserved at boot and never written after the entry code.
    let bytes = unsafe { mem.bytes(at, len) }.ok_or(not_ram)?;
    let invalid = |err| NextImageError::Invalid {
        source,
        at,
        len,
        err,
    };
    let header = image::parse_checked(bytes, crc).map_err(invalid)?;
    if need_stamp && header.stamp.is_none() {
        return Err(invalid(ImageError::NotStamped));
    }
    Ok(ImageBytes {
        source,
        at,
        len,
        header,
        split: p.split,
        rest_at: p.rest_at,
    })
}

/// What the chain enters next, and what it passes on as the next image's initrd.
#[derive(Copy, Clone, Debug)]
pub struct Plan {
    pub next: ImageBytes,
    /// This image's own copy, passed on so that the next image can come back to it (A/B).
    pub pass_on: Option<ImageBytes>,
}

/// Chooses and checks the next image: the initrd if there is one (handing on our own copy
/// as the next initrd), else our own pristine copy. Both must pass the header checks, the
/// initrd its stamp if it has one, now (a bad initrd is refused before the generation's
/// work). Our copy must carry the build stamp; that it matches (proof that the copy is
/// unchanged) is checked once, where it counts: over the copy in scratch at the jump
/// (`copy_checked`), not also here, inside the next boot's blackout.
pub fn plan(
    info: &BootInfo<'_>,
    layout: &ImageLayout,
    mem: &IdentityMem,
) -> Result<Plan, NextImageError> {
    let own = check_with(
        mem,
        Source::OwnCopy,
        Pieces::own(layout),
        true,
        image::StampCrc::Deferred,
    )?;
    match info.initrd.filter(|r| r.size() > 0) {
        Some(r) => {
            let next = check(mem, Source::Initrd, r.start.0, r.size(), false)?;
            // Only a baton next image takes this one as its initrd (to come back to it); a
            // Linux kernel would try to unpack it as an initramfs.
            let pass_on = next.header.stamp.is_some().then_some(own);
            Ok(Plan { next, pass_on })
        }
        None => Ok(Plan {
            next: own,
            pass_on: None,
        }),
    }
}

/// Copies the checked image `img` to `to` (cleaned to PoC), then checks the copy as `plan`
/// checked the original: the same header, and the stamp if the original had one. The stamp's
/// CRC is computed over the bytes as they are copied (one read of the image, both pieces),
/// from the destination's header.
fn copy_checked(
    mem: &IdentityMem,
    img: &ImageBytes,
    to: u64,
) -> Result<ImageBytes, NextImageError> {
    let n = img.len as usize;
    let not_ram = NextImageError::NotRam {
        source: img.source,
        at: to,
        len: img.len,
    };
    // `plan` parsed the image, so it holds at least its header, and the header lies in the
    // first piece; a split inside it would copy the wrong bytes, which the stamp refuses.
    let head = image::CRC_PLAIN_FROM.min(n);
    let split = (img.split as usize).clamp(head, n);
    let (Some(src), Some(rest), Some(dst)) = (
        mem.ptr(img.at, split),
        mem.ptr(img.rest_at, n - split),
        mem.ptr(to, n),
    ) else {
        return Err(not_ram);
    };
    // SAFETY: all three ranges are RAM (checked); `to` lies in free scratch, which nothing
    // in this image uses, so the destination is disjoint from both sources and nothing
    // aliases it until the jump.
    let crc = unsafe {
        core::ptr::copy_nonoverlapping(src, dst, head);
        let c = image::crc_head(
            core::slice::from_raw_parts(dst, head),
            arch::crc::crc32_update,
        );
        let c = arch::crc::copy_crc32(c, dst.add(head), src.add(head), split - head);
        arch::crc::copy_crc32(c, dst.add(split), rest, n - split)
    };
    clean(to, img.len);
    // SAFETY: the copy in scratch, which nothing writes between here and the jump.
    let bytes = unsafe { mem.bytes(to, img.len) }.ok_or(not_ram)?;
    let invalid = |err| NextImageError::Invalid {
        source: img.source,
        at: to,
        len: img.len,
        err,
    };
    let header = image::parse_checked(bytes, image::StampCrc::Known(crc)).map_err(invalid)?;
    if img.header.stamp.is_some() && header.stamp.is_none() {
        return Err(invalid(ImageError::NotStamped));
    }
    if header != img.header {
        return Err(NextImageError::Changed {
            source: img.source,
            at: to,
        });
    }
    let copied = Pieces::one(to, img.len);
    Ok(ImageBytes {
        source: img.source,
        at: to,
        len: img.len,
        header,
        split: copied.split,
        rest_at: copied.rest_at,
    })
}

fn clean(at: u64, len: u64) {
    if len > 0 {
        // SAFETY: callers pass RAM this image owns, identity mapped.
        unsafe { arch::cache::clean_to_poc(at, len) };
    }
}

/// Everything the jump needs beyond the plan.
pub struct Outgoing<'a> {
    pub info: &'a BootInfo<'a>,
    pub el: ExceptionLevel,
    pub handover: Handover,
    /// The next image's command line (any bytes).
    pub bootargs: &'a [u8],
    /// Client blobs (address, size) to clean.
    pub blobs: &'a [(u64, u64)],
    /// Where the images and the device tree go (`scratch_need::place`, checked before the
    /// generation's work).
    pub placement: Placement,
    /// What the check of the boot FDT proved before the generation's work, for its rewrite.
    pub fdt_plan: &'a RewritePlan,
    /// The workload's last word, right before the trampoline: it stamps the moment and
    /// returns the bytes it wrote (first byte, length), cleaned here.
    pub before_jump: &'a dyn Fn(u64) -> (u64, u64),
}

/// Places, cleans and enters the next image. Returns only on failure, before anything
/// irreversible (the jump) happened.
pub fn jump<M: PhysMem>(
    mem: &IdentityMem,
    kho: &Kho<M>,
    plan: &Plan,
    out: &Outgoing<'_>,
) -> NextImageError {
    match prepare(mem, kho, plan, out) {
        Err(e) => e,
        Ok((entry, fdt)) => {
            drivers::console::flush();
            // The last moment the old image sees: where the trampoline phase starts.
            let (at, len) = (out.before_jump)(arch::timer::ticks());
            clean(at, len);
            // SAFETY: `prepare` placed a checked Image at `entry` (2 MiB boundary + its
            // text_offset, image_size bytes free in scratch) and the FDT at `fdt`, and
            // cleaned both and every byte of handover data to PoC. Single core, interrupts
            // masked by the trampoline, no device programmed to interrupt or DMA (the timer
            // is never armed; the console is drained above).
            unsafe { arch::handover::jump_to_image(entry, fdt, out.el) }
        }
    }
}

/// Writes the images (checking the copies) and the device tree where the placement says, and
/// cleans everything the next image reads with its MMU off. Returns (entry, FDT address).
fn prepare<M: PhysMem>(
    mem: &IdentityMem,
    kho: &Kho<M>,
    plan: &Plan,
    out: &Outgoing<'_>,
) -> Result<(u64, u64), NextImageError> {
    let place = &out.placement;
    let initrd = plan.pass_on.zip(place.initrd);
    let fdt_len = write_fdt(mem, out, initrd)?;
    // Copy, then check the copies: what is entered is exactly what was checked (the same
    // header as at the start of the generation, the stamp over every byte), in one read of
    // the image instead of a check of the source and a second pass to copy it.
    let next = copy_checked(mem, &plan.next, place.entry)?;
    if let Some((p, at)) = initrd {
        copy_checked(mem, &p, at)?;
    }
    let pages = clean_handover(kho, out);
    log_handover(
        &next,
        place,
        fdt_len,
        initrd,
        pages,
        kho.block_count(),
        out.el,
    );
    Ok((place.entry, place.fdt.start.0))
}

/// Rewrites the boot FDT's `/chosen` for the next image (handover, initrd, bootargs) into
/// the placed room, cleaned to PoC. Returns its length.
fn write_fdt(
    mem: &IdentityMem,
    out: &Outgoing<'_>,
    initrd: Option<(ImageBytes, u64)>,
) -> Result<u64, NextImageError> {
    let boot_fdt = out.info.fdt.ok_or(NextImageError::NoFdt)?;
    // SAFETY: the boot FDT is reserved and never written.
    let fdt_in =
        unsafe { mem.bytes(boot_fdt.start.0, boot_fdt.size()) }.ok_or(NextImageError::NoFdt)?;
    let fdt_out = kho::bootfdt::rewrite_planned(
        fdt_in,
        out.fdt_plan,
        &ChosenUpdate {
            kho_fdt: Some(out.handover.kho_fdt),
            kho_scratch: Some(out.handover.scratch_array),
            initrd: initrd.map(|(p, at)| PhysRange::new(PhysAddr(at), p.len)),
            bootargs: Some(out.bootargs),
        },
        arch::crc::crc32_update,
    )
    .map_err(NextImageError::Fdt)?;
    let (room, fdt_len) = (out.placement.fdt, fdt_out.len() as u64);
    if fdt_len > room.size() {
        return Err(NextImageError::Place(NoRoom {
            what: "device tree",
            size: fdt_len,
            largest: room.size(),
        }));
    }
    let dst = mem
        .ptr(room.start.0, fdt_out.len())
        .ok_or(NextImageError::NotRam {
            source: Source::OwnCopy,
            at: room.start.0,
            len: fdt_len,
        })?;
    // SAFETY: the room is free scratch (RAM, checked), disjoint from the heap vector.
    unsafe { core::ptr::copy_nonoverlapping(fdt_out.as_ptr(), dst, fdt_out.len()) };
    clean(room.start.0, fdt_len);
    Ok(fdt_len)
}

/// Cleans everything else the next image reads before its caches are on: the handover
/// data (KHO FDT, scratch array, tree pages) and the client blobs. Returns the tree pages.
fn clean_handover<M: PhysMem>(kho: &Kho<M>, out: &Outgoing<'_>) -> u64 {
    let h = out.handover;
    clean(h.kho_fdt.start.0, h.kho_fdt.size());
    clean(h.scratch_array.start.0, h.scratch_array.size());
    let mut pages = 0u64;
    for p in kho.metadata_pages() {
        clean(p, PAGE_SIZE);
        pages += 1;
    }
    for &(at, len) in out.blobs {
        clean(at, len);
    }
    // Preserved blocks are not cleaned by address (that would cost O(preserved bytes)):
    // the next image reads them only with its MMU and caches on, and the trampoline's
    // set/way clean+invalidate to LoC writes back every dirty line before the jump
    // (docs/hardware.md, "Handover, data").
    pages
}

fn log_handover(
    next: &ImageBytes,
    place: &Placement,
    fdt_len: u64,
    initrd: Option<(ImageBytes, u64)>,
    pages: u64,
    data: u64,
    el: ExceptionLevel,
) {
    let (entry, fdt_at) = (place.entry, place.fdt.start.0);
    info!(
        "handover: next image ({}) at {entry:#x} ({} bytes, image_size {:#x}), fdt at {fdt_at:#x} ({fdt_len} bytes){}; cleaned {pages} tree pages to PoC ({} preserved blocks left to the set/way clean); entering at {}",
        next.source,
        next.len,
        next.header.image_size,
        match initrd {
            Some((p, at)) => alloc::format!(", initrd ({}) at {at:#x} ({} bytes)", p.source, p.len),
            None => alloc::string::String::new(),
        },
        data,
        el.handover_target()
    );
    if !next.header.anywhere() {
        warn!("handover: the next image asks to sit near the base of DRAM; placing it in scratch anyway");
    }
}
