//! `kho::PhysMem` for the running image: a physical address is its own virtual address (the
//! identity map), for RAM named by the boot memory map only, never the stack guard page.

use board::bootinfo::BootInfo;
use kho::{PhysMem, Region};

/// Most RAM ranges kept (the FDT parser keeps at most as many).
const MAX_RAM: usize = board::bootinfo::MAX_MEMORY;

/// RAM as the identity map shows it.
#[derive(Clone, Debug)]
pub struct IdentityMem {
    ram: [Region; MAX_RAM],
    len: usize,
    guard: Region,
}

impl IdentityMem {
    /// RAM of `info` (whole pages), minus the page at `guard`.
    pub fn new(info: &BootInfo<'_>, guard: u64) -> Self {
        let mut ram = [Region { start: 0, end: 0 }; MAX_RAM];
        let mut len = 0;
        for r in info.memory.iter().take(MAX_RAM) {
            let start = r.base.next_multiple_of(mm::PAGE_SIZE);
            let end = r.end() & !(mm::PAGE_SIZE - 1);
            if start < end {
                ram[len] = Region { start, end };
                len += 1;
            }
        }
        IdentityMem {
            ram,
            len,
            guard: Region {
                start: guard,
                end: guard + mm::PAGE_SIZE,
            },
        }
    }

    /// The RAM ranges.
    pub fn ram(&self) -> &[Region] {
        &self.ram[..self.len]
    }

    /// Total RAM bytes.
    pub fn total(&self) -> u64 {
        self.ram().iter().map(|r| r.end - r.start).sum()
    }

    /// `len` bytes at `phys` as a slice, if they are RAM.
    ///
    /// # Safety
    /// No one may write those bytes while the slice lives.
    pub unsafe fn bytes(&self, phys: u64, len: u64) -> Option<&'static [u8]> {
        let p = self.ptr(phys, usize::try_from(len).ok()?)?;
        // SAFETY: `ptr` checked the range is RAM, identity mapped for the image's life; the
        // caller guarantees no writer.
        Some(unsafe { core::slice::from_raw_parts(p, len as usize) })
    }
}

// SAFETY: every returned pointer is the identity-mapped address of bytes inside one RAM
// range of the boot memory map (mapped normal memory for the image's whole life, or plain
// RAM with the MMU off), never the unmapped stack guard page; alignment is the physical
// address's own. Aliasing is the caller's contract (kho touches only what it owns).
unsafe impl PhysMem for IdentityMem {
    fn ptr(&self, phys: u64, len: usize) -> Option<*mut u8> {
        let end = phys.checked_add(len as u64)?;
        let inside = self.ram().iter().any(|r| r.start <= phys && end <= r.end);
        let hits_guard = phys < self.guard.end && end > self.guard.start;
        (inside && !hits_guard).then_some(phys as usize as *mut u8)
    }
}
