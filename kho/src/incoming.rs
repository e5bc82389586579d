//! The incoming side: reserve a validated handover, then restore blocks with their page state.
//!
//! Owns the steps after `validate`: the sorted list of preserved ranges the frame allocator
//! is built around (no table holds them, so no block count is too large), the `private`
//! stash on each block's first page, `restore_folio`/`restore_pages`, client lookup, release
//! of unclaimed blocks, and returning the metadata pages. Never trusts a page it has not
//! stashed: every restore checks the frame, its RESERVED state, the magic and the block
//! index before using it. Every per-block step is O(1): no map, no search on the way.

use alloc::vec::Vec;
use core::fmt;

use mm::{
    BlockKind, FrameAllocator, MmError, PageFlags, Pfn, PhysRange, PreservedBlock, PreservedSet,
    PAGE_SHIFT, PAGE_SIZE,
};

use crate::format::{AbiVersion, ClientEntry};
use crate::key::BlockType;
use crate::phys::PhysMem;
use crate::validate::{
    parse_scratch_array, peek_format, validate_versioned, Block, Inputs, RestoreError, Validated,
};

/// Magic in bits 48..63 of a preserved block's first-page `private` ("KH").
pub const PRIVATE_MAGIC: u64 = 0x4b48;
/// Bits of the block index in the `private` word (bits 9..47).
const INDEX_BITS: u32 = 39;

/// `private` word for block number `index` of the validated list (docs/abi.md §7).
pub const fn private_word(index: u64, order: u32, kind: BlockType) -> u64 {
    let t = match kind {
        BlockType::Contig => 0,
        BlockType::Split => 1,
    };
    (PRIVATE_MAGIC << 48) | (index << 9) | (t << 8) | order as u64
}

/// `(index, order, type)` of a stash, or `None` if `v` is not one.
fn decode_private(v: u64) -> Option<(usize, u32, BlockType)> {
    if v >> 48 != PRIVATE_MAGIC {
        return None;
    }
    let kind = if v & (1 << 8) != 0 {
        BlockType::Split
    } else {
        BlockType::Contig
    };
    let order = (v & 0xff) as u32;
    let index = ((v >> 9) & ((1 << INDEX_BITS) - 1)) as usize;
    (order <= mm::MAX_BLOCK_ORDER).then_some((index, order, kind))
}

/// The refcount pattern `mm` gives a restored block of type `kind`.
#[inline(always)]
fn block_kind(kind: BlockType) -> BlockKind {
    match kind {
        BlockType::Split => BlockKind::Split,
        BlockType::Contig => BlockKind::Contig,
    }
}

/// `mm`'s batch claim of `run`, each block with its own order and type: out of line, so
/// that its loop keeps its registers whatever else restore does.
#[inline(never)]
fn claim_run(fa: &mut FrameAllocator<'_>, run: &[Block]) -> Result<u64, (usize, MmError)> {
    fa.claim_reserved_batch(
        run.iter()
            .map(|b| (Pfn(b.phys >> PAGE_SHIFT), b.order, block_kind(b.kind))),
    )
}

