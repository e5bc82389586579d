//! Error types of the `mm` crate.
//!
//! One enum, `MmError`, for every operation; each variant names the check that failed and
//! carries the frame or value that failed it. `BadPage` is the report of a failed
//! free-path check.

use core::fmt;

use crate::addr::{Pfn, PhysAddr};
use crate::page::PageFlags;

/// Which free-path check a bad page failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BadPageReason {
    /// A tail frame (or a frame of a non-compound block other than its first) still holds
    /// references: e.g. a CONTIG block whose tails were given refcount 1.
    TailRefcount,
    /// A frame is still linked to a compound head it should not have (stale head link), or
    /// a folio tail does not point at the folio's head.
    CompoundHead,
    /// A folio tail lacks its TAIL marker.
    MissingTail,
    /// A frame carries flags that must be gone at free time (FREE, HEAD on a tail,
    /// RESERVED, SPLIT on a non-first frame, ...).
    LeftoverFlags,
    /// The `private` word is not zero.
    PrivateSet,
    /// The recorded order of the block does not match the order being freed.
    OrderMismatch,
}

impl fmt::Display for BadPageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadPageReason::TailRefcount => "nonzero refcount on a tail page",
            BadPageReason::CompoundHead => "stale or wrong compound head link",
            BadPageReason::MissingTail => "folio tail without tail marker",
            BadPageReason::LeftoverFlags => "flags left set at free",
            BadPageReason::PrivateSet => "private word not cleared",
            BadPageReason::OrderMismatch => "recorded order differs from freed order",
        })
    }
}

/// The report of a page that failed a free-path check.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BadPage {
    /// The offending frame.
    pub pfn: Pfn,
    /// Its flags when the check ran.
    pub flags: PageFlags,
    /// Its refcount when the check ran.
    pub refcount: u32,
    /// The check it failed.
    pub reason: BadPageReason,
}

impl fmt::Display for BadPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad page pfn {} ({}): flags {} refcount {}",
            self.pfn, self.reason, self.flags, self.refcount
        )
    }
}

/// Errors of the `mm` crate. Field names say what they carry: `pfn` is the frame that
/// failed the check, `order` the order asked for, `max` the limit it broke.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MmError {
    /// No free block of that order (or larger) is left.
    OutOfMemory { order: u32 },
    /// The order is above what this allocator (or operation) supports.
    OrderTooLarge { order: u32, max: u32 },
    /// The frame is not RAM known to the allocator.
    NotRam { pfn: Pfn },
    /// The frame is not aligned to the block order.
    Misaligned { pfn: Pfn, order: u32 },
    /// The frame should be RESERVED and is not.
    NotReserved { pfn: Pfn },
    /// The frame is RESERVED and the operation needs an allocated frame.
    Reserved { pfn: Pfn },
    /// The frame lies inside a preserved block and is not its first frame, or a range cuts
    /// a preserved block: a block is claimed, released or stashed only whole.
    PreservedTail { pfn: Pfn },
    /// The frame holds no reference (a tail of a non-compound block, or a leaked frame).
    NotAllocated { pfn: Pfn },
    /// The frame is already on a buddy free list (double free).
    AlreadyFree { pfn: Pfn },
    /// The frame is a compound tail where a head (or plain page) is needed.
    NotHead { pfn: Pfn },
    /// The frame is the first frame of a non-compound high-order block, where a folio or
    /// an order-0 page is needed.
    NotFolio { pfn: Pfn },
    /// The block's recorded order differs from the one given.
    OrderMismatch { pfn: Pfn, expected: u32, got: u32 },
    /// The block is compound where a non-compound block is needed (e.g. `split_page`).
    Compound { pfn: Pfn },
    /// The refcount would overflow.
    RefcountOverflow { pfn: Pfn },
    /// The descriptor storage is smaller than `FrameAllocator::descriptors_needed`.
    StorageTooSmall { needed: usize, got: usize },
    /// More frames (or RAM sections) than the descriptor indices can address.
    TooManyFrames { frames: u64 },
    /// A memblock table is full.
    MemblockFull,
    /// The frame's descriptor is not initialised yet (deferred init): it is free RAM, or
    /// reserved memory nothing manages; nothing holds it, so it cannot be freed, claimed or
    /// queried.
    Deferred { pfn: Pfn },
    /// Ranges handed to `FrameAllocator::new_deferred` as preserved are not sorted and
    /// disjoint, or are not RAM: the first offending range starts at `pfn`.
    BadPreservedRange { pfn: Pfn },
    /// A range is empty, inverted or beyond the physical address space.
    InvalidRange { start: PhysAddr, end: PhysAddr },
    /// An alignment that is not a power of two.
    InvalidAlign { align: u64 },
    /// Memblock could not find a free range of that size and alignment.
    NoRange { size: u64, align: u64 },
    /// A free-path check failed: the block was leaked and counted.
    BadPage(BadPage),
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MmError::OutOfMemory { order } => write!(f, "out of memory for an order-{order} block"),
            MmError::OrderTooLarge { order, max } => {
                write!(f, "order {order} above the maximum {max}")
            }
            MmError::NotRam { pfn } => write!(f, "pfn {pfn} is not RAM managed by mm"),
            MmError::Misaligned { pfn, order } => {
                write!(f, "pfn {pfn} is not aligned to order {order}")
            }
            MmError::NotReserved { pfn } => write!(f, "pfn {pfn} is not reserved"),
            MmError::Reserved { pfn } => write!(f, "pfn {pfn} is reserved"),
            MmError::PreservedTail { pfn } => write!(
                f,
                "pfn {pfn} is part of a preserved block not taken whole from its first frame"
            ),
            MmError::NotAllocated { pfn } => write!(f, "pfn {pfn} holds no reference"),
            MmError::AlreadyFree { pfn } => write!(f, "pfn {pfn} is already free (double free)"),
            MmError::NotHead { pfn } => write!(f, "pfn {pfn} is a compound tail"),
            MmError::NotFolio { pfn } => {
                write!(f, "pfn {pfn} heads a non-compound block, not a folio")
            }
            MmError::OrderMismatch { pfn, expected, got } => {
                write!(f, "pfn {pfn} has order {expected}, not {got}")
            }
            MmError::Compound { pfn } => write!(f, "pfn {pfn} is part of a compound page"),
            MmError::RefcountOverflow { pfn } => write!(f, "refcount of pfn {pfn} would overflow"),
            MmError::StorageTooSmall { needed, got } => {
                write!(f, "descriptor storage holds {got} pages, {needed} needed")
            }
            MmError::TooManyFrames { frames } => {
                write!(f, "{frames} frames exceed the descriptor index space")
            }
            MmError::MemblockFull => f.write_str("memblock table full"),
            MmError::Deferred { pfn } => write!(
                f,
                "pfn {pfn} has no initialised descriptor yet (deferred init: free or reserved)"
            ),
            MmError::BadPreservedRange { pfn } => write!(
                f,
                "preserved range at pfn {pfn} is not RAM, or not sorted and disjoint from the previous one"
            ),
            MmError::InvalidRange { start, end } => write!(f, "invalid range [{start}, {end})"),
            MmError::InvalidAlign { align } => {
                write!(f, "alignment {align:#x} is not a power of two")
            }
            MmError::NoRange { size, align } => {
                write!(f, "no free range of {size:#x} bytes aligned to {align:#x}")
            }
            MmError::BadPage(bp) => write!(f, "{bp}"),
        }
    }
}
