//! The outgoing side: what this image preserves for the next one, and the finalize step.
//!
//! Owns the `Kho` state machine (open -> finalized -> open again on abort), the rules that cut
//! page ranges into blocks and type them from `mm`'s page state, client entries, and the KHO
//! FDT and scratch array it writes at finalize. Never changes page state except through
//! `split_preserved_pages`; never preserves scratch memory.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use mm::{BlockKind, FrameAllocator, MmError, Pfn, PhysAddr, PhysRange, PAGE_SHIFT, PAGE_SIZE};

use crate::format::{client_name_ok, write_kho_fdt, write_kho_fdt_linux, ClientEntry};
use crate::key::{BlockType, MAX_KEY_ORDER};
use crate::phys::{write_bytes, PhysMem};
use crate::preserved::{PreservedSet, SetError};
use crate::scratch::encode_scratch_array;
use crate::tree::{PageSource, TreeError};

/// Why a preserve, unpreserve, client or finalize call failed. Nothing changed when it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KhoError {
    /// The handover is finalized: call `abort` first.
    Busy,
    /// `abort` without a finalized handover.
    NotFinalized,
    /// The memory lies (partly) in a scratch area, which never holds preserved memory.
    InScratch {
        phys: u64,
        size: u64,
        scratch: PhysRange,
    },
    /// The frame is not RAM managed by the frame allocator.
    NotRam { phys: u64 },
    /// Address or size not page aligned, or an empty range.
    BadRange { phys: u64, size: u64 },
    /// The page is not the head of a folio.
    NotFolio { phys: u64 },
    /// The block overlaps an already preserved block (or one of kho's own tree pages).
    Overlaps { phys: u64, order: u32, other: u64 },
    /// The block (or some page of the range) is not preserved.
    NotPreserved { phys: u64, order: u32 },
    /// `mm` refused (page state does not allow the operation).
    Mm(MmError),
    /// A tree page could not be allocated.
    Tree(TreeError),
    /// Client name not allowed, already used, or unknown (for removal).
    BadClient { name: String },
    /// The client's blob is not entirely preserved.
    ClientNotPreserved { phys: u64, size: u64 },
    /// The KHO FDT could not be written.
    Fdt(crate::fdt::FdtWriteError),
}

impl fmt::Display for KhoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KhoError::Busy => write!(
                f,
                "kho is finalized; abort before changing preserved memory"
            ),
            KhoError::NotFinalized => write!(f, "kho is not finalized"),
            KhoError::InScratch {
                phys,
                size,
                scratch,
            } => {
                write!(
                    f,
                    "{phys:#x}+{size:#x} lies in scratch area {scratch}: cannot preserve"
                )
            }
            KhoError::NotRam { phys } => write!(f, "{phys:#x} is not RAM managed by mm"),
            KhoError::BadRange { phys, size } => {
                write!(f, "{phys:#x}+{size:#x} is empty or not page aligned")
            }
            KhoError::NotFolio { phys } => write!(f, "{phys:#x} is not a folio head"),
            KhoError::Overlaps { phys, order, other } => {
                write!(
                    f,
                    "block {phys:#x} order {order} overlaps preserved block {other:#x}"
                )
            }
            KhoError::NotPreserved { phys, order } => {
                write!(f, "block {phys:#x} order {order} is not preserved")
            }
            KhoError::Mm(e) => write!(f, "mm: {e}"),
            KhoError::Tree(e) => write!(f, "{e}"),
            KhoError::BadClient { name } => write!(f, "client name \"{name}\" refused"),
            KhoError::ClientNotPreserved { phys, size } => {
                write!(f, "client blob {phys:#x}+{size:#x} is not preserved")
            }
            KhoError::Fdt(e) => write!(f, "KHO FDT: {e}"),
        }
    }
}

impl From<MmError> for KhoError {
    fn from(e: MmError) -> Self {
        KhoError::Mm(e)
    }
}

impl From<TreeError> for KhoError {
    fn from(e: TreeError) -> Self {
        KhoError::Tree(e)
    }
}

