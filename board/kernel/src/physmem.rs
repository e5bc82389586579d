//! `kho::PhysMem` for the running image: a physical address is its own virtual address (the
//! identity map), for RAM named by the boot memory map only, never the stack guard page.

use board::bootinfo::BootInfo;
use kho::{PageBuf, PhysMem};
use mm::{PhysAddr, PhysRange};

/// Most RAM ranges kept (the FDT parser keeps at most as many).
const MAX_RAM: usize = board::bootinfo::MAX_MEMORY;

/// RAM as the identity map shows it.
#[derive(Clone, Debug)]
pub struct IdentityMem {
    ram: [PhysRange; MAX_RAM],
    len: usize,
    guard: PhysRange,
}

impl IdentityMem {
    /// RAM of `info` (whole pages), minus the page at `guard`.
    pub fn new(info: &BootInfo<'_>, guard: u64) -> Self {
        let mut ram = [PhysRange::from_bounds(0, 0); MAX_RAM];
        let mut len = 0;
        for r in info.memory.iter().take(MAX_RAM) {
            let start = r.start.0.next_multiple_of(mm::PAGE_SIZE);
            let end = r.end.0 & !(mm::PAGE_SIZE - 1);
            if start < end {
                ram[len] = PhysRange::from_bounds(start, end);
                len += 1;
            }
        }
        IdentityMem {
            ram,
            len,
            guard: PhysRange::new(PhysAddr(guard), mm::PAGE_SIZE),
        }
    }

    /// The RAM ranges.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram[..self.len]
    }

    /// Total RAM bytes.
    pub fn total(&self) -> u64 {
        self.ram().iter().map(|r| r.end.0 - r.start.0).sum()
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
        let inside = self
            .ram()
            .iter()
            .any(|r| r.start <= PhysAddr(phys) && end <= r.end.0);
        let hits_guard = phys < self.guard.end.0 && end > self.guard.start.0;
        (inside && !hits_guard).then_some(phys as usize as *mut u8)
    }

    /// The CPU's CRC32 instructions (the metadata checksum of every tree page).
    fn crc32_update(&self, crc: u32, bytes: &[u8]) -> u32 {
        arch::crc::crc32_update(crc, bytes)
    }

    /// The copy and the CRC in one pass (`arch::crc::copy_crc32`): each tree page of the
    /// metadata walks is read once, not copied and then hashed.
    unsafe fn copy_crc32(&self, crc: u32, dst: &mut [u8], src: *const u8) -> u32 {
        // SAFETY: the caller guarantees `src` readable for `dst.len()` bytes, disjoint from
        // `dst`, and unwritten meanwhile; `dst` is exclusively borrowed.
        unsafe { arch::crc::copy_crc32(crc, dst.as_mut_ptr(), src, dst.len()) }
    }

    /// The copy, the CRC and the page's non-zero summary in one pass
    /// (`arch::crc::copy_crc32_summary`): the validation walk reads each tree page once and
    /// does not scan its copy again for the summary.
    unsafe fn copy_crc32_summary(&self, crc: u32, dst: &mut PageBuf, src: *const u8) -> (u32, u64) {
        let words = dst.0.len();
        // SAFETY: the caller guarantees `src` readable for a page, disjoint from `dst`, and
        // unwritten meanwhile; `dst` is exclusively borrowed and holds `words` words.
        unsafe { arch::crc::copy_crc32_summary(crc, dst.0.as_mut_ptr(), src as *const u64, words) }
    }
}
