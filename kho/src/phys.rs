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

    /// Continues the CRC-32 (IEEE, zlib's) `crc` of the bytes before over `bytes`, with
    /// crc32fast's convention (`0` for nothing before). The metadata checksum goes through
    /// here so that an image can pass in the CPU's CRC instructions (kho stays target-free);
    /// an override must give exactly this default's result.
    fn crc32_update(&self, crc: u32, bytes: &[u8]) -> u32 {
        crc32_soft(crc, bytes)
    }

    /// Copies `dst.len()` bytes from `src` into `dst` and continues the CRC-32 `crc` over
    /// them: exactly `crc32_update(crc, dst)` after the copy. The metadata walks read each
    /// tree page this way, so an image can hash while it copies (one pass, not two); an
    /// override must give exactly this default's copy and result.
    ///
    /// # Safety
    /// `src` must be valid for reads of `dst.len()` bytes, must not overlap `dst`, and no
    /// one may write those bytes during the call.
    unsafe fn copy_crc32(&self, crc: u32, dst: &mut [u8], src: *const u8) -> u32 {
        // SAFETY: the caller's contract: `src` readable for `dst.len()` bytes, disjoint.
        unsafe { core::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        self.crc32_update(crc, dst)
    }

    /// [`PhysMem::copy_crc32`] of one page into `dst` that also returns the copy's
    /// `nonzero_groups` summary: the validation walk reads each tree page this way, so an
    /// image can summarise while it copies and hashes. An override must give exactly this
    /// default's copy, CRC and summary.
    ///
    /// # Safety
    /// `src` must be valid for reads of a page, must not overlap `dst`, and no one may
    /// write those bytes during the call.
    unsafe fn copy_crc32_summary(&self, crc: u32, dst: &mut PageBuf, src: *const u8) -> (u32, u64) {
        // SAFETY: the caller's contract, for the page's bytes.
        let crc = unsafe { self.copy_crc32(crc, page_bytes_mut(dst), src) };
        (crc, nonzero_groups(dst))
    }
}

/// [`PhysMem::crc32_update`] in portable code (crc32fast).
pub fn crc32_soft(crc: u32, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(bytes);
    h.finalize()
}

// SAFETY: forwarding to an implementation that upholds the contract itself.
unsafe impl<T: PhysMem + ?Sized> PhysMem for &T {
    fn ptr(&self, phys: u64, len: usize) -> Option<*mut u8> {
        (**self).ptr(phys, len)
    }
    fn crc32_update(&self, crc: u32, bytes: &[u8]) -> u32 {
        (**self).crc32_update(crc, bytes)
    }
    unsafe fn copy_crc32(&self, crc: u32, dst: &mut [u8], src: *const u8) -> u32 {
        // SAFETY: the caller upholds the same contract for the forwarded call.
        unsafe { (**self).copy_crc32(crc, dst, src) }
    }
    unsafe fn copy_crc32_summary(&self, crc: u32, dst: &mut PageBuf, src: *const u8) -> (u32, u64) {
        // SAFETY: the caller upholds the same contract for the forwarded call.
        unsafe { (**self).copy_crc32_summary(crc, dst, src) }
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

/// One page copied out of memory, bytes as stored, held as words (little-endian entries:
/// `u64::from_le`) and 16-aligned: the target builds with strict alignment, where a word read
/// from a byte array of unknown alignment becomes eight byte loads, and the zero-run test
/// reads 16 bytes at a time. Indexes like the `[u64; 512]` it derefs to.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct PageBuf(pub [u64; PAGE_WORDS]);

impl core::ops::Deref for PageBuf {
    type Target = [u64; PAGE_WORDS];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// An all-zero [`PageBuf`].
pub const ZERO_PAGE: PageBuf = PageBuf([0; PAGE_WORDS]);

/// The bytes of `page` as stored in memory.
pub fn page_bytes(page: &PageBuf) -> &[u8] {
    // SAFETY: a `[u64; N]` is `8 * N` initialised bytes; `u8` has no alignment or validity
    // requirement, and the borrow keeps `page` alive and unmodified.
    unsafe { core::slice::from_raw_parts(page.0.as_ptr() as *const u8, 8 * PAGE_WORDS) }
}

/// The bytes of `page` as stored in memory, writable.
fn page_bytes_mut(page: &mut PageBuf) -> &mut [u8] {
    // SAFETY: a `[u64; N]` is `8 * N` initialised bytes, any of which may be written as
    // `u8`; the exclusive borrow of `page` covers the view.
    unsafe { core::slice::from_raw_parts_mut(page.0.as_mut_ptr() as *mut u8, 8 * PAGE_WORDS) }
}

/// Copies the page at `phys` (must be page aligned) into `out`; false if not RAM. The tree
/// walks and the metadata checksum read each node once this way rather than word by word:
/// one bounds check per page, and what a walk checks is exactly what it uses.
pub(crate) fn read_page<M: PhysMem + ?Sized>(mem: &M, phys: u64, out: &mut PageBuf) -> bool {
    if !phys.is_multiple_of(PAGE_SIZE) {
        return false;
    }
    let Some(p) = mem.ptr(phys, PAGE_SIZE as usize) else {
        return false;
    };
    // SAFETY: PhysMem promises a page of valid bytes at p that no reference aliases, aligned
    // like phys (page aligned, checked above), so p is valid for reading PAGE_WORDS u64s;
    // out is a distinct buffer of the same size.
    unsafe { core::ptr::copy_nonoverlapping(p as *const u64, out.0.as_mut_ptr(), PAGE_WORDS) };
    true
}

/// [`read_page`] that also continues the CRC-32 `crc` over the page's bytes and summarises
/// the copy ([`nonzero_groups`]), in one pass through [`PhysMem::copy_crc32_summary`]:
/// `(crc, summary)`, or `None` if the page is not RAM (or not page aligned).
pub(crate) fn read_page_crc32<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    out: &mut PageBuf,
    crc: u32,
) -> Option<(u32, u64)> {
    if !phys.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let p = mem.ptr(phys, PAGE_SIZE as usize)?;
    // SAFETY: PhysMem promises a page of valid bytes at p that no reference aliases; `out`
    // is a distinct buffer of the same size.
    Some(unsafe { mem.copy_crc32_summary(crc, out, p) })
}

/// Continues the CRC-32 `crc` over the page at `phys` (page aligned) where it lies, through
/// [`PhysMem::crc32_update`], without a copy; `None` if it is not RAM. For pages this image
/// owns and nothing writes meanwhile: its own tree's nodes at finalize.
pub(crate) fn crc32_page_in_place<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    crc: u32,
) -> Option<u32> {
    if !phys.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let p = mem.ptr(phys, PAGE_SIZE as usize)?;
    // SAFETY: PhysMem promises a page of valid bytes at p that no Rust reference aliases;
    // the caller's contract is that nothing writes it while the slice lives (this call).
    let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, PAGE_SIZE as usize) };
    Some(mem.crc32_update(crc, bytes))
}

