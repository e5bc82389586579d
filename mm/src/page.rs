//! The per-frame descriptor (`Page`) and its flag set.
//!
//! One `Page` exists for every RAM frame. This module owns the layout (32 bytes, asserted
//! at compile time) and the meaning of each field; it does not decide any state change —
//! the buddy lists (`buddy`) and the refcount API (`refs`) do that.

use core::fmt;
use core::sync::atomic::AtomicU32;

/// "No frame" in a descriptor index field (free-list links, compound head link).
pub(crate) const NONE: u32 = u32::MAX;

/// Flags of one frame descriptor.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct PageFlags(u16);

impl PageFlags {
    /// First frame of a block that sits on a buddy free list (`order` is the block order).
    pub const FREE: PageFlags = PageFlags(1 << 0);
    /// First frame of a compound page (folio); `order` is the folio order.
    pub const HEAD: PageFlags = PageFlags(1 << 1);
    /// Any other frame of a compound page; the descriptor links to its head.
    pub const TAIL: PageFlags = PageFlags(1 << 2);
    /// Not managed by the buddy allocator (image, FDT, firmware, preserved blocks...).
    pub const RESERVED: PageFlags = PageFlags(1 << 3);
    /// An order-0 page that came out of `split_page` (or a restored SPLIT block).
    pub const SPLIT: PageFlags = PageFlags(1 << 4);
    /// Reserved "without init": the descriptor belongs to another crate (kho) until it is
    /// claimed or released. Always set together with `RESERVED`.
    pub const NOINIT: PageFlags = PageFlags(1 << 5);
    /// Leaked after a failed free-path check; never handed out again.
    pub const BAD: PageFlags = PageFlags(1 << 6);
    /// First frame of a preserved block (with RESERVED | NOINIT; `order` is the block's):
    /// every frame of `[pfn, pfn + 2^order)` belongs to it, so a claim checks this frame only.
    pub const PRESERVED: PageFlags = PageFlags(1 << 7);
    /// Any other frame of a preserved block (with RESERVED | NOINIT; `head` links to its
    /// first frame). Claimed, released or stashed only with its whole block.
    pub const PRESERVED_TAIL: PageFlags = PageFlags(1 << 8);

    const NAMES: [(PageFlags, &'static str); 9] = [
        (Self::FREE, "free"),
        (Self::HEAD, "head"),
        (Self::TAIL, "tail"),
        (Self::RESERVED, "reserved"),
        (Self::SPLIT, "split"),
        (Self::NOINIT, "noinit"),
        (Self::BAD, "bad"),
        (Self::PRESERVED, "preserved"),
        (Self::PRESERVED_TAIL, "preserved-tail"),
    ];

    /// No flag.
    pub const fn empty() -> Self {
        PageFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: PageFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether at least one flag of `other` is set in `self`.
    pub const fn intersects(self, other: PageFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `self` with the flags of `other` added.
    pub const fn union(self, other: PageFlags) -> Self {
        PageFlags(self.0 | other.0)
    }

    /// `self` with the flags of `other` removed.
    pub const fn difference(self, other: PageFlags) -> Self {
        PageFlags(self.0 & !other.0)
    }
}

impl core::ops::BitOr for PageFlags {
    type Output = PageFlags;
    fn bitor(self, rhs: PageFlags) -> PageFlags {
        self.union(rhs)
    }
}

impl fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PageFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let known = Self::NAMES.iter().fold(0u16, |acc, (fl, _)| acc | fl.0);
        if self.0 & !known != 0 {
            write!(f, "{}{:#x}", if first { "" } else { "|" }, self.0 & !known)?;
        }
        Ok(())
    }
}

/// The descriptor of one 4 KiB frame.
///
/// Field costs (bytes): `flags` 2, `order` 1, `section` 1, `refcount` 4, `head` 4,
/// `next` 4, `prev` 4, `spare` 4, `private` 8 — 32 in all, i.e. 0.78 % of RAM.
/// Fields are private to `mm`; other crates use the `FrameAllocator` accessors. Aligned to
/// 16 bytes so that a whole descriptor is written with one pair of 16-byte stores.
#[repr(C, align(16))]
pub struct Page {
    /// State bits ([`PageFlags`]).
    pub(crate) flags: u16,
    /// Block order: of a free block (on its first frame), of a folio (on its head), or the
    /// allocation order of a non-compound block (on its first frame). 0 elsewhere.
    pub(crate) order: u8,
    /// Index of the RAM section holding this frame: makes index -> pfn O(1).
    pub(crate) section: u8,
    /// Reference count, Linux style: 1 on an allocated head, 0 on tails and free frames.
    pub(crate) refcount: AtomicU32,
    /// Descriptor index of the compound head (tails only), else [`NONE`].
    pub(crate) head: u32,
    /// Next block on the same free list (descriptor index), else [`NONE`].
    pub(crate) next: u32,
    /// Previous block on the same free list (descriptor index), else [`NONE`].
    pub(crate) prev: u32,
    /// Unused; keeps `private` 8-byte aligned. Always 0.
    pub(crate) spare: u32,
    /// A word for the owner of the frame (kho stashes order/type/magic here). Must be 0
    /// when the frame is freed.
    pub(crate) private: u64,
}

const _: () = assert!(core::mem::size_of::<Page>() == 32, "Page must be 32 bytes");
const _: () = assert!(core::mem::align_of::<Page>() == 16);
const _: () = assert!(
    cfg!(target_endian = "little"),
    "Page::words is little-endian"
);

impl Default for Page {
    /// A blank descriptor: what storage for `FrameAllocator::new_deferred` may start as
    /// (any other content is as good; it is written before it is read).
    fn default() -> Self {
        Page::new(0, PageFlags::empty())
    }
}

impl Page {
    /// Size of one descriptor in bytes.
    pub const SIZE: usize = core::mem::size_of::<Page>();

