//! The set of preserved blocks this image will hand over: one radix tree of typed keys, no `mm`.
//!
//! Owns the tree (`docs/abi.md` §3: every block once, its type in key bit 59) and keeps it
//! consistent: no two blocks overlap, whatever their types, so a block is never recorded as
//! both CONTIG and SPLIT. Knows nothing of page state; `outgoing` decides types.

use crate::format::{ClientEntry, MetaCrc};
use crate::key::{decode_typed, encode_typed, BlockType, MAX_KEY_ORDER};
use crate::phys::PhysMem;
use crate::tree::{PageSource, Tree, TreeError};
use mm::{PAGE_SHIFT, PAGE_SIZE};

/// Why a block cannot be added or removed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SetError {
    /// `phys` is not aligned to `2^order` pages, or the order is beyond the format.
    Misaligned { phys: u64, order: u32 },
    /// The block overlaps a preserved block (`other` is one overlapping block's address).
    Overlaps { phys: u64, order: u32, other: u64 },
    /// No block of this address and order is preserved.
    NotPreserved { phys: u64, order: u32 },
    /// The tree needed a page and could not get one, or a node is unreachable.
    Tree(TreeError),
}

impl From<TreeError> for SetError {
    fn from(e: TreeError) -> Self {
        SetError::Tree(e)
    }
}

impl core::fmt::Display for SetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetError::Misaligned { phys, order } => {
                write!(
                    f,
                    "block {phys:#x} is not aligned to order {order} (or order too large)"
                )
            }
            SetError::Overlaps { phys, order, other } => write!(
                f,
                "block {phys:#x} order {order} overlaps preserved block at {other:#x}"
            ),
            SetError::NotPreserved { phys, order } => {
                write!(f, "no block {phys:#x} order {order} is preserved")
            }
            SetError::Tree(e) => write!(f, "{e}"),
        }
    }
}

/// The preserved blocks of this image.
#[derive(Debug)]
pub struct PreservedSet {
    tree: Tree,
    /// Smallest and largest order ever inserted (bounds overlap searches).
    /// Per type (CONTIG, SPLIT): smallest and largest order ever recorded with it, so that
    /// a type never used costs no lookup.
    orders: [Option<(u32, u32)>; 2],
    count: u64,
}