/// Words per group of a page's non-zero summary: one 64-byte cache line.
pub(crate) const GROUP_WORDS: usize = 8;
/// Groups in a page: one bit each in the summary's u64.
const GROUPS: usize = PAGE_WORDS / GROUP_WORDS;
const _: () = assert!(GROUPS == 64, "the summary is one u64");
/// Words per run: eight groups, whose bits make one byte of the summary.
const RUN_WORDS: usize = 8 * GROUP_WORDS;

/// One run of a [`PageBuf`], 16-aligned like the page. Through it the compiler knows the
/// words are 16-aligned and ORs a run with vector loads (two words per load and per OR);
/// through a slice of the page it knows only 8 and, under strict alignment, goes word by
/// word through the stack.
#[repr(C, align(16))]
struct Run([u64; RUN_WORDS]);

/// The summary byte of `run`: bit `k` for its group `k`. Out of line: most runs of a tree
/// page are zero and never get here, and the loop over runs stays small.
#[inline(never)]
fn run_groups(run: &Run) -> u64 {
    run.0
        .chunks_exact(GROUP_WORDS)
        .enumerate()
        .fold(0, |bits, (k, grp)| {
            let any = grp.iter().fold(0, |a, &w| a | w);
            bits | (u64::from(any != 0) << k)
        })
}

/// The page's non-zero summary: bit `g` is set iff words `8g..8g + 8` are not all zero.
/// Computed once per page, right after it is read; every later search for a non-zero
/// entry then skips zero groups with a bit test instead of reading them again. Tables and
/// leaves are mostly zero: a run of eight groups that ORs to zero costs one vector OR of
/// its words and no per-group work.
pub(crate) fn nonzero_groups(page: &PageBuf) -> u64 {
    // SAFETY: PageBuf is 512 u64 at 16-byte alignment, and [Run; 8] has the same size,
    // alignment and (plain-integer) validity; the borrow of `page` covers the view.
    let runs = unsafe { &*(page as *const PageBuf as *const [Run; PAGE_WORDS / RUN_WORDS]) };
    let mut mask = 0;
    for (r, run) in runs.iter().enumerate() {
        if run.0.iter().fold(0, |a, &w| a | w) != 0 {
            mask |= run_groups(run) << (8 * r);
        }
    }
    mask
}

