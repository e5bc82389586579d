//! Access to physical memory: how kho turns a physical address into a pointer.
//!
//! Owns the `PhysMem` contract and the safe accessors built on it (the only `unsafe` reads
//! and writes of physical memory kho and its clients need). Never assumes an address is
//! RAM: every access asks `PhysMem`.

use mm::PAGE_SIZE;

/// How kho reaches physical memory: identity map on the target, an `Arena` on the host
/// (feature `test-helpers`).
///
/// # Safety
/// An implementation promises that a `Some(p)` returned by `ptr(phys, len)` is valid for reads
/// and writes of `len` bytes for as long as the implementor lives, that `p` has the same
/// alignment modulo 4096 as `phys`, and that no Rust reference aliases those bytes while kho
/// uses them. `None` means "not RAM".
pub unsafe trait PhysMem {
    /// Pointer to `len` bytes at `phys`, or `None` if any of them is not RAM.
    fn ptr(&self, phys: u64, len: usize) -> Option<*mut u8>;
}

// SAFETY: forwarding to an implementation that upholds the contract itself.
unsafe impl<T: PhysMem + ?Sized> PhysMem for &T {
    fn ptr(&self, phys: u64, len: usize) -> Option<*mut u8> {
        (**self).ptr(phys, len)
    }
}

/// Reads the little-endian u64 at `phys` (must be 8-byte aligned), or `None` if not RAM.
pub fn read_u64<M: PhysMem + ?Sized>(mem: &M, phys: u64) -> Option<u64> {
    if !phys.is_multiple_of(8) {
        return None;
    }
    let p = mem.ptr(phys, 8)? as *const u64;
    // SAFETY: PhysMem promises 8 valid bytes at p, aligned like phys (8-aligned, checked above).
    Some(u64::from_le(unsafe { p.read_volatile() }))
}

/// Writes `v` little-endian at `phys` (must be 8-byte aligned); false if not RAM.
pub fn write_u64<M: PhysMem + ?Sized>(mem: &M, phys: u64, v: u64) -> bool {
    if !phys.is_multiple_of(8) {
        return false;
    }
    let Some(p) = mem.ptr(phys, 8) else {
        return false;
    };
    // SAFETY: PhysMem promises 8 valid, unaliased bytes at p, 8-aligned (checked above).
    unsafe { (p as *mut u64).write_volatile(v.to_le()) };
    true
}

/// 64-bit words in one page (one radix-tree table or leaf).
pub(crate) const PAGE_WORDS: usize = (PAGE_SIZE / 8) as usize;

/// One page copied out of memory, bytes as stored.
pub type PageBuf = [u8; PAGE_SIZE as usize];

/// Copies the page at `phys` (must be page aligned) into `out`; false if not RAM. The tree
/// walks and the metadata checksum read each node once this way rather than word by word:
/// one bounds check per page, and what a walk checks is exactly what it uses.
pub(crate) fn read_page<M: PhysMem + ?Sized>(mem: &M, phys: u64, out: &mut PageBuf) -> bool {
    if !phys.is_multiple_of(PAGE_SIZE) {
        return false;
    }
    let Some(p) = mem.ptr(phys, out.len()) else {
        return false;
    };
    // SAFETY: PhysMem promises out.len() valid bytes at p that no reference aliases; out is
    // a distinct buffer of the same length.
    unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
    true
}

/// The first non-zero little-endian word of `page` at word index `from` or later: its index
/// and value. Skips all-zero runs of 64 words with one comparison (tables and leaves are
/// mostly zero).
#[inline]
pub(crate) fn next_nonzero_word(page: &PageBuf, from: usize) -> Option<(usize, u64)> {
    const RUN: usize = 64;
    let mut i = from;
    while i < PAGE_WORDS {
        let at = 8 * i;
        if i.is_multiple_of(RUN) && page[at..at + 8 * RUN] == [0u8; 8 * RUN] {
            i += RUN;
            continue;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&page[at..at + 8]);
        let w = u64::from_le_bytes(w);
        if w != 0 {
            return Some((i, w));
        }
        i += 1;
    }
    None
}

/// Copies `len` bytes at `phys` into a new vector, or `None` if not RAM.
pub fn read_bytes<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    len: usize,
) -> Option<alloc::vec::Vec<u8>> {
    let p = mem.ptr(phys, len)?;
    let mut v = alloc::vec![0u8; len];
    // SAFETY: PhysMem promises len valid bytes at p; v is a distinct heap buffer of len bytes.
    unsafe { core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len) };
    Some(v)
}

/// Copies the `out.len()` bytes at `phys` into `out`; false if not RAM.
pub fn read_into<M: PhysMem + ?Sized>(mem: &M, phys: u64, out: &mut [u8]) -> bool {
    let Some(p) = mem.ptr(phys, out.len()) else {
        return false;
    };
    // SAFETY: PhysMem promises out.len() valid bytes at p that no reference aliases; out is
    // a distinct buffer of the same length.
    unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
    true
}

/// Copies `data` to `phys`; false if not RAM.
pub fn write_bytes<M: PhysMem + ?Sized>(mem: &M, phys: u64, data: &[u8]) -> bool {
    let Some(p) = mem.ptr(phys, data.len()) else {
        return false;
    };
    // SAFETY: PhysMem promises data.len() valid, unaliased bytes at p; data is a Rust slice
    // that cannot alias them.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    true
}