    pub(crate) const fn new(section: u8, flags: PageFlags) -> Self {
        Page {
            flags: flags.0,
            order: 0,
            section,
            refcount: AtomicU32::new(0),
            head: NONE,
            next: NONE,
            prev: NONE,
            spare: 0,
            private: 0,
        }
    }

    /// A whole descriptor in one value: `flags`, `order` and `section` as the first word's
    /// low 32 bits, `refcount` above them, then `head | next << 32`, `prev | spare << 32`
    /// and `private` (the `repr(C)` layout, little-endian). What the bulk writers store.
    #[inline(always)]
    pub(crate) const fn words(
        flags: u16,
        order: u8,
        section: u8,
        count: u32,
        head: u32,
        private: u64,
    ) -> [u64; 4] {
        let w0 =
            flags as u64 | (order as u64) << 16 | (section as u64) << 24 | (count as u64) << 32;
        [w0, head as u64 | (NONE as u64) << 32, NONE as u64, private]
    }

    /// The words of `Page::new(section, flags)`.
    #[inline(always)]
    pub(crate) const fn blank(section: u8, flags: PageFlags) -> [u64; 4] {
        Self::words(flags.0, 0, section, 0, NONE, 0)
    }

    /// Writes `words` (from [`Page::words`]) over every descriptor of `pages`: two 16-byte
    /// stores a descriptor, no read.
    #[inline(always)]
    pub(crate) fn fill(pages: &mut [Page], words: [u64; 4]) {
        for p in pages {
            Self::store(p, words);
        }
    }

    /// Writes `words` (from [`Page::words`]) over `p` as one 32-byte store.
    #[inline(always)]
    pub(crate) fn store(p: &mut Page, words: [u64; 4]) {
        let dst: *mut [u64; 4] = (p as *mut Page).cast();
        // SAFETY: `Page` is `repr(C)`, 32 bytes and 16-aligned (asserted above) and made of
        // integers only (the atomic is a `u32` in memory), so every `[u64; 4]` is a valid
        // `Page`; `p` is a unique reference, so nothing else observes the write.
        unsafe { dst.write(words) };
    }

    /// The first of [`Page::words`] as `p` holds it (`flags`, `order`, `section`,
    /// `refcount`): one load that tests all four.
    #[inline(always)]
    pub(crate) fn first_word(p: &Page) -> u64 {
        let src: *const u64 = (p as *const Page).cast();
        // SAFETY: `Page` is `repr(C)` and 16-aligned with `flags`, `order`, `section` and
        // `refcount` its first 8 bytes (integers; the atomic is a `u32` in memory); `p` is
        // a shared reference, so the bytes are initialised and not being written.
        unsafe { src.read() }
    }

    #[inline]
    pub(crate) fn flags(&self) -> PageFlags {
        PageFlags(self.flags)
    }

    #[inline]
    pub(crate) fn has(&self, f: PageFlags) -> bool {
        self.flags & f.0 != 0
    }

    #[inline]
    pub(crate) fn set(&mut self, f: PageFlags) {
        self.flags |= f.0;
    }

    #[inline]
    pub(crate) fn clear(&mut self, f: PageFlags) {
        self.flags &= !f.0;
    }

    #[inline]
    pub(crate) fn count(&self) -> u32 {
        // Relaxed: the allocator is used under `&mut` (one owner at a time); the atomic
        // type only keeps the layout ready for lock-free get/put later.
        self.refcount.load(core::sync::atomic::Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn set_count(&mut self, v: u32) {
        *self.refcount.get_mut() = v;
    }
}
