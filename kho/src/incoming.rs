//! The incoming side: reserve a validated handover, then restore blocks with their page state.
//!
//! Owns the steps after `validate`: reservation in `Memblock` (all or nothing), the `private`
//! stash on each block's first page, `restore_folio`/`restore_pages`, client lookup, release
//! of unclaimed blocks, and returning the metadata pages. Never trusts a page it has not
//! stashed: every restore checks the frame exists, then the magic, before using it.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use mm::{
    BlockKind, FrameAllocator, Memblock, MmError, PageFlags, Pfn, PhysAddr, PhysRange, PAGE_SHIFT,
    PAGE_SIZE,
};

use crate::format::ClientEntry;
use crate::key::BlockType;
use crate::phys::PhysMem;
use crate::validate::{parse_scratch_array, validate, Block, Inputs, RestoreError, Validated};

/// Magic in bits 32..63 of a preserved block's first-page `private` ("KHOB").
pub const PRIVATE_MAGIC: u64 = 0x4b48_4f42;

/// `private` word for a block (docs/abi.md §7).
pub const fn private_word(order: u32, kind: BlockType) -> u64 {
    let t = match kind {
        BlockType::Contig => 0,
        BlockType::Split => 1,
    };
    (PRIVATE_MAGIC << 32) | (t << 8) | order as u64
}

fn decode_private(v: u64) -> Option<(u32, BlockType)> {
    if v >> 32 != PRIVATE_MAGIC || (v >> 9) & 0x7f_ffff != 0 {
        return None;
    }
    let kind = if v & (1 << 8) != 0 {
        BlockType::Split
    } else {
        BlockType::Contig
    };
    let order = (v & 0xff) as u32;
    (order <= mm::MAX_BLOCK_ORDER).then_some((order, kind))
}

/// Why a restore-side call failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IncomingError {
    /// No preserved block starts at this address (or its frame does not exist here).
    NotPreserved { phys: u64 },
    /// The block was restored or released already.
    AlreadyRestored { phys: u64 },
    /// The block is SPLIT: it cannot be restored as a folio.
    SplitNotFolio { phys: u64 },
    /// The range does not consist of whole preserved blocks.
    RangeMismatch { phys: u64, nr: u64 },
    /// `mm` refused.
    Mm(MmError),
}

impl From<MmError> for IncomingError {
    fn from(e: MmError) -> Self {
        IncomingError::Mm(e)
    }
}

impl fmt::Display for IncomingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IncomingError::NotPreserved { phys } => write!(f, "no preserved block at {phys:#x}"),
            IncomingError::AlreadyRestored { phys } => {
                write!(f, "preserved block {phys:#x} already restored or released")
            }
            IncomingError::SplitNotFolio { phys } => {
                write!(
                    f,
                    "preserved block {phys:#x} is SPLIT and cannot be a folio"
                )
            }
            IncomingError::RangeMismatch { phys, nr } => {
                write!(
                    f,
                    "{phys:#x} + {nr} pages is not a run of whole preserved blocks"
                )
            }
            IncomingError::Mm(e) => write!(f, "mm: {e}"),
        }
    }
}

/// Where the handover came from, as named by the boot FDT.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HandoverRefs {
    /// `linux,kho-fdt`.
    pub kho_fdt: PhysRange,
    /// `linux,kho-scratch`.
    pub scratch_array: PhysRange,
}