impl From<SetError> for KhoError {
    fn from(e: SetError) -> Self {
        match e {
            SetError::Misaligned { phys, order } => KhoError::BadRange {
                phys,
                size: PAGE_SIZE << order.min(MAX_KEY_ORDER),
            },
            SetError::Overlaps { phys, order, other } => KhoError::Overlaps { phys, order, other },
            SetError::NotPreserved { phys, order } => KhoError::NotPreserved { phys, order },
            SetError::Tree(t) => KhoError::Tree(t),
        }
    }
}

/// Pages for tree nodes and handover metadata: from `mm`, never inside scratch.
struct FaPages<'f, 'a> {
    fa: &'f mut FrameAllocator<'a>,
    scratch: &'f [PhysRange],
    /// Tree pages in use, so that no preserved block can swallow one.
    meta: &'f mut BTreeSet<u64>,
}

impl FaPages<'_, '_> {
    fn alloc(&mut self, order: u32) -> Result<Pfn, MmError> {
        let mut held = Vec::new();
        let got = loop {
            match self.fa.alloc_pages(order) {
                Ok(pfn) => {
                    let r = PhysRange::new(pfn.phys(), PAGE_SIZE << order);
                    if self.scratch.iter().any(|s| s.overlaps(&r)) && held.len() < 64 {
                        held.push(pfn);
                        continue;
                    }
                    if self.scratch.iter().any(|s| s.overlaps(&r)) {
                        held.push(pfn);
                        break Err(MmError::OutOfMemory { order });
                    }
                    break Ok(pfn);
                }
                Err(e) => break Err(e),
            }
        };
        for p in held {
            let _ = self.fa.free_pages(p, order);
        }
        got
    }
}

impl PageSource for FaPages<'_, '_> {
    fn alloc_page(&mut self) -> Option<u64> {
        let phys = self.alloc(0).ok()?.phys().0;
        self.meta.insert(phys);
        Some(phys)
    }
    fn free_page(&mut self, phys: u64) {
        self.meta.remove(&phys);
        if let Err(e) = self.fa.free_pages(PhysAddr(phys).pfn(), 0) {
            log::error!("kho: freeing tree page {phys:#x}: {e}");
        }
    }
}

/// What `finalize` produced: put these in the next image's `/chosen`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The KHO FDT (`linux,kho-fdt`).
    pub kho_fdt: PhysRange,
    /// The scratch array (`linux,kho-scratch`).
    pub scratch_array: PhysRange,
}

#[derive(Debug)]
struct Finalized {
    out: Handover,
    /// `kho-v4`: the tree of untyped keys written for Linux (freed on abort).
    linux: Option<PreservedSet>,
    fdt_pfn: Pfn,
    fdt_order: u32,
    array_pfn: Pfn,
    array_order: u32,
}

/// The outgoing handover state of this image.
pub struct Kho<M: PhysMem> {
    mem: M,
    set: PreservedSet,
    scratch: Vec<PhysRange>,
    clients: Vec<ClientEntry>,
    finalized: Option<Finalized>,
    meta: BTreeSet<u64>,
}

fn order_for_pages(n: u64) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

impl<M: PhysMem> Kho<M> {
    /// An empty handover. `scratch` are this image's scratch areas (chosen with
    /// `scratch::choose_scratch` on a cold boot, or the previous image's on a warm one);
    /// they must already be reserved so that `fa` never hands them out.
    pub fn new(
        mem: M,
        fa: &mut FrameAllocator<'_>,
        scratch: Vec<PhysRange>,
    ) -> Result<Self, KhoError> {
        let mut meta = BTreeSet::new();
        let set = PreservedSet::new(
            &mem,
            &mut FaPages {
                fa,
                scratch: &scratch,
                meta: &mut meta,
            },
        )?;
        Ok(Kho {
            mem,
            set,
            scratch,
            clients: Vec::new(),
            finalized: None,
            meta,
        })
    }

    /// The scratch areas.
    pub fn scratch(&self) -> &[PhysRange] {
        &self.scratch
    }

    /// Number of preserved blocks.
    pub fn block_count(&self) -> u64 {
        self.set.len()
    }

    /// Tree pages in use (metadata, 4 KiB each).
    pub fn tree_pages(&self) -> usize {
        self.set.page_count()
    }