/// The first index in `[from, n)` whose bit in `bits` is `set` (bit `i % 64` of word
/// `i / 64`), or `n` if none is.
fn next_bit(bits: &[u64], from: usize, n: usize, set: bool) -> usize {
    let flip = if set { 0 } else { u64::MAX };
    let mut w = from / 64;
    let Some(&first) = bits.get(w) else {
        return n;
    };
    let mut word = (first ^ flip) & (u64::MAX << (from % 64));
    loop {
        if word != 0 {
            return n.min(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        match bits.get(w) {
            Some(&b) => word = b ^ flip,
            None => return n,
        }
    }
}

/// Sets bits `[lo, hi)` of `bits` (as [`next_bit`] numbers them).
fn set_bits(bits: &mut [u64], lo: usize, hi: usize) {
    let mut i = lo;
    while i < hi {
        let (w, b) = (i / 64, i % 64);
        let len = (hi - i).min(64 - b);
        bits[w] |= (u64::MAX >> (64 - len)) << b;
        i += len;
    }
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

/// Merges touching regions into as few ranges as possible (sorted output).
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

/// A validated handover, ready for the frame allocator to be built around it
/// ([`Reserved::preserved`]).
#[derive(Debug)]
pub struct Reserved {
    v: Validated,
    format: AbiVersion,
    kho_fdt: PhysRange,
    scratch: Vec<PhysRange>,
    /// Page-rounded metadata ranges (tree nodes, KHO FDT, scratch array), sorted, merged.
    metadata: Vec<PhysRange>,
    /// Pages of every block.
    block_pages: u64,
}

/// A validated block as `FrameAllocator::new_deferred_set` reads it: block `index` of the
/// validated list keeps its stash (index, order, type and magic, docs/abi.md §7).
impl PreservedBlock for Block {
    #[inline(always)]
    fn phys(&self) -> u64 {
        self.phys
    }

    #[inline(always)]
    fn order(&self) -> u32 {
        self.order
    }

    #[inline(always)]
    fn private(&self, index: u64) -> u64 {
        private_word(index, self.order, self.kind)
    }
}

/// Scratch areas named by a handover (read and checked early, before memblock allocates).
/// The KHO FDT is read first: its format decides the scratch array's rules (Linux skips
/// empty areas and keeps the array in scratch).
pub fn read_scratch<M: PhysMem + ?Sized>(
    mem: &M,
    ram: &[PhysRange],
    refs: &HandoverRefs,
) -> Result<Vec<PhysRange>, RestoreError> {
    peek_format(mem, ram, refs.kho_fdt)
        .and_then(|format| parse_scratch_array(mem, ram, refs.scratch_array, format))
        .inspect_err(note_rejection)
}

fn note_rejection(e: &RestoreError) {
    log::error!("kho: {e}; booting cold");
}

/// Validates the handover. `avoid` are ranges nothing may overlap (running image, boot FDT,
/// initrd). On failure the rejection counter goes up and the error is logged: the caller
/// boots cold. On success nothing is reserved yet: build the frame allocator with
/// [`Reserved::preserved`] (memblock must keep allocating only in scratch until then).
pub fn probe<M: PhysMem + ?Sized>(
    mem: &M,
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
    let (v, format) = validate_versioned(mem, &inp).inspect_err(note_rejection)?;
    let mut metadata = v.metadata.clone();
    // An array inside scratch (Linux puts it there) is covered by scratch's own reservation.
    let array = refs.scratch_array.outer_pages();
    if !scratch.iter().any(|s| s.overlaps(&array)) {
        metadata.push(array);
    }
    let metadata = coalesce(metadata);
    // Counted by validation: no pass over the blocks here.
    let (split, block_pages) = (v.totals.split, v.totals.pages);
    log::info!(
        "kho: validated {} preserved blocks ({split} SPLIT), {} metadata ranges, format {format}{}",
        v.blocks.len(),
        metadata.len(),
        match format {
            AbiVersion::V1 => " (v1, the previous release's two trees)",
            AbiVersion::V2 => "",
            AbiVersion::LinuxV4 => " (Linux: untyped keys, no checksum)",
        }
    );
    Ok(Reserved {
        v,
        format,
        kho_fdt: refs.kho_fdt,
        scratch: scratch.to_vec(),
        metadata,
        block_pages,
    })
}

impl Reserved {
    /// The validated handover.
    pub fn validated(&self) -> &Validated {
        &self.v
    }

    /// The format the previous image wrote it in.
    pub fn format(&self) -> AbiVersion {
        self.format
    }

    /// Bytes of every block and metadata range ([`Reserved::preserved`] summed), with no
    /// pass over the blocks.
    pub fn preserved_bytes(&self) -> u64 {
        let metadata: u64 = self.metadata.iter().map(|m| m.size()).sum();
        (self.block_pages << PAGE_SHIFT) + metadata
    }

    /// Every block (with its stash) and metadata range, sorted: the frame allocator keeps
    /// them RESERVED (`FrameAllocator::new_deferred_set`, which writes every block's
    /// descriptors, stash included, in its one pass; `new_deferred` takes its merge).
    pub fn preserved(&self) -> PreservedSet<'_, Block> {
        PreservedSet::new(&self.v.blocks, &self.metadata)
    }

    /// Once the frame allocator is built around [`Reserved::preserved`] (which stashed
    /// index, order, type and magic on each block's first page): returns the restore
    /// handle. O(1): the first and the last block's stashes are checked, so an allocator
    /// built from other ranges is refused (`NotPreserved`); every restore still checks its
    /// own block's frame, RESERVED state, stash and index before using it.
    pub fn attach(self, fa: &mut FrameAllocator<'_>) -> Result<Incoming, IncomingError> {
        let n = self.v.blocks.len();
        for i in [0, n.saturating_sub(1)].into_iter().take(n) {
            let b = self.v.blocks[i];
            let pfn = Pfn(b.phys >> PAGE_SHIFT);
            let want = private_word(i as u64, b.order, b.kind);
            let reserved = fa
                .page_flags(pfn)
                .is_ok_and(|f| f.contains(PageFlags::RESERVED | PageFlags::PRESERVED));
            if !reserved || fa.page_private(pfn).ok() != Some(want) {
                return Err(IncomingError::NotPreserved { phys: b.phys });
            }
        }
        Ok(Incoming {
            format: self.format,
            kho_fdt: self.kho_fdt,
            blocks: self.v.blocks,
            claimed: alloc::vec![0; n.div_ceil(64)],
            metadata: self.metadata,
            clients: self.v.clients,
            scratch: self.scratch,
            restored: 0,
            released: 0,
            unclaimed_pages: self.block_pages,
            unclaimed_split: Some(self.v.totals.split as u64),
        })
    }
}

/// A reserved handover in an image whose frame allocator is up: restore what you need.
#[derive(Debug)]
pub struct Incoming {
    /// The format the previous image wrote.
    format: AbiVersion,
    /// Where its KHO FDT was (`linux,kho-fdt`).
    kho_fdt: PhysRange,
    /// Every preserved block, sorted by address (index = the stash's block index).
    blocks: Vec<Block>,
    /// One bit per block: restored or released.
    claimed: Vec<u64>,
    metadata: Vec<PhysRange>,
    clients: Vec<ClientEntry>,
    scratch: Vec<PhysRange>,
    restored: u64,
    released: u64,
    /// Pages of the unclaimed blocks.
    unclaimed_pages: u64,
    /// SPLIT blocks among the unclaimed ones: with none or all of them SPLIT and every
    /// one of order 0, restore takes its uniform path. `None` once `mm` refused a block
    /// of `restore_unclaimed_runs` (not counted again: no uniform path after that).
    unclaimed_split: Option<u64>,
}

impl Incoming {
    /// The format the previous image wrote.
    pub fn format(&self) -> AbiVersion {
        self.format
    }

    /// The KHO FDT's range (`linux,kho-fdt`): in `kho-v4` a preserved block of its own.
    pub fn kho_fdt(&self) -> PhysRange {
        self.kho_fdt
    }

    /// True if exactly the block `(phys, order)` was preserved and is not claimed yet.
    pub fn has_block(&self, phys: u64, order: u32) -> bool {
        match self.blocks.binary_search_by_key(&phys, |b| b.phys) {
            Ok(i) => self.blocks[i].order == order && !self.is_claimed(i),
            Err(_) => false,
        }
    }

    /// Indices of the unclaimed blocks that cover `[phys, phys + size)` exactly (whole
    /// blocks, no gap), or `RangeMismatch`.
    fn covering(&self, phys: u64, size: u64) -> Result<Vec<usize>, IncomingError> {
        let bad = IncomingError::RangeMismatch {
            phys,
            nr: size.div_ceil(PAGE_SIZE),
        };
        let start = phys & !(PAGE_SIZE - 1);
        let end = phys
            .checked_add(size)
            .filter(|_| size > 0)
            .ok_or(bad)?
            .next_multiple_of(PAGE_SIZE);
        let mut i = self.blocks.partition_point(|b| b.region().end.0 <= start);
        let mut at = start;
        let mut v = Vec::new();
        while at < end {
            match self.blocks.get(i) {
                Some(b) if b.phys <= at && at < b.region().end.0 && !self.is_claimed(i) => {
                    at = b.region().end.0;
                    v.push(i);
                }
                _ => return Err(bad),
            }
            i += 1;
        }
        Ok(v)
    }

    /// Gives block `i` (unclaimed) back to the allocator, its stash cleared.
    fn release_block(&mut self, fa: &mut FrameAllocator<'_>, i: usize) -> Result<(), MmError> {
        let b = self.blocks[i];
        let pfn = Pfn(b.phys >> PAGE_SHIFT);
        fa.set_page_private(pfn, 0)?;
        fa.release_reserved(pfn, 1 << b.order)?;
        log::debug!("kho: released {:#x} order {} {}", b.phys, b.order, b.kind);
        self.claim(i);
        self.released += 1;
        Ok(())
    }

    /// How many unclaimed preserved blocks exactly cover `[phys, phys + size)` (a client's
    /// blob), or `None` if they do not.
    pub fn blocks_covering(&self, phys: u64, size: u64) -> Option<usize> {
        self.covering(phys, size).ok().map(|v| v.len())
    }

    /// Gives the unclaimed blocks covering `[phys, phys + size)` back to the allocator (a
    /// `kho-v4` KHO FDT page or a client blob this image consumed); returns how many.
    pub fn release_range(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
        size: u64,
    ) -> Result<u64, IncomingError> {
        let idx = self.covering(phys, size)?;
        for &i in &idx {
            self.release_block(fa, i)?;
        }
        Ok(idx.len() as u64)
    }

    /// Carries the unclaimed block at `phys` into `out`: restored with the page state its
    /// type records, then preserved again as exactly that block (same address, order, type),
    /// so the next image gets it unchanged. The pages stay allocated in this image.
    pub fn carry_block<M: PhysMem>(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        out: &mut crate::Kho<M>,
        phys: u64,
    ) -> Result<Block, crate::CarryError> {
        let (i, order, kind) = self.stashed(fa, phys)?;
        let k = match kind {
            BlockType::Split => BlockKind::Split,
            BlockType::Contig => BlockKind::Contig,
        };
        fa.claim_reserved(Pfn(phys >> PAGE_SHIFT), order, k)
            .map_err(IncomingError::Mm)?;
        self.claim(i);
        self.restored += 1;
        out.preserve_block(fa, phys, order, kind)?;
        log::debug!("kho: carried {phys:#x} order {order} {kind}");
        Ok(self.blocks[i])
    }

    /// Carries every unclaimed block into `out` ([`Incoming::carry_block`]); returns the
    /// blocks and pages carried.
    pub fn carry_unclaimed<M: PhysMem>(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        out: &mut crate::Kho<M>,
    ) -> Result<(u64, u64), crate::CarryError> {
        let (mut n, mut pages) = (0, 0);
        for i in 0..self.blocks.len() {
            if !self.is_claimed(i) {
                let b = self.carry_block(fa, out, self.blocks[i].phys)?;
                n += 1;
                pages += 1u64 << b.order;
            }
        }
        Ok((n, pages))
    }

    /// The scratch areas of this handover (reuse them for the next one).
    pub fn scratch(&self) -> &[PhysRange] {
        &self.scratch
    }

    /// Every block of the handover, claimed or not, sorted by address: the validated list
    /// (the indices [`Incoming::restore_unclaimed_runs`] hands out).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Blocks neither restored nor released yet.
    pub fn unclaimed(&self) -> usize {
        self.blocks.len() - (self.restored + self.released) as usize
    }

    /// Blocks restored so far.
    pub fn restored(&self) -> u64 {
        self.restored
    }

    /// Unclaimed blocks as `(phys, order, type)`.
    pub fn unclaimed_blocks(&self) -> impl Iterator<Item = Block> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_claimed(*i))
            .map(|(_, b)| *b)
    }

    fn is_claimed(&self, i: usize) -> bool {
        self.claimed[i / 64] & (1 << (i % 64)) != 0
    }

    #[inline(never)]
    fn claim(&mut self, i: usize) {
        self.claimed[i / 64] |= 1 << (i % 64);
        self.unclaimed_pages -= 1u64 << self.blocks[i].order;
        if let Some(s) = self.unclaimed_split.as_mut() {
            *s -= u64::from(self.blocks[i].kind == BlockType::Split);
        }
    }

    /// Pages of the blocks neither restored nor released yet (O(1)).
    pub fn unclaimed_pages(&self) -> u64 {
        self.unclaimed_pages
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

    /// The stashed `(index, order, type)` of the unclaimed block at `phys`: the frame is
    /// RAM and RESERVED, its `private` a stash whose index names a block starting at `phys`.
    fn stashed(
        &self,
        fa: &FrameAllocator<'_>,
        phys: u64,
    ) -> Result<(usize, u32, BlockType), IncomingError> {
        let pfn = Pfn(phys >> PAGE_SHIFT);
        let not = IncomingError::NotPreserved { phys };
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(not);
        }
        let flags = fa.page_flags(pfn).map_err(|_| not)?;
        let stash = match flags.contains(PageFlags::RESERVED) {
            true => decode_private(fa.page_private(pfn)?),
            false => None,
        };
        match stash {
            Some((i, order, kind))
                if self
                    .blocks
                    .get(i)
                    .is_some_and(|b| b.phys == phys && b.order == order)
                    && !self.is_claimed(i) =>
            {
                Ok((i, order, kind))
            }
            // Off the fast path: was it ever one of ours?
            _ => match self.blocks.binary_search_by_key(&phys, |b| b.phys) {
                Ok(i) if self.is_claimed(i) => Err(IncomingError::AlreadyRestored { phys }),
                _ => Err(not),
            },
        }
    }

    /// Restores the CONTIG block at `phys` as a folio (compound, head 1, tails 0).
    pub fn restore_folio(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
    ) -> Result<Pfn, IncomingError> {
        let (i, order, kind) = self.stashed(fa, phys)?;
        if kind == BlockType::Split {
            return Err(IncomingError::SplitNotFolio { phys });
        }
        let pfn = Pfn(phys >> PAGE_SHIFT);
        fa.claim_reserved(pfn, order, BlockKind::Folio)?;
        log::debug!("kho: restored {phys:#x} order {order} {kind} as a folio");
        self.claim(i);
        self.restored += 1;
        Ok(pfn)
    }

    /// Restores the whole blocks covering `[phys, phys + nr pages)`: CONTIG blocks get head 1
    /// and tails 0, SPLIT blocks 1 on every page, and so do a Linux (`kho-v4`) handover's
    /// untyped blocks, as Linux's `kho_restore_pages` gives them. Checks every block before
    /// claiming any.
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
        // Check every block first (no allocation: the second pass reads the stashes again).
        let mut at = phys;
        while at < end {
            let (_, order, _) = self.stashed(fa, at)?;
            at += PAGE_SIZE << order;
            if at > end {
                return Err(bad);
            }
        }
        let mut at = phys;
        while at < end {
            let (i, order, kind) = self.stashed(fa, at)?;
            // Linux's contract for its untyped blocks: pages restored as pages each hold a
            // reference (`kho_restore_pages`), whatever order they were preserved at.
            let k = if kind == BlockType::Split || self.format == AbiVersion::LinuxV4 {
                BlockKind::Split
            } else {
                BlockKind::Contig
            };
            fa.claim_reserved(Pfn(at >> PAGE_SHIFT), order, k)?;
            log::debug!("kho: restored {at:#x} order {order} {kind}");
            self.claim(i);
            self.restored += 1;
            at += PAGE_SIZE << order;
        }
        Ok(())
    }

    /// Restores every block not restored or released yet, with the refcounts its type
    /// records (CONTIG: head 1, tails 0; SPLIT: 1 on every page), and hands each to `f`.
    /// Returns the pages restored. [`Incoming::restore_unclaimed_runs`] one block at a time.
    pub fn restore_unclaimed(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        mut f: impl FnMut(Block),
    ) -> Result<u64, IncomingError> {
        self.restore_unclaimed_runs(fa, |_, run| run.iter().for_each(|b| f(*b)))
    }

    /// [`Incoming::restore_unclaimed`], handing `f` the restored blocks a run at a time,
    /// with the index of the run's first block in [`Incoming::blocks`]: blocks next to each
    /// other in the validated list (address order), none claimed before, every one
    /// restored when `f` sees it (a caller may keep the indices, not copies). O(1) per block: the blocks come from
    /// this handover's own validated list, so no stash has to be looked up; `mm` still
    /// checks each block's first frame heads a preserved block of that order before it
    /// changes a frame. The claimed bitmap is walked a run of clear bits at a time (a
    /// word at a time), each run claimed by one `mm` batch call (`claim_reserved_batch`),
    /// and stays exact if `mm` refuses a block: the blocks before it are restored and
    /// handed to `f`, it and those after stay unclaimed.
    pub fn restore_unclaimed_runs(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        mut f: impl FnMut(usize, &[Block]),
    ) -> Result<u64, IncomingError> {
        // Counted here, added once (also when `mm` refuses a block).
        let (mut pages, mut restored) = (0, 0);
        let mut res = Ok(());
        let n = self.blocks.len();
        // Asked once: a disabled debug line then costs one test per run.
        let debug = log::log_enabled!(log::Level::Debug);
        // Each unclaimed block has at least one page, so as many pages as unclaimed blocks
        // means every one is of order 0; with none or all of them SPLIT, a run is claimed
        // with order and type known, neither read per block (`mm` checks each head as
        // before: an unclaimed preserved head of order 0, the same error otherwise).
        let unclaimed = self.unclaimed() as u64;
        debug_assert!(self.unclaimed_split.is_none_or(|s| {
            let split = self
                .unclaimed_blocks()
                .filter(|b| b.kind == BlockType::Split);
            s == split.count() as u64
        }));
        let uniform = match self.unclaimed_split {
            _ if self.unclaimed_pages != unclaimed => None,
            Some(0) => Some(BlockKind::Contig),
            Some(s) if s == unclaimed => Some(BlockKind::Split),
            _ => None,
        };
        let mut from = 0;
        loop {
            let lo = next_bit(&self.claimed, from, n, false);
            if lo == n {
                break;
            }
            let hi = next_bit(&self.claimed, lo, n, true);
            let run = &self.blocks[lo..hi];
            let claim = match uniform {
                // Every block of the run has order 0 and type `kind`: neither is read.
                Some(kind) => fa.claim_reserved_batch_of(
                    run.iter().map(|b| Pfn(b.phys >> PAGE_SHIFT)),
                    0,
                    kind,
                ),
                None => claim_run(fa, run),
            };
            let (done, got) = match claim {
                Ok(got) => (run, got),
                Err((k, e)) => {
                    res = Err(e);
                    let done = &run[..k];
                    (done, done.iter().map(|b| 1u64 << b.order).sum())
                }
            };
            set_bits(&mut self.claimed, lo, lo + done.len());
            pages += got;
            restored += done.len() as u64;
            if debug {
                for b in done {
                    log::debug!("kho: restored {:#x} order {} {}", b.phys, b.order, b.kind);
                }
            }
            f(lo, done);
            if res.is_err() {
                break;
            }
            from = hi;
        }
        self.unclaimed_pages -= pages;
        self.restored += restored;
        // Every block is claimed unless `mm` refused one (then the count is dropped).
        self.unclaimed_split = self.unclaimed_split.and(res.ok().map(|()| 0));
        res.map(|()| pages).map_err(IncomingError::Mm)
    }

    /// Gives every unclaimed block back to the allocator (in chunks it supports); returns how
    /// many blocks that was.
    pub fn release_unclaimed(&mut self, fa: &mut FrameAllocator<'_>) -> Result<u64, IncomingError> {
        let mut n = 0;
        for i in 0..self.blocks.len() {
            if self.is_claimed(i) {
                continue;
            }
            self.release_block(fa, i)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `next_bit` and `set_bits` against a plain `Vec<bool>`, over word edges and a last
    /// word with bits past `n`.
    #[test]
    fn bitmap_runs_match_a_bool_per_block() {
        for n in [0usize, 1, 63, 64, 65, 130, 200] {
            let mut bits = alloc::vec![0u64; n.div_ceil(64)];
            let mut model = alloc::vec![false; n];
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..40 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let (a, b) = ((rng % (n as u64 + 1)) as usize, ((rng >> 32) % 70) as usize);
                let hi = n.min(a + b);
                set_bits(&mut bits, a, hi);
                model[a..hi].iter_mut().for_each(|m| *m = true);
                for from in 0..=n {
                    for set in [false, true] {
                        let want = (from..n).find(|&i| model[i] == set).unwrap_or(n);
                        assert_eq!(next_bit(&bits, from, n, set), want, "{n} {from} {set}");
                    }
                }
            }
            // Nothing past `n` is ever set.
            if !n.is_multiple_of(64) {
                assert_eq!(bits[n / 64] >> (n % 64), 0);
            }
        }
    }
}
