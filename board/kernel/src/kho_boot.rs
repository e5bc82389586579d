//! kho at boot, warm or cold: find the previous image's handover in `/chosen`, keep every
//! early allocation inside its scratch, validate what it preserved (the frame allocator is
//! then built around it), or boot cold (kho logs the check that failed) and choose new
//! scratch sized by the next generation's need.
//!
//! Never lets memblock allocate outside scratch before the frame allocator knows every
//! preserved block.

extern crate alloc;

use alloc::vec::Vec;

use board::bootinfo::{BootInfo, LogRange};
use board::placement::free_scratch;
use kho::{HandoverRefs, Reserved};
use log::{error, info, warn};
use mm::{MmError, PhysRange};

use super::memory::MEMBLOCK;
use super::physmem::IdentityMem;

/// A handover named by `/chosen` whose scratch areas passed kho's checks.
pub struct Early {
    refs: HandoverRefs,
    scratch: Vec<PhysRange>,
}

/// Step 1, before the first memblock allocation (the MMU may still be off): reads
/// `/chosen`, checks the scratch array and restricts memblock to scratch. `None`: cold.
pub fn discover(info: &BootInfo<'_>, mem: &IdentityMem) -> Option<Early> {
    let refs = match kho::bootfdt::decode_handover(&info.handover) {
        Ok(Some(refs)) => refs,
        Ok(None) => {
            info!("kho: no handover in /chosen: cold boot");
            return None;
        }
        Err(e) => {
            error!("kho: {e}; booting cold");
            return None;
        }
    };
    info!("kho-fdt: {}", LogRange(refs.kho_fdt));
    info!("kho-scratch: {}", LogRange(refs.scratch_array));
    // kho logs the failed check itself.
    let scratch = kho::read_scratch(mem, mem.ram(), &refs).ok()?;
    if let Err(e) = MEMBLOCK.lock().set_alloc_only_in(&scratch) {
        error!("kho: cannot restrict early allocations to scratch: {e}; booting cold");
        return None;
    }
    info!(
        "kho: handover from the previous image: KHO FDT [{:#x}-{:#x}), {} scratch areas; early allocations only in scratch",
        refs.kho_fdt.start.0,
        refs.kho_fdt.end.0,
        scratch.len()
    );
    Some(Early { refs, scratch })
}

/// What kho set up at boot.
pub struct KhoBoot {
    /// Scratch areas of this generation (the same as the previous one's on a warm boot).
    pub scratch: Vec<PhysRange>,
    /// The previous image's handover, validated; `None` on a cold boot.
    pub reserved: Option<Reserved>,
    /// The parts of scratch nothing used this boot: where the next image goes (final once
    /// [`seal_scratch`] ran).
    pub free_scratch: Vec<PhysRange>,
    /// `(scratch, needed)` when `kho_scratch=` chose less scratch than the next
    /// generation needs: the chain refuses before any work (knowable now, not at the jump).
    pub short: Option<(u64, u64)>,
}

/// Step 2, MMU on, before the frame allocator: validates the handover, or chooses new
/// scratch (reserved at once, so early allocations stay out of it). On a warm boot memblock
/// still allocates only in scratch afterwards: the preserved blocks are in no memblock
/// table (no fixed table holds every handover); the frame allocator is built around them.
/// `avoid`: what nothing preserved may overlap; `next_needs`: `scratch_need::scratch_need`.
pub fn validate_or_choose_scratch(
    mem: &IdentityMem,
    early: Option<Early>,
    avoid: &[PhysRange],
    scratch_asked: Option<u64>,
    next_needs: u64,
) -> Result<KhoBoot, MmError> {
    if let Some(e) = early {
        if let Ok(r) = kho::probe(mem, &e.refs, mem.ram(), &e.scratch, avoid) {
            return Ok(KhoBoot {
                scratch: e.scratch,
                reserved: Some(r),
                free_scratch: Vec::new(),
                short: None,
            });
        }
        // Rejected (kho logged the check): boot cold, allocate anywhere.
        MEMBLOCK.lock().clear_alloc_only_in();
    }
    let mut mb = MEMBLOCK.lock();
    let needs = next_needs.next_multiple_of(kho::SCRATCH_ALIGN);
    let mut short = None;
    let size = if scratch_asked.is_some() {
        // kho_scratch= overrides; a next image that cannot fit is refused before the
        // generation's work (chain::run), with both sizes.
        let asked = kho::scratch_size(scratch_asked, mem.total());
        if asked < needs {
            warn!(
                "kho: kho_scratch= gives {} MiB; the next generation needs {} MiB (images, frame allocator storage, early allocations)",
                asked >> 20,
                needs >> 20
            );
            short = Some((asked, needs));
        }
        asked
    } else {
        kho::scratch_size(None, mem.total()).max(needs)
    };
    let s = alloc::vec![kho::choose_scratch(&mut mb, size)?];
    Ok(KhoBoot {
        scratch: s.clone(),
        reserved: None,
        free_scratch: s,
        short,
    })
}

/// Step 3, after the last early allocation (the frame allocator's storage): on a warm boot
/// what of scratch is still free becomes the room for the next image, and the scratch-only
/// rule is lifted; either way scratch is reserved whole so the frame allocator never hands
/// it out.
pub fn seal_scratch(kb: &mut KhoBoot) -> Result<(), MmError> {
    let mut mb = MEMBLOCK.lock();
    if kb.reserved.is_some() {
        kb.free_scratch = free_scratch(&kb.scratch, &mb);
        mb.clear_alloc_only_in();
    }
    let (scratch, free) = (&kb.scratch, &kb.free_scratch);
    for s in scratch {
        mb.reserve(*s)?;
        info!(
            "kho: scratch [{:#x}-{:#x}) ({} MiB), {} KiB unused by this boot",
            s.start.0,
            s.end.0,
            s.size() >> 20,
            free.iter()
                .filter(|f| f.start >= s.start && f.end <= s.end)
                .map(|f| f.size())
                .sum::<u64>()
                / 1024
        );
    }
    Ok(())
}