impl PreservedSet {
    /// An empty set (one root table).
    pub fn new<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        mem: &M,
        src: &mut S,
    ) -> Result<Self, TreeError> {
        Ok(PreservedSet {
            tree: Tree::new(mem, src)?,
            orders: [None; 2],
            count: 0,
        })
    }

    /// Number of preserved blocks.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True if nothing is preserved.
    #[cfg_attr(not(feature = "test-helpers"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The root table.
    pub fn root(&self) -> u64 {
        self.tree.root()
    }

    /// Tree pages in use.
    pub fn page_count(&self) -> usize {
        self.tree.page_count()
    }

    /// True if the block is recorded with either type.
    fn has<M: PhysMem + ?Sized>(&self, mem: &M, phys: u64, order: u32) -> Result<bool, TreeError> {
        Ok(self.kind_of(mem, phys, order)?.is_some())
    }

    /// Order bounds of `kind` (see `orders`).
    fn bounds(&self, kind: BlockType) -> Option<(u32, u32)> {
        self.orders[kind as usize]
    }

    /// Order bounds of both types together.
    fn all_bounds(&self) -> Option<(u32, u32)> {
        match self.orders {
            [Some((a, b)), Some((c, d))] => Some((a.min(c), b.max(d))),
            [x, y] => x.or(y),
        }
    }

    fn widen(&mut self, kind: BlockType, order: u32) {
        let b = &mut self.orders[kind as usize];
        *b = Some(match *b {
            None => (order, order),
            Some((lo, hi)) => (lo.min(order), hi.max(order)),
        });
    }

    /// Address of a preserved block overlapping `[phys, phys + 2^order pages)`, if any.
    pub fn find_overlap<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        phys: u64,
        order: u32,
    ) -> Result<Option<u64>, TreeError> {
        let Some((lo, hi)) = self.all_bounds() else {
            return Ok(None);
        };
        for o in (order + 1).max(lo)..=hi {
            let base = phys & !((PAGE_SIZE << o) - 1);
            if self.has(mem, base, o)? {
                return Ok(Some(base));
            }
        }
        // Keys of one type and order are consecutive for consecutive blocks: one range
        // query per (type, order) the set has.
        for kind in [BlockType::Contig, BlockType::Split] {
            let Some((lo, hi)) = self.bounds(kind) else {
                continue;
            };
            for o in lo..=order.min(hi) {
                let start = encode_typed(phys, o, kind);
                let n = 1u64 << (order - o);
                if self.tree.any_in_range(mem, start, n)? {
                    // Report the first page-granular overlapping block of that order.
                    for i in 0..n {
                        if self.tree.test(mem, start + i)? {
                            return Ok(Some(phys + (i << (PAGE_SHIFT + o))));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// The preserved block containing the page at `phys`, as `(block phys, order)`.
    pub fn containing<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        phys: u64,
    ) -> Result<Option<(u64, u32)>, TreeError> {
        let Some((lo, hi)) = self.all_bounds() else {
            return Ok(None);
        };
        for o in lo..=hi {
            let base = phys & !((PAGE_SIZE << o) - 1);
            if self.has(mem, base, o)? {
                return Ok(Some((base, o)));
            }
        }
        Ok(None)
    }

    /// The type a block was recorded with, if it is preserved.
    pub fn kind_of<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        phys: u64,
        order: u32,
    ) -> Result<Option<BlockType>, TreeError> {
        if order > MAX_KEY_ORDER {
            return Ok(None);
        }
        for kind in [BlockType::Contig, BlockType::Split] {
            let used = self
                .bounds(kind)
                .is_some_and(|(lo, hi)| (lo..=hi).contains(&order));
            if used && self.tree.test(mem, encode_typed(phys, order, kind))? {
                return Ok(Some(kind));
            }
        }
        Ok(None)
    }

    /// Adds a block. Refuses misaligned blocks and blocks overlapping a preserved one.
    pub fn insert<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        &mut self,
        mem: &M,
        src: &mut S,
        phys: u64,
        order: u32,
        kind: BlockType,
    ) -> Result<(), SetError> {
        if order > MAX_KEY_ORDER || !phys.is_multiple_of(PAGE_SIZE << order) {
            return Err(SetError::Misaligned { phys, order });
        }
        if let Some(other) = self.find_overlap(mem, phys, order)? {
            return Err(SetError::Overlaps { phys, order, other });
        }
        self.tree.set(mem, src, encode_typed(phys, order, kind))?;
        self.widen(kind, order);
        self.count += 1;
        Ok(())
    }

    /// Makes sure the tree has every node the SPLIT key of `(phys, order)` needs, so that a
    /// later `mark_split` cannot fail for lack of memory. The key itself is left as it was.
    pub fn reserve_split_path<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        &mut self,
        mem: &M,
        src: &mut S,
        phys: u64,
        order: u32,
    ) -> Result<(), SetError> {
        let key = encode_typed(phys, order, BlockType::Split);
        if !self.tree.set(mem, src, key)? {
            self.tree.clear(mem, key)?;
        }
        Ok(())
    }

    /// Records a preserved CONTIG block as SPLIT: its CONTIG key goes, its SPLIT key comes.
    pub fn mark_split<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        phys: u64,
        order: u32,
    ) -> Result<(), SetError> {
        if order > MAX_KEY_ORDER {
            return Err(SetError::NotPreserved { phys, order });
        }
        match self.kind_of(mem, phys, order)? {
            None => return Err(SetError::NotPreserved { phys, order }),
            Some(BlockType::Split) => return Ok(()),
            Some(BlockType::Contig) => {}
        }
        // The path exists (reserve_split_path), so this allocates nothing; set before clear
        // so that a failure leaves the block preserved as CONTIG.
        let mut none = NoPages;
        self.tree
            .set(mem, &mut none, encode_typed(phys, order, BlockType::Split))?;
        self.widen(BlockType::Split, order);
        self.tree
            .clear(mem, encode_typed(phys, order, BlockType::Contig))?;
        Ok(())
    }

    /// Removes a block whatever type it was recorded with; returns that type.
    pub fn remove<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        phys: u64,
        order: u32,
    ) -> Result<BlockType, SetError> {
        if order > MAX_KEY_ORDER || !phys.is_multiple_of(PAGE_SIZE << order) {
            return Err(SetError::NotPreserved { phys, order });
        }
        for kind in [BlockType::Contig, BlockType::Split] {
            if self.tree.clear(mem, encode_typed(phys, order, kind))? {
                self.count -= 1;
                return Ok(kind);
            }
        }
        Err(SetError::NotPreserved { phys, order })
    }

    /// Pages of every block (the tree holds every block once).
    pub fn pages<M: PhysMem + ?Sized>(&self, mem: &M) -> Result<u64, TreeError> {
        let mut pages = 0u64;
        self.tree.for_each_key(mem, &mut |k| {
            if let Ok((_, order, _)) = decode_typed(k) {
                pages += 1u64 << order;
            }
        })?;
        Ok(pages)
    }

    /// Calls `f(phys, order, type)` for every block, in key order (every CONTIG block, then
    /// every SPLIT block; by order, then address, within a type).
    pub fn for_each<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        f: &mut dyn FnMut(u64, u32, BlockType),
    ) -> Result<(), TreeError> {
        self.tree.for_each_key(mem, &mut |k| {
            if let Ok((phys, order, t)) = decode_typed(k) {
                f(phys, order, t);
            }
        })
    }

    /// CRC-32 of the metadata in `docs/abi.md` order (the tree, then the clients).
    pub fn checksum<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        clients: &[ClientEntry],
    ) -> Result<u32, TreeError> {
        // The tree is this image's own: its node list gives the walk's order without
        // reading a table, and each page is hashed where it lies.
        let mut crc = MetaCrc::new(self.root());
        for phys in self.tree.pages_in_walk_order() {
            if !crc.page(mem, phys) {
                return Err(TreeError::NodeNotRam { phys });
            }
        }
        for c in clients {
            crc.client(c);
        }
        Ok(crc.finish())
    }

    /// Returns every tree page to `src`.
    pub fn destroy<M: PhysMem + ?Sized, S: PageSource + ?Sized>(self, mem: &M, src: &mut S) {
        self.tree.destroy(mem, src);
    }
}

/// A page source with no pages: for tree updates that must not allocate.
struct NoPages;

impl PageSource for NoPages {
    fn alloc_page(&mut self) -> Option<u64> {
        None
    }
    fn free_page(&mut self, _phys: u64) {}
}
