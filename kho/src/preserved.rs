//! The set of preserved blocks this image will hand over: two radix trees, no `mm`.
//!
//! Owns the main tree (every block, untyped, Linux's layout) and the split tree (SPLIT blocks
//! only) and keeps them consistent: a block is in the split tree only if it is in the main
//! tree, and no two blocks overlap. Knows nothing of page state; `outgoing` decides types.

use crate::format::{ClientEntry, MetaCrc};
use crate::key::{encode, BlockType, MAX_KEY_ORDER};
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
    main: Tree,
    split: Tree,
    /// Smallest and largest order ever inserted (bounds overlap searches).
    orders: Option<(u32, u32)>,
    count: u64,
}

impl PreservedSet {
    /// An empty set (two root tables).
    pub fn new<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        mem: &M,
        src: &mut S,
    ) -> Result<Self, TreeError> {
        let main = Tree::new(mem, src)?;
        let split = match Tree::new(mem, src) {
            Ok(t) => t,
            Err(e) => {
                main.destroy(mem, src);
                return Err(e);
            }
        };
        Ok(PreservedSet {
            main,
            split,
            orders: None,
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

    /// Root tables `(main, split)`.
    pub fn roots(&self) -> (u64, u64) {
        (self.main.root(), self.split.root())
    }

    /// Tree pages in use.
    pub fn page_count(&self) -> usize {
        self.main.page_count() + self.split.page_count()
    }

    /// Address of a preserved block overlapping `[phys, phys + 2^order pages)`, if any.
    pub fn find_overlap<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        phys: u64,
        order: u32,
    ) -> Result<Option<u64>, TreeError> {
        let Some((lo, hi)) = self.orders else {
            return Ok(None);
        };
        for o in (order + 1).max(lo)..=hi {
            let base = phys & !((PAGE_SIZE << o) - 1);
            if self.main.test(mem, encode(base, o))? {
                return Ok(Some(base));
            }
        }
        for o in lo..=order.min(hi) {
            let start = encode(phys, o);
            let n = 1u64 << (order - o);
            if self.main.any_in_range(mem, start, n)? {
                // Report the first page-granular overlapping block of that order.
                for i in 0..n {
                    if self.main.test(mem, start + i)? {
                        return Ok(Some(phys + (i << (PAGE_SHIFT + o))));
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
        let Some((lo, hi)) = self.orders else {
            return Ok(None);
        };
        for o in lo..=hi {
            let base = phys & !((PAGE_SIZE << o) - 1);
            if self.main.test(mem, encode(base, o))? {
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
        if order > MAX_KEY_ORDER || !self.main.test(mem, encode(phys, order))? {
            return Ok(None);
        }
        Ok(Some(if self.split.test(mem, encode(phys, order))? {
            BlockType::Split
        } else {
            BlockType::Contig
        }))
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
        let key = encode(phys, order);
        self.main.set(mem, src, key)?;
        if kind == BlockType::Split {
            if let Err(e) = self.split.set(mem, src, key) {
                self.main.clear(mem, key)?;
                return Err(e.into());
            }
        }
        self.orders = Some(match self.orders {
            None => (order, order),
            Some((lo, hi)) => (lo.min(order), hi.max(order)),
        });
        self.count += 1;
        Ok(())
    }

    /// Makes sure the split tree has every node `key(phys, order)` needs, so that a later
    /// `mark_split` cannot fail for lack of memory. The key itself is left as it was.
    pub fn reserve_split_path<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        &mut self,
        mem: &M,
        src: &mut S,
        phys: u64,
        order: u32,
    ) -> Result<(), SetError> {
        let key = encode(phys, order);
        if !self.split.set(mem, src, key)? {
            self.split.clear(mem, key)?;
        }
        Ok(())
    }

    /// Records a preserved CONTIG block as SPLIT.
    pub fn mark_split<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        phys: u64,
        order: u32,
    ) -> Result<(), SetError> {
        let key = encode(phys, order);
        if order > MAX_KEY_ORDER || !self.main.test(mem, key)? {
            return Err(SetError::NotPreserved { phys, order });
        }
        // The path exists (reserve_split_path), so this allocates nothing.
        let mut none = NoPages;
        self.split.set(mem, &mut none, key)?;
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
        let key = encode(phys, order);
        if !self.main.clear(mem, key)? {
            return Err(SetError::NotPreserved { phys, order });
        }
        self.count -= 1;
        Ok(if self.split.clear(mem, key)? {
            BlockType::Split
        } else {
            BlockType::Contig
        })
    }

    /// Pages of every block (the main tree holds every block once).
    pub fn pages<M: PhysMem + ?Sized>(&self, mem: &M) -> Result<u64, TreeError> {
        let mut pages = 0u64;
        self.main.for_each_key(mem, &mut |k| {
            if let Ok((_, order)) = crate::key::decode(k) {
                pages += 1u64 << order;
            }
        })?;
        Ok(pages)
    }

    /// Calls `f(phys, order, type)` for every block, in key order.
    pub fn for_each<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        f: &mut dyn FnMut(u64, u32, BlockType),
    ) -> Result<(), TreeError> {
        let mut split = alloc::collections::BTreeSet::new();
        self.split.for_each_key(mem, &mut |k| {
            split.insert(k);
        })?;
        self.main.for_each_key(mem, &mut |k| {
            if let Ok((phys, order)) = crate::key::decode(k) {
                let t = if split.contains(&k) {
                    BlockType::Split
                } else {
                    BlockType::Contig
                };
                f(phys, order, t);
            }
        })
    }

    /// CRC-32 of the metadata in `docs/abi.md` order (both trees, then the clients).
    pub fn checksum<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        clients: &[ClientEntry],
    ) -> Result<u32, TreeError> {
        let (m, s) = self.roots();
        let mut crc = MetaCrc::new(m, s);
        let mut bad = None;
        let mut page = |p: u64| {
            if !crc.page(mem, p) {
                bad = Some(p);
            }
        };
        self.main.walk(mem, &mut page, &mut |_| {})?;
        self.split.walk(mem, &mut page, &mut |_| {})?;
        if let Some(phys) = bad {
            return Err(TreeError::NodeNotRam { phys });
        }
        for c in clients {
            crc.client(c);
        }
        Ok(crc.finish())
    }

    /// Returns every tree page to `src`.
    pub fn destroy<M: PhysMem + ?Sized, S: PageSource + ?Sized>(self, mem: &M, src: &mut S) {
        self.main.destroy(mem, src);
        self.split.destroy(mem, src);
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