/// Merges touching regions (sorted input) so memblock gets as few entries as possible.
fn coalesce(mut v: Vec<PhysRange>) -> Vec<PhysRange> {
    v.sort_unstable();
    let mut out: Vec<PhysRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A validated handover whose blocks and metadata are reserved in `Memblock`.
#[derive(Debug)]
pub struct Reserved {
    v: Validated,
    scratch: Vec<PhysRange>,
    /// Page-rounded metadata ranges reserved with `Memblock::reserve`.
    metadata: Vec<PhysRange>,
}

/// Scratch areas named by a handover (read and checked early, before memblock allocates).
pub fn read_scratch<M: PhysMem + ?Sized>(
    mem: &M,
    ram: &[PhysRange],
    refs: &HandoverRefs,
) -> Result<Vec<PhysRange>, RestoreError> {
    parse_scratch_array(mem, ram, refs.scratch_array).inspect_err(note_rejection)
}

fn note_rejection(e: &RestoreError) {
    log::error!("kho: {e}; booting cold");
}

/// Validates the handover and reserves its blocks (`reserve_noinit`) and metadata (`reserve`)
/// in `mb`. `avoid` are ranges nothing may overlap (running image, boot FDT, initrd). On any
/// failure no reservation is left behind and the error is logged: the caller boots cold.
pub fn probe<M: PhysMem + ?Sized>(
    mem: &M,
    mb: &mut Memblock,
    refs: &HandoverRefs,
    ram: &[PhysRange],
    scratch: &[PhysRange],
    avoid: &[PhysRange],
) -> Result<Reserved, RestoreError> {
    let mut avoid_all = avoid.to_vec();
    avoid_all.push(refs.scratch_array.outer_pages());
    let inp = Inputs {
        kho_fdt: refs.kho_fdt,
        ram,
        scratch,
        avoid: &avoid_all,
    };
    let v = validate(mem, &inp).inspect_err(note_rejection)?;
    let mut metadata = v.metadata.clone();
    metadata.push(refs.scratch_array.outer_pages());
    let metadata = coalesce(metadata);
    let blocks = coalesce(v.blocks.iter().map(Block::region).collect());
    let mut done: Vec<PhysRange> = Vec::new();
    let mut fail = None;
    for (r, noinit) in blocks
        .iter()
        .map(|r| (r, true))
        .chain(metadata.iter().map(|r| (r, false)))
    {
        let res = if noinit {
            mb.reserve_noinit(*r)
        } else {
            mb.reserve(*r)
        };
        match res {
            Ok(()) => done.push(*r),
            Err(e) => {
                fail = Some((*r, e));
                break;
            }
        }
    }
    if let Some((r, e)) = fail {
        for d in done {
            let _ = mb.unreserve(d);
        }
        let err = RestoreError::Reserve {
            phys: r.start.0,
            size: r.size(),
            err: e,
        };
        note_rejection(&err);
        return Err(err);
    }
    log::info!(
        "kho: reserved {} preserved blocks ({} runs), {} metadata ranges",
        v.blocks.len(),
        blocks.len(),
        metadata.len()
    );
    Ok(Reserved {
        v,
        scratch: scratch.to_vec(),
        metadata,
    })
}

impl Reserved {
    /// The validated handover.
    pub fn validated(&self) -> &Validated {
        &self.v
    }

    /// Removes every reservation `probe` made (for a caller that decides to boot cold after
    /// all, before the frame allocator exists).
    pub fn cancel(self, mb: &mut Memblock) {
        for b in &self.v.blocks {
            let _ = mb.unreserve(b.region());
        }
        for m in &self.metadata {
            let _ = mb.unreserve(*m);
        }
    }

    /// Once the frame allocator exists: stashes order, type and magic in each block's
    /// first-page `private`, and returns the restore handle.
    pub fn attach(self, fa: &mut FrameAllocator<'_>) -> Result<Incoming, IncomingError> {
        let mut blocks = BTreeMap::new();
        for b in &self.v.blocks {
            let pfn = PhysAddr(b.phys).pfn();
            if !fa.contains(pfn) || !fa.page_flags(pfn)?.contains(PageFlags::RESERVED) {
                return Err(IncomingError::NotPreserved { phys: b.phys });
            }
            fa.set_page_private(pfn, private_word(b.order, b.kind))?;
            blocks.insert(pfn.0, (b.order, b.kind));
        }
        Ok(Incoming {
            blocks,
            metadata: self.metadata,
            clients: self.v.clients,
            scratch: self.scratch,
            restored: 0,
            done: BTreeSet::new(),
        })
    }
}

/// A reserved handover in an image whose frame allocator is up: restore what you need.
#[derive(Debug)]
pub struct Incoming {
    /// Unclaimed blocks by first pfn: (order, type).
    blocks: BTreeMap<u64, (u32, BlockType)>,
    metadata: Vec<PhysRange>,
    clients: Vec<ClientEntry>,
    scratch: Vec<PhysRange>,
    restored: u64,
    /// First pfns of blocks restored or released.
    done: BTreeSet<u64>,
}

impl Incoming {
    /// The scratch areas of this handover (reuse them for the next one).
    pub fn scratch(&self) -> &[PhysRange] {
        &self.scratch
    }

    /// Blocks neither restored nor released yet.
    pub fn unclaimed(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks restored so far.
    pub fn restored(&self) -> u64 {
        self.restored
    }

    /// Unclaimed blocks as `(phys, order, type)`.
    pub fn unclaimed_blocks(&self) -> impl Iterator<Item = Block> + '_ {
        self.blocks.iter().map(|(&p, &(order, kind))| Block {
            phys: p << PAGE_SHIFT,
            order,
            kind,
        })
    }

    /// The client blob called `name`: `(phys, size)`.
    pub fn client(&self, name: &str) -> Option<(u64, u64)> {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.phys, c.size))
    }

    /// Every client entry.
    pub fn clients(&self) -> &[ClientEntry] {
        &self.clients
    }

    /// The stashed (order, type) of the block at `phys`, after checking the frame exists.
    fn stashed(
        &self,
        fa: &FrameAllocator<'_>,
        phys: u64,
    ) -> Result<(u32, BlockType), IncomingError> {
        let pfn = PhysAddr(phys).pfn();
        if !phys.is_multiple_of(PAGE_SIZE) || !fa.contains(pfn) {
            return Err(IncomingError::NotPreserved { phys });
        }
        let known = self.blocks.get(&pfn.0).copied();
        match (decode_private(fa.page_private(pfn)?), known) {
            (Some(s), Some(k)) if s == k => Ok(k),
            (_, Some(_)) => Err(IncomingError::NotPreserved { phys }),
            (_, None) if self.done.contains(&pfn.0) => Err(IncomingError::AlreadyRestored { phys }),
            (_, None) => Err(IncomingError::NotPreserved { phys }),
        }
    }

    /// Restores the CONTIG block at `phys` as a folio (compound, head 1, tails 0).
    pub fn restore_folio(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
    ) -> Result<Pfn, IncomingError> {
        let (order, kind) = self.stashed(fa, phys)?;
        if kind == BlockType::Split {
            return Err(IncomingError::SplitNotFolio { phys });
        }
        let pfn = PhysAddr(phys).pfn();
        fa.claim_reserved(pfn, order, BlockKind::Folio)?;
        self.blocks.remove(&pfn.0);
        self.done.insert(pfn.0);
        self.restored += 1;
        Ok(pfn)
    }

    /// Restores the whole blocks covering `[phys, phys + nr pages)`: CONTIG blocks get head 1
    /// and tails 0, SPLIT blocks 1 on every page. Checks every block before claiming any.
    pub fn restore_pages(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
        nr: u64,
    ) -> Result<(), IncomingError> {
        let bad = IncomingError::RangeMismatch { phys, nr };
        let end = nr
            .checked_mul(PAGE_SIZE)
            .and_then(|s| phys.checked_add(s))
            .filter(|_| nr > 0)
            .ok_or(bad)?;
        let mut plan = Vec::new();
        let mut at = phys;
        while at < end {
            let (order, kind) = self.stashed(fa, at)?;
            let next = at + (PAGE_SIZE << order);
            if next > end {
                return Err(bad);
            }
            plan.push((at, order, kind));
            at = next;
        }
        for (p, order, kind) in plan {
            let k = if kind == BlockType::Split {
                BlockKind::Split
            } else {
                BlockKind::Contig
            };
            let pfn = PhysAddr(p).pfn();
            fa.claim_reserved(pfn, order, k)?;
            self.blocks.remove(&pfn.0);
            self.done.insert(pfn.0);
            self.restored += 1;
        }
        Ok(())
    }

    /// Gives every unclaimed block back to the allocator (in chunks it supports); returns how
    /// many blocks that was.
    pub fn release_unclaimed(&mut self, fa: &mut FrameAllocator<'_>) -> Result<u64, IncomingError> {
        let mut n = 0;
        while let Some((&pfn, &(order, _))) = self.blocks.iter().next() {
            fa.set_page_private(Pfn(pfn), 0)?;
            fa.release_reserved(Pfn(pfn), 1 << order)?;
            self.blocks.remove(&pfn);
            self.done.insert(pfn);
            n += 1;
        }
        Ok(n)
    }

    /// Restore is done: returns the tree pages, the KHO FDT and the scratch array to the
    /// allocator. Unclaimed blocks stay reserved (call `release_unclaimed` first to free them).
    pub fn finish(self, fa: &mut FrameAllocator<'_>) -> Result<u64, IncomingError> {
        let mut pages = 0;
        for m in &self.metadata {
            let n = m.size() >> PAGE_SHIFT;
            fa.release_reserved(m.start.pfn(), n)?;
            pages += n;
        }
        Ok(pages)
    }
}