    /// Physical address of every radix-tree page (4 KiB) of this image: with the KHO FDT
    /// and the scratch array ([`Handover`]), what the next image reads first, so what the
    /// handover cleans to the point of coherency.
    pub fn metadata_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.meta.iter().copied()
    }

    /// True between `finalize` and `abort`.
    pub fn is_finalized(&self) -> bool {
        self.finalized.is_some()
    }

    /// Where `finalize` put the handover, while finalized.
    pub fn handover(&self) -> Option<Handover> {
        self.finalized.as_ref().map(|f| f.out)
    }

    /// Pages of every preserved block, walking the tree once without allocating per block
    /// (a handover may hold millions).
    pub fn preserved_pages(&self) -> Result<u64, KhoError> {
        Ok(self.set.pages(&self.mem)?)
    }

    /// Every preserved block as `(phys, order, type)`, in key order.
    pub fn blocks(&self) -> Result<Vec<(u64, u32, BlockType)>, KhoError> {
        let mut v = Vec::new();
        self.set
            .for_each(&self.mem, &mut |p, o, t| v.push((p, o, t)))?;
        Ok(v)
    }

    /// The type a block was recorded with, if preserved.
    pub fn block_type(&self, phys: u64, order: u32) -> Result<Option<BlockType>, KhoError> {
        Ok(self.set.kind_of(&self.mem, phys, order)?)
    }

    fn open(&self) -> Result<(), KhoError> {
        if self.finalized.is_some() {
            Err(KhoError::Busy)
        } else {
            Ok(())
        }
    }

    fn not_scratch(&self, phys: u64, size: u64) -> Result<(), KhoError> {
        let r = PhysRange::new(PhysAddr(phys), size);
        match self.scratch.iter().find(|s| s.overlaps(&r)) {
            Some(s) => Err(KhoError::InScratch {
                phys,
                size,
                scratch: *s,
            }),
            None => Ok(()),
        }
    }

    /// Preserves the folio headed by `head` (any order) as one CONTIG block.
    pub fn preserve_folio(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        head: Pfn,
    ) -> Result<(), KhoError> {
        self.open()?;
        let phys = head.phys().0;
        if !fa.contains(head) {
            return Err(KhoError::NotRam { phys });
        }
        let order = fa.folio_order(head)?;
        // mm reports an order-0 folio as a plain page: nothing distinguishes them.
        let kind = fa.block_kind(head, order)?;
        if kind != BlockKind::Folio && !(order == 0 && kind == BlockKind::Contig) {
            return Err(KhoError::NotFolio { phys });
        }
        self.not_scratch(phys, PAGE_SIZE << order)?;
        let src = &mut FaPages {
            fa,
            scratch: &self.scratch,
            meta: &mut self.meta,
        };
        Ok(self
            .set
            .insert(&self.mem, src, phys, order, BlockType::Contig)?)
    }

    /// Preserves exactly the block `(phys, order)` as `kind` (a block carried from the
    /// previous image keeps its boundaries and type). `mm` must hold it allocated in the
    /// matching state: a folio or non-compound block for CONTIG, split pages for SPLIT.
    pub fn preserve_block(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
        order: u32,
        kind: BlockType,
    ) -> Result<(), KhoError> {
        self.open()?;
        let pfn = PhysAddr(phys).pfn();
        if !phys.is_multiple_of(PAGE_SIZE << order) || !fa.contains(pfn) {
            return Err(KhoError::NotRam { phys });
        }
        let state = fa.block_kind(pfn, order)?;
        let matches = match kind {
            BlockType::Split => state == BlockKind::Split,
            BlockType::Contig => state != BlockKind::Split,
        };
        if !matches {
            return Err(KhoError::NotFolio { phys });
        }
        self.not_scratch(phys, PAGE_SIZE << order)?;
        self.insert_clear_of_metadata(fa, phys, order, kind)
    }

    /// Records `(phys, order, kind)` unless it covers one of this image's metadata pages.
    fn insert_clear_of_metadata(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
        order: u32,
        kind: BlockType,
    ) -> Result<(), KhoError> {
        let end = phys + (PAGE_SIZE << order);
        if let Some(&node) = self.meta.range(phys..end).next() {
            return Err(KhoError::Overlaps {
                phys,
                order,
                other: node,
            });
        }
        let src = &mut FaPages {
            fa,
            scratch: &self.scratch,
            meta: &mut self.meta,
        };
        Ok(self.set.insert(&self.mem, src, phys, order, kind)?)
    }

    /// Removes the folio headed by `head`, whatever type it was recorded with.
    pub fn unpreserve_folio(&mut self, fa: &FrameAllocator<'_>, head: Pfn) -> Result<(), KhoError> {
        self.open()?;
        let phys = head.phys().0;
        if !fa.contains(head) {
            return Err(KhoError::NotRam { phys });
        }
        let order = fa.folio_order(head)?;
        self.set.remove(&self.mem, phys, order)?;
        Ok(())
    }

    /// Preserves the pages `[pfn, pfn + nr)`, cut into the largest naturally aligned blocks
    /// (bounded by alignment, the remaining size, `fa.max_order()` and the allocation the
    /// block's first page belongs to), each typed from `mm`'s page state. On failure nothing
    /// this call added stays preserved.
    pub fn preserve_pages(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        pfn: Pfn,
        nr: u64,
    ) -> Result<(), KhoError> {
        self.preserve_range(fa, pfn, nr, false)
    }

    /// Preserves the physically contiguous range `[phys, phys + size)` (page aligned) with the
    /// same cutting rules as `preserve_pages`. Pages `mm` does not consider allocated (e.g.
    /// reserved memory) are recorded as CONTIG.
    pub fn preserve_phys(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        phys: u64,
        size: u64,
    ) -> Result<(), KhoError> {
        if !phys.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) || size == 0 {
            return Err(KhoError::BadRange { phys, size });
        }
        self.preserve_range(fa, PhysAddr(phys).pfn(), size >> PAGE_SHIFT, true)
    }

    fn preserve_range(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        pfn: Pfn,
        nr: u64,
        raw: bool,
    ) -> Result<(), KhoError> {
        self.open()?;
        let phys = pfn.phys().0;
        let end = pfn
            .0
            .checked_add(nr)
            .filter(|&e| nr > 0 && e <= (u64::MAX >> PAGE_SHIFT));
        let Some(end) = end else {
            return Err(KhoError::BadRange {
                phys,
                size: nr.saturating_mul(PAGE_SIZE),
            });
        };
        self.not_scratch(phys, nr << PAGE_SHIFT)?;
        let mut added: Vec<(u64, u32)> = Vec::new();
        let mut at = pfn.0;
        let result = (|| {
            while at < end {
                let (order, kind) = self.next_block(fa, at, end, raw)?;
                self.insert_clear_of_metadata(fa, at << PAGE_SHIFT, order, kind)?;
                added.push((at << PAGE_SHIFT, order));
                at += 1 << order;
            }
            Ok(())
        })();
        if result.is_err() {
            for (p, o) in added {
                let _ = self.set.remove(&self.mem, p, o);
            }
        }
        result
    }

    /// Order and type of the block starting at `at`.
    fn next_block(
        &self,
        fa: &FrameAllocator<'_>,
        at: u64,
        end: u64,
        raw: bool,
    ) -> Result<(u32, BlockType), KhoError> {
        if !fa.contains(Pfn(at)) {
            return Err(KhoError::NotRam {
                phys: at << PAGE_SHIFT,
            });
        }
        let align = if at == 0 { 63 } else { at.trailing_zeros() };
        let fit = 63 - (end - at).leading_zeros();
        let mut order = align.min(fit).min(fa.max_order());
        loop {
            match fa.block_kind(Pfn(at), order) {
                Ok(BlockKind::Split) => return Ok((order, BlockType::Split)),
                Ok(_) => return Ok((order, BlockType::Contig)),
                // The first page belongs to a smaller allocation: cut at its size.
                Err(MmError::OrderMismatch { expected, .. }) if expected < order => {
                    order = expected;
                }
                // Memory mm does not hand out (reserved, never allocated): no page state.
                Err(MmError::Reserved { .. } | MmError::NotAllocated { .. }) if raw => {
                    return Ok((order, BlockType::Contig));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Blocks recorded for `[pfn, pfn + nr)`, in order, or the first page not covered.
    fn recorded_blocks(&self, pfn: u64, nr: u64) -> Result<Vec<(u64, u32)>, KhoError> {
        let end = pfn.checked_add(nr).filter(|_| nr > 0);
        let Some(end) = end else {
            return Err(KhoError::BadRange {
                phys: pfn << PAGE_SHIFT,
                size: nr << PAGE_SHIFT,
            });
        };
        let mut v = Vec::new();
        let mut at = pfn;
        while at < end {
            let align = if at == 0 { 63 } else { at.trailing_zeros() };
            let fit = 63 - (end - at).leading_zeros();
            let top = align.min(fit).min(MAX_KEY_ORDER);
            let mut found = None;
            for o in (0..=top).rev() {
                if self.set.kind_of(&self.mem, at << PAGE_SHIFT, o)?.is_some() {
                    found = Some(o);
                    break;
                }
            }
            let Some(o) = found else {
                return Err(KhoError::NotPreserved {
                    phys: at << PAGE_SHIFT,
                    order: 0,
                });
            };
            v.push((at << PAGE_SHIFT, o));
            at += 1 << o;
        }
        Ok(v)
    }

    /// Removes the blocks covering `[pfn, pfn + nr)` exactly, whatever their types. If any
    /// page is not covered by a block inside the range, nothing is removed.
    pub fn unpreserve_pages(&mut self, pfn: Pfn, nr: u64) -> Result<(), KhoError> {
        self.open()?;
        for (p, o) in self.recorded_blocks(pfn.0, nr)? {
            self.set.remove(&self.mem, p, o)?;
        }
        Ok(())
    }

    /// Removes the blocks covering `[phys, phys + size)`, like `unpreserve_pages`.
    pub fn unpreserve_phys(&mut self, phys: u64, size: u64) -> Result<(), KhoError> {
        if !phys.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) || size == 0 {
            return Err(KhoError::BadRange { phys, size });
        }
        self.unpreserve_pages(PhysAddr(phys).pfn(), size >> PAGE_SHIFT)
    }

    /// Splits the preserved block `(pfn, order)` with `mm::split_page` and records it as
    /// SPLIT. The tree path of its SPLIT key is allocated first, so once the pages are split
    /// the record cannot fail; if anything fails the block stays preserved as it was.
    pub fn split_preserved_pages(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        pfn: Pfn,
        order: u32,
    ) -> Result<(), KhoError> {
        self.open()?;
        let phys = pfn.phys().0;
        match self.set.kind_of(&self.mem, phys, order)? {
            None => return Err(KhoError::NotPreserved { phys, order }),
            Some(BlockType::Split) => return Ok(()),
            Some(BlockType::Contig) => {}
        }
        let src = &mut FaPages {
            fa: &mut *fa,
            scratch: &self.scratch,
            meta: &mut self.meta,
        };
        self.set.reserve_split_path(&self.mem, src, phys, order)?;
        fa.split_page(pfn, order)?;
        self.set.mark_split(&self.mem, phys, order)?;
        Ok(())
    }

    /// Names a preserved blob (or sub-FDT) so the next image can find it with
    /// `Incoming::client`. The whole blob must already be preserved.
    pub fn add_client(&mut self, name: &str, phys: u64, size: u64) -> Result<(), KhoError> {
        self.open()?;
        if !client_name_ok(name) || self.clients.iter().any(|c| c.name == name) {
            return Err(KhoError::BadClient {
                name: String::from(name),
            });
        }
        let end = phys.checked_add(size).filter(|_| size > 0);
        let Some(end) = end else {
            return Err(KhoError::ClientNotPreserved { phys, size });
        };
        let mut at = phys & !(PAGE_SIZE - 1);
        while at < end {
            match self.set.containing(&self.mem, at)? {
                Some((b, o)) => at = b + (PAGE_SIZE << o),
                None => return Err(KhoError::ClientNotPreserved { phys, size }),
            }
        }
        self.clients.push(ClientEntry {
            name: String::from(name),
            phys,
            size,
        });
        Ok(())
    }

    /// Forgets a client entry (its blob stays preserved until unpreserved).
    pub fn remove_client(&mut self, name: &str) -> Result<(), KhoError> {
        self.open()?;
        let i = self.clients.iter().position(|c| c.name == name);
        let i = i.ok_or_else(|| KhoError::BadClient {
            name: String::from(name),
        })?;
        self.clients.remove(i);
        Ok(())
    }

    /// Freezes the preserved set, writes the KHO FDT and the scratch array into pages of
    /// their own, and returns where they are. Preserves fail as `Busy` until `abort`.
    pub fn finalize(&mut self, fa: &mut FrameAllocator<'_>) -> Result<Handover, KhoError> {
        self.open()?;
        let crc = self.set.checksum(&self.mem, &self.clients)?;
        let fdt = write_kho_fdt(self.set.root(), crc, &self.clients).map_err(KhoError::Fdt)?;
        let array = encode_scratch_array(&self.scratch);
        let fdt_order = order_for_pages((fdt.len() as u64).div_ceil(PAGE_SIZE));
        let array_order = order_for_pages((array.len() as u64).div_ceil(PAGE_SIZE));
        let mut src = FaPages {
            fa,
            scratch: &self.scratch,
            meta: &mut self.meta,
        };
        let fdt_pfn = src.alloc(fdt_order)?;
        let array_pfn = match src.alloc(array_order) {
            Ok(p) => p,
            Err(e) => {
                let _ = src.fa.free_pages(fdt_pfn, fdt_order);
                return Err(e.into());
            }
        };
        let out = Handover {
            kho_fdt: PhysRange::new(fdt_pfn.phys(), fdt.len() as u64),
            scratch_array: PhysRange::new(array_pfn.phys(), array.len() as u64),
        };
        if !write_bytes(&self.mem, out.kho_fdt.start.0, &fdt)
            || !write_bytes(&self.mem, out.scratch_array.start.0, &array)
        {
            let _ = src.fa.free_pages(fdt_pfn, fdt_order);
            let _ = src.fa.free_pages(array_pfn, array_order);
            return Err(KhoError::NotRam {
                phys: out.kho_fdt.start.0,
            });
        }
        self.finalized = Some(Finalized {
            out,
            linux: None,
            fdt_pfn,
            fdt_order,
            array_pfn,
            array_order,
        });
        log::info!(
            "kho: finalized {} blocks, {} tree pages, KHO FDT at {}",
            self.set.len(),
            self.set.page_count(),
            out.kho_fdt
        );
        self.log_preserved(crc);
        Ok(out)
    }

    /// At `loglevel=debug`, the metadata CRC and one line per preserved block (and the
    /// client blob it holds);
    /// at `trace`, one per tree node. Costs nothing at `info`: the walk runs only when asked.
    fn log_preserved(&self, crc: u32) {
        if log::log_enabled!(log::Level::Trace) {
            let root = self.set.root();
            log::trace!("kho: finalize: tree root {root:#x} (typed keys, one tree)");
            for phys in self.metadata_pages() {
                log::trace!("kho: finalize: tree node {phys:#x}");
            }
        }
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        log::debug!("kho: finalize: metadata CRC-32 {crc:#010x}");
        let clients = &self.clients;
        let r = self.set.for_each(&self.mem, &mut |phys, order, kind| {
            let end = phys + (PAGE_SIZE << order);
            let holds = clients
                .iter()
                .find(|c| c.phys < end && phys < c.phys.saturating_add(c.size));
            match holds {
                Some(c) => log::debug!(
                    "kho: preserved {phys:#x} order {order} {kind} client {}",
                    c.name
                ),
                None => log::debug!("kho: preserved {phys:#x} order {order} {kind}"),
            }
        });
        if let Err(e) = r {
            log::debug!("kho: listing preserved blocks: {e}");
        }
    }

    /// Undoes `finalize`: frees the KHO FDT and scratch array pages (and a `kho-v4`
    /// handover's own tree), allows changes again.
    pub fn abort(&mut self, fa: &mut FrameAllocator<'_>) -> Result<(), KhoError> {
        let f = self.finalized.take().ok_or(KhoError::NotFinalized)?;
        fa.free_pages(f.fdt_pfn, f.fdt_order)?;
        fa.free_pages(f.array_pfn, f.array_order)?;
        if let Some(set) = f.linux {
            set.destroy(
                &self.mem,
                &mut FaPages {
                    fa,
                    scratch: &self.scratch,
                    meta: &mut self.meta,
                },
            );
        }
        Ok(())
    }

    /// Finalizes for a Linux next image, in Linux's `kho-v4` format (`docs/abi.md` §10):
    /// writes `kexec-metadata` into a preserved page of its own and names it, builds a tree
    /// of untyped keys holding every preserved block (a SPLIT block goes as a plain block of
    /// its order: Linux cannot decode a type) and the KHO FDT's own page, and writes the KHO
    /// FDT there. Preserves fail as `Busy` until `abort`.
    pub fn finalize_linux(
        &mut self,
        fa: &mut FrameAllocator<'_>,
        metadata: &crate::linux::KexecMetadata,
    ) -> Result<Handover, KhoError> {
        self.open()?;
        let meta_pfn = fa.alloc_pages(0)?;
        let meta_phys = meta_pfn.phys().0;
        let blob = metadata.encode();
        if !write_bytes(&self.mem, meta_phys, &blob) {
            let _ = fa.free_pages(meta_pfn, 0);
            return Err(KhoError::NotRam { phys: meta_phys });
        }
        self.preserve_block(fa, meta_phys, 0, BlockType::Contig)?;
        self.add_client(crate::format::KEXEC_METADATA, meta_phys, blob.len() as u64)?;
        let mut blocks = Vec::new();
        self.set
            .for_each(&self.mem, &mut |p, o, _| blocks.push((p, o)))?;
        let fdt_probe = write_kho_fdt_linux(0, &self.clients).map_err(KhoError::Fdt)?;
        let fdt_order = order_for_pages((fdt_probe.len() as u64).div_ceil(PAGE_SIZE));
        let array = encode_scratch_array(&self.scratch);
        let array_order = order_for_pages((array.len() as u64).div_ceil(PAGE_SIZE));
        let mut src = FaPages {
            fa,
            scratch: &self.scratch,
            meta: &mut self.meta,
        };
        let fdt_pfn = src.alloc(fdt_order)?;
        let array_pfn = src.alloc(array_order)?;
        blocks.push((fdt_pfn.phys().0, fdt_order));
        let mut linux = PreservedSet::new(&self.mem, &mut src)?;
        for &(p, o) in &blocks {
            linux.insert(&self.mem, &mut src, p, o, BlockType::Contig)?;
        }
        let fdt = write_kho_fdt_linux(linux.root(), &self.clients).map_err(KhoError::Fdt)?;
        let out = Handover {
            kho_fdt: PhysRange::new(fdt_pfn.phys(), fdt.len() as u64),
            scratch_array: PhysRange::new(array_pfn.phys(), array.len() as u64),
        };
        if !write_bytes(&self.mem, out.kho_fdt.start.0, &fdt)
            || !write_bytes(&self.mem, out.scratch_array.start.0, &array)
        {
            return Err(KhoError::NotRam {
                phys: out.kho_fdt.start.0,
            });
        }
        log::info!(
            "kho: finalized for Linux (kho-v4): {} blocks ({} SPLIT sent untyped), {} tree pages, KHO FDT at {} (preserved), kexec-metadata count {}",
            linux.len(),
            self.blocks()?.iter().filter(|b| b.2 == BlockType::Split).count(),
            linux.page_count(),
            out.kho_fdt,
            metadata.count
        );
        self.finalized = Some(Finalized {
            out,
            linux: Some(linux),
            fdt_pfn,
            fdt_order,
            array_pfn,
            array_order,
        });
        Ok(out)
    }

    /// Drops the whole handover (after an abort, or instead of one): every tree page goes
    /// back to `fa`. Preserved memory itself is untouched.
    pub fn destroy(mut self, fa: &mut FrameAllocator<'_>) -> Result<(), KhoError> {
        if self.finalized.is_some() {
            self.abort(fa)?;
        }
        let Kho {
            mem,
            set,
            scratch,
            mut meta,
            ..
        } = self;
        set.destroy(
            &mem,
            &mut FaPages {
                fa,
                scratch: &scratch,
                meta: &mut meta,
            },
        );
        Ok(())
    }
}