/// The first non-zero little-endian word of `page` at word index `from` or later: its index
/// and value. `groups` is the page's [`nonzero_groups`]: only the groups it marks are read
/// (tables and leaves are mostly zero).
#[inline]
pub(crate) fn next_nonzero_word(page: &PageBuf, groups: u64, from: usize) -> Option<(usize, u64)> {
    let first = from / GROUP_WORDS;
    if first >= GROUPS {
        return None;
    }
    let mut left = groups & (!0u64 << first);
    while left != 0 {
        let g = left.trailing_zeros() as usize;
        let words = &page.0[g * GROUP_WORDS..(g + 1) * GROUP_WORDS];
        let skip = from.saturating_sub(g * GROUP_WORDS);
        for (k, &w) in words.iter().enumerate().skip(skip) {
            if w != 0 {
                return Some((g * GROUP_WORDS + k, u64::from_le(w)));
            }
        }
        left &= left - 1;
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

/// Calls `f` with the `words` little-endian words at `phys` (8-byte aligned) read in place,
/// without a copy; `None` if the range is not RAM or `phys` is not aligned. For reading a
/// block the caller owns (the workload's check of every restored byte): nothing may write
/// the range while `f` runs.
pub fn with_words<M: PhysMem + ?Sized, R>(
    mem: &M,
    phys: u64,
    words: usize,
    f: impl FnOnce(&[u64]) -> R,
) -> Option<R> {
    if !phys.is_multiple_of(8) {
        return None;
    }
    let p = mem.ptr(phys, words.checked_mul(8)?)? as *const u64;
    // SAFETY: PhysMem promises 8 * words valid bytes at p, aligned like phys (8-aligned,
    // checked above), that no Rust reference aliases; the caller owns the range and nothing
    // writes it while the shared slice lives (it does not outlive `f`).
    Some(f(unsafe { core::slice::from_raw_parts(p, words) }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (index, value) `next_nonzero_word` yields walking `page`, by hand.
    fn nonzero_by_hand(page: &PageBuf) -> alloc::vec::Vec<(usize, u64)> {
        (0..PAGE_WORDS)
            .filter(|&i| page.0[i] != 0)
            .map(|i| (i, u64::from_le(page.0[i])))
            .collect()
    }

    /// A `PhysMem` with no RAM: enough for the provided `copy_crc32_summary`.
    struct NoRam;
    // SAFETY: never returns a pointer.
    unsafe impl PhysMem for NoRam {
        fn ptr(&self, _phys: u64, _len: usize) -> Option<*mut u8> {
            None
        }
    }

    #[test]
    fn copy_crc32_summary_is_the_copy_its_crc_and_its_summary() {
        for (n, layout) in [&[][..], &[0], &[511], &[7, 8, 63, 64, 65, 127, 448]]
            .iter()
            .enumerate()
        {
            let mut src = ZERO_PAGE;
            for (k, &i) in layout.iter().enumerate() {
                src.0[i] = 0x0102_0304_0506_0708u64.rotate_left(k as u32 * 8);
            }
            let mut dst = PageBuf([!0; PAGE_WORDS]);
            // SAFETY: `src` is a distinct page of readable bytes, unwritten during the call.
            let (crc, summary) =
                unsafe { NoRam.copy_crc32_summary(7, &mut dst, src.0.as_ptr() as *const u8) };
            assert_eq!(dst.0, src.0, "layout {n}");
            assert_eq!(crc, crc32_soft(7, page_bytes(&src)), "layout {n}");
            let by_hand = layout.iter().fold(0u64, |m, &i| m | 1 << (i / GROUP_WORDS));
            assert_eq!(summary, by_hand, "layout {n}");
            assert_eq!(summary, nonzero_groups(&src), "layout {n}");
        }
    }

    #[test]
    fn next_nonzero_word_yields_every_nonzero_word_in_order() {
        let layouts: [&[usize]; 6] = [
            &[],
            &[0],
            &[511],
            &[7, 8, 63, 64, 65, 127],
            &[1, 9, 17, 200, 201, 202, 448, 505],
            &[3, 70, 135, 300, 310, 320, 330, 510],
        ];
        for (n, layout) in layouts.iter().enumerate() {
            let mut page = ZERO_PAGE;
            for (k, &i) in layout.iter().enumerate() {
                page.0[i] = (k as u64 + 1) << (k * 7 % 64);
            }
            let mut got = alloc::vec::Vec::new();
            let mut from = 0;
            let groups = nonzero_groups(&page);
            while let Some((i, w)) = next_nonzero_word(&page, groups, from) {
                got.push((i, w));
                from = i + 1;
            }
            let by_hand = layout.iter().fold(0u64, |m, &i| m | 1 << (i / GROUP_WORDS));
            assert_eq!(groups, by_hand, "layout {n}");
            assert_eq!(got, nonzero_by_hand(&page), "layout {n}");
            assert_eq!(got.len(), layout.len(), "layout {n}");
        }
    }
}
