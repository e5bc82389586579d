//! The radix tree of preserved keys: 4 KiB tables of physical addresses over 4 KiB bitmaps.
//!
//! Owns the node layout (`docs/abi.md`, "Radix tree") for a tree this image builds: set,
//! clear, test, range queries and walks. Trusts its own nodes; input from a previous image is
//! walked by `validate`, never by this module.

use crate::phys::{
    next_nonzero_word, nonzero_groups, read_page, read_u64, write_u64, PageBuf, PhysMem, ZERO_PAGE,
};
use mm::PAGE_SIZE;

/// Bits of a key indexed by a leaf bitmap (32,768 bits = one page).
pub const LEAF_BITS: u32 = 15;
/// Bits of a key indexed by one table (512 entries of u64).
pub const TABLE_BITS: u32 = 9;
/// Tables between the root and a leaf, root included.
pub const TABLE_LEVELS: u32 = 5;
/// Key bits the tree covers: 0..KEY_BITS.
pub const KEY_BITS: u32 = LEAF_BITS + TABLE_BITS * TABLE_LEVELS;

/// Where the tree gets and returns its node pages (mm's `alloc_pages(0)` on the target).
pub trait PageSource {
    /// A page-aligned physical page the tree may own, or `None` when out of memory.
    fn alloc_page(&mut self) -> Option<u64>;
    /// Returns a page obtained from `alloc_page`.
    fn free_page(&mut self, phys: u64);
}

/// The tree could not get a node page, or a node page is not reachable through `PhysMem`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// The page source had no page left.
    OutOfMemory,
    /// A node page the tree owns is not RAM according to `PhysMem`.
    NodeNotRam { phys: u64 },
}

impl core::fmt::Display for TreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TreeError::OutOfMemory => write!(f, "no page left for a radix-tree node"),
            TreeError::NodeNotRam { phys } => write!(f, "radix-tree node {phys:#x} is not RAM"),
        }
    }
}

/// Index into the table at `level` (5 = root, 1 = the table that points at leaves).
pub const fn table_index(key: u64, level: u32) -> usize {
    ((key >> (LEAF_BITS + TABLE_BITS * (level - 1))) & ((1 << TABLE_BITS) - 1)) as usize
}

/// Number of keys below one entry of a table at `level`.
const fn entry_span(level: u32) -> u64 {
    1u64 << (LEAF_BITS + TABLE_BITS * (level - 1))
}

fn zero_page<M: PhysMem + ?Sized>(mem: &M, phys: u64) -> Result<(), TreeError> {
    let p = mem
        .ptr(phys, PAGE_SIZE as usize)
        .ok_or(TreeError::NodeNotRam { phys })?;
    // SAFETY: PhysMem promises a full page at p, owned by this tree and not aliased.
    unsafe { core::ptr::write_bytes(p, 0, PAGE_SIZE as usize) };
    Ok(())
}

/// One node page of a tree this image built, and where it sits: the lowest key below it
/// and its level. Sorted by (first key, level from the root down) the nodes are in the
/// walk's depth-first pre-order: a node before its subtree, subtrees in index order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Node {
    first_key: u64,
    level: u32,
    phys: u64,
}

/// A radix tree built by this image. Node pages belong to it until `destroy`.
#[derive(Debug)]
pub struct Tree {
    root: u64,
    /// Every node page, root first, in the order they were linked in.
    nodes: alloc::vec::Vec<Node>,
}

impl Tree {
    /// An empty tree: one zeroed root table.
    pub fn new<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        mem: &M,
        src: &mut S,
    ) -> Result<Self, TreeError> {
        let root = src.alloc_page().ok_or(TreeError::OutOfMemory)?;
        if let Err(e) = zero_page(mem, root) {
            src.free_page(root);
            return Err(e);
        }
        let top = Node {
            first_key: 0,
            level: TABLE_LEVELS,
            phys: root,
        };
        Ok(Tree {
            root,
            nodes: alloc::vec![top],
        })
    }

    /// Physical address of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Node pages (tables and leaves) the tree owns.
    pub fn page_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node page in the order [`walk`](Self::walk) visits them (depth-first, root
    /// first, entries in index order), without reading a page: what the metadata checksum
    /// hashes.
    pub fn pages_in_walk_order(&self) -> alloc::vec::Vec<u64> {
        let mut nodes = self.nodes.clone();
        nodes.sort_unstable_by_key(|n| (n.first_key, core::cmp::Reverse(n.level)));
        nodes.iter().map(|n| n.phys).collect()
    }

    /// Leaf page of `key`, allocating missing nodes if `src` is given (each recorded in
    /// `added` once linked in).
    fn leaf_of<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        &self,
        mem: &M,
        mut src: Option<&mut S>,
        key: u64,
        added: &mut alloc::vec::Vec<Node>,
    ) -> Result<Option<u64>, TreeError> {
        debug_assert!(key >> KEY_BITS == 0, "key {key:#x} outside the tree");
        let mut node = self.root;
        for level in (1..=TABLE_LEVELS).rev() {
            let slot = node + 8 * table_index(key, level) as u64;
            let next = read_u64(mem, slot).ok_or(TreeError::NodeNotRam { phys: node })?;
            node = if next != 0 {
                next
            } else if let Some(src) = src.as_deref_mut() {
                let page = src.alloc_page().ok_or(TreeError::OutOfMemory)?;
                if let Err(e) = zero_page(mem, page) {
                    src.free_page(page);
                    return Err(e);
                }
                write_u64(mem, slot, page);
                let below = LEAF_BITS + TABLE_BITS * (level - 1);
                added.push(Node {
                    first_key: key >> below << below,
                    level: level - 1,
                    phys: page,
                });
                page
            } else {
                return Ok(None);
            };
        }
        Ok(Some(node))
    }

    /// Sets `key`; returns whether it was already set.
    pub fn set<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
        &mut self,
        mem: &M,
        src: &mut S,
        key: u64,
    ) -> Result<bool, TreeError> {
        let mut added = alloc::vec::Vec::new();
        let leaf = self.leaf_of(mem, Some(src), key, &mut added);
        self.nodes.append(&mut added);
        update_bit(mem, leaf?.ok_or(TreeError::OutOfMemory)?, key, true)
    }

    /// Clears `key`; returns whether it was set. Node pages stay until `destroy`.
    pub fn clear<M: PhysMem + ?Sized>(&mut self, mem: &M, key: u64) -> Result<bool, TreeError> {
        match self.leaf_of::<M, dyn PageSource>(mem, None, key, &mut alloc::vec::Vec::new())? {
            Some(leaf) => update_bit(mem, leaf, key, false),
            None => Ok(false),
        }
    }

    /// True if `key` is set.
    pub fn test<M: PhysMem + ?Sized>(&self, mem: &M, key: u64) -> Result<bool, TreeError> {
        match self.leaf_of::<M, dyn PageSource>(mem, None, key, &mut alloc::vec::Vec::new())? {
            Some(leaf) => {
                let word = read_u64(mem, leaf + 8 * ((key & 0x7fff) / 64))
                    .ok_or(TreeError::NodeNotRam { phys: leaf })?;
                Ok(word & (1 << (key % 64)) != 0)
            }
            None => Ok(false),
        }
    }

    /// True if any key in `[start, start + count)` is set. Skips absent subtrees.
    pub fn any_in_range<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        start: u64,
        count: u64,
    ) -> Result<bool, TreeError> {
        let end = start.saturating_add(count).min(1 << KEY_BITS);
        let mut k = start;
        'outer: while k < end {
            let mut node = self.root;
            for level in (1..=TABLE_LEVELS).rev() {
                let next = read_u64(mem, node + 8 * table_index(k, level) as u64)
                    .ok_or(TreeError::NodeNotRam { phys: node })?;
                if next == 0 {
                    k = (k | (entry_span(level) - 1)) + 1;
                    continue 'outer;
                }
                node = next;
            }
            // In a leaf: scan whole words between k and the end of this leaf or of the range.
            let leaf_end = ((k >> LEAF_BITS) + 1) << LEAF_BITS;
            let stop = end.min(leaf_end);
            while k < stop {
                let bit = k & 0x7fff;
                let word = read_u64(mem, node + 8 * (bit / 64))
                    .ok_or(TreeError::NodeNotRam { phys: node })?;
                let lo = bit % 64;
                let hi = (lo + (stop - k)).min(64);
                let mask = if hi - lo == 64 {
                    !0
                } else {
                    ((1u64 << (hi - lo)) - 1) << lo
                };
                if word & mask != 0 {
                    return Ok(true);
                }
                k += hi - lo;
            }
        }
        Ok(false)
    }

    /// Calls `f` for every set key, in increasing order.
    pub fn for_each_key<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        f: &mut dyn FnMut(u64),
    ) -> Result<(), TreeError> {
        self.walk(mem, &mut |_| {}, f)
    }

    /// Calls `page` for every node page in depth-first order (root first, entries in index
    /// order) and `key` for every set key.
    pub fn walk<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        page: &mut dyn FnMut(u64),
        key: &mut dyn FnMut(u64),
    ) -> Result<(), TreeError> {
        self.walk_read(mem, &mut |p, _| page(p), key)
    }

    /// Calls `page` for every node page, in [`walk`](Self::walk)'s order, without reading
    /// the keys of the leaves.
    pub fn pages<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        page: &mut dyn FnMut(u64),
    ) -> Result<(), TreeError> {
        let mut read = |p: u64, words: &mut PageBuf| {
            page(p);
            read_page(mem, p, words)
        };
        self.walk_with(&mut read, None)
    }

    /// [`walk`](Self::walk), handing `page` each node's bytes as the walk read them (`None`
    /// for a node that is not RAM, after which the walk fails): one read per node for a
    /// caller that hashes them (the metadata checksum).
    pub fn walk_read<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        page: &mut dyn FnMut(u64, Option<&PageBuf>),
        key: &mut dyn FnMut(u64),
    ) -> Result<(), TreeError> {
        let mut read = |p: u64, words: &mut PageBuf| {
            let ok = read_page(mem, p, words);
            page(p, ok.then_some(&*words));
            ok
        };
        self.walk_with(&mut read, Some(key))
    }

    /// [`walk`](Self::walk) with the caller reading each node: `read(phys, buf)` fills
    /// `buf` with the node's bytes (false if it is not RAM, after which the walk fails with
    /// `NodeNotRam`), in the same order. The metadata checksum hashes while it copies. With
    /// no `key`, leaves are read but not scanned (the checksum needs their bytes only).
    pub fn walk_with(
        &self,
        read: &mut dyn FnMut(u64, &mut PageBuf) -> bool,
        key: Option<&mut dyn FnMut(u64)>,
    ) -> Result<(), TreeError> {
        // One page buffer per level, reused down the tree.
        let mut bufs: alloc::vec::Vec<PageBuf> = alloc::vec![ZERO_PAGE; TABLE_LEVELS as usize + 1];
        walk_node(self.root, TABLE_LEVELS, 0, &mut bufs, read, key)
    }

    /// Returns every node page to `src`.
    pub fn destroy<M: PhysMem + ?Sized, S: PageSource + ?Sized>(self, mem: &M, src: &mut S) {
        let mut pages = alloc::vec::Vec::with_capacity(self.nodes.len());
        // A tree this image built walks cleanly; on a NodeNotRam we still free what we saw.
        let _ = self.pages(mem, &mut |p| pages.push(p));
        for p in pages {
            src.free_page(p);
        }
    }
}

fn update_bit<M: PhysMem + ?Sized>(
    mem: &M,
    leaf: u64,
    key: u64,
    set: bool,
) -> Result<bool, TreeError> {
    let addr = leaf + 8 * ((key & 0x7fff) / 64);
    let word = read_u64(mem, addr).ok_or(TreeError::NodeNotRam { phys: leaf })?;
    let mask = 1u64 << (key % 64);
    let new = if set { word | mask } else { word & !mask };
    write_u64(mem, addr, new);
    Ok(word & mask != 0)
}

fn walk_node<'k>(
    node: u64,
    level: u32,
    prefix: u64,
    bufs: &mut [PageBuf],
    read: &mut dyn FnMut(u64, &mut PageBuf) -> bool,
    mut key: Option<&mut (dyn FnMut(u64) + 'k)>,
) -> Result<(), TreeError> {
    // bufs[level] holds this node; the levels below are free for its children.
    let (below, this) = bufs.split_at_mut(level as usize);
    let words = &mut this[0];
    if !read(node, words) {
        return Err(TreeError::NodeNotRam { phys: node });
    }
    let groups = if level > 0 || key.is_some() {
        nonzero_groups(words)
    } else {
        return Ok(());
    };
    let mut from = 0;
    while let Some((i, w)) = next_nonzero_word(words, groups, from) {
        from = i + 1;
        if level > 0 {
            let p = prefix | ((i as u64) << (LEAF_BITS + TABLE_BITS * (level - 1)));
            walk_node(w, level - 1, p, below, read, key.as_deref_mut())?;
        } else if let Some(key) = key.as_deref_mut() {
            let mut word = w;
            while word != 0 {
                let b = word.trailing_zeros() as u64;
                key(prefix | (i as u64 * 64 + b));
                word &= word - 1;
            }
        }
    }
    Ok(())
}

/// A page source handing out pages of an `Arena`-like range in order, with a free list. For
/// host tests and benchmarks that need no `mm`.
#[cfg(any(test, feature = "test-helpers"))]
#[derive(Debug)]
pub struct BumpPages {
    next: u64,
    end: u64,
    free: alloc::vec::Vec<u64>,
    /// Pages currently handed out.
    pub in_use: usize,
}

#[cfg(any(test, feature = "test-helpers"))]
impl BumpPages {
    /// Hands out the pages of `[start, end)` (page aligned).
    pub fn new(start: u64, end: u64) -> Self {
        BumpPages {
            next: start,
            end,
            free: alloc::vec::Vec::new(),
            in_use: 0,
        }
    }
}

#[cfg(any(test, feature = "test-helpers"))]
impl PageSource for BumpPages {
    fn alloc_page(&mut self) -> Option<u64> {
        let p = if let Some(p) = self.free.pop() {
            p
        } else if self.next + PAGE_SIZE <= self.end {
            self.next += PAGE_SIZE;
            self.next - PAGE_SIZE
        } else {
            return None;
        };
        self.in_use += 1;
        Some(p)
    }
    fn free_page(&mut self, phys: u64) {
        self.in_use -= 1;
        self.free.push(phys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::encode;
    use crate::Arena;

    fn setup() -> (Arena, BumpPages) {
        let a = Arena::new(0x4000_0000, 64 * PAGE_SIZE);
        let r = a.region();
        (a, BumpPages::new(r.start.0, r.end.0))
    }

    #[test]
    fn set_test_clear_walk() {
        let (a, mut src) = setup();
        let mut t = Tree::new(&a, &mut src).unwrap();
        let keys = [
            encode(0x4000_0000, 0),
            encode(0x8000_0000, 10),
            encode(1 << 40, 30),
            1 << 52,
        ];
        for k in keys {
            assert!(!t.set(&a, &mut src, k).unwrap());
            assert!(t.set(&a, &mut src, k).unwrap());
            assert!(t.test(&a, k).unwrap());
        }
        let mut seen = alloc::vec::Vec::new();
        t.for_each_key(&a, &mut |k| seen.push(k)).unwrap();
        let mut want = keys.to_vec();
        want.sort();
        assert_eq!(seen, want);
        assert!(t.clear(&a, keys[1]).unwrap());
        assert!(!t.clear(&a, keys[1]).unwrap());
        assert!(!t.test(&a, keys[1]).unwrap());
        let used = src.in_use;
        assert_eq!(used, t.page_count());
        t.destroy(&a, &mut src);
        assert_eq!(src.in_use, 0);
    }

    #[test]
    fn walk_with_crc_reads_the_pages_walk_read_hands_out() {
        let (a, mut src) = setup();
        let mut t = Tree::new(&a, &mut src).unwrap();
        for k in [
            encode(0x4000_0000, 0),
            encode(0x8000_0000, 10),
            encode(1 << 40, 30),
        ] {
            t.set(&a, &mut src, k).unwrap();
        }
        // The pages and keys of the plain walk.
        let mut pages = alloc::vec::Vec::new();
        let mut page = |p: u64, b: Option<&PageBuf>| {
            assert!(b.is_some());
            pages.push(p);
        };
        let mut keys = alloc::vec::Vec::new();
        t.walk_read(&a, &mut page, &mut |k| keys.push(k)).unwrap();
        // The fused copy-and-hash of MetaCrc::read_page through walk_with.
        let mut meta = crate::format::MetaCrc::new(t.root);
        let (mut seen, mut keys2) = (alloc::vec::Vec::new(), alloc::vec::Vec::new());
        let mut read = |p: u64, buf: &mut PageBuf| {
            seen.push(p);
            meta.read_page(&a, p, buf)
        };
        t.walk_with(&mut read, Some(&mut |k| keys2.push(k)))
            .unwrap();
        assert_eq!(seen, pages);
        assert_eq!(keys2, keys);
        assert_eq!(pages.len(), t.page_count());
        let mut expect = crate::format::MetaCrc::new(t.root);
        for &p in &pages {
            assert!(expect.page(&a, p));
        }
        let got = meta.finish();
        assert_eq!(got, expect.finish());
        let root = crate::phys::crc32_soft(0, &t.root.to_le_bytes());
        let mut by_hand = root;
        for &p in &pages {
            let mut b = ZERO_PAGE;
            assert!(read_page(&a, p, &mut b));
            by_hand = crate::phys::crc32_soft(by_hand, crate::phys::page_bytes(&b));
        }
        assert_eq!(got, by_hand);
        t.destroy(&a, &mut src);
    }

    #[test]
    fn node_list_order_is_the_walk_order() {
        let a = Arena::new(0x4000_0000, 256 * PAGE_SIZE);
        let r = a.region();
        let mut src = BumpPages::new(r.start.0, r.end.0);
        let mut t = Tree::new(&a, &mut src).unwrap();
        // Keys of many (type, order) paths, set out of order, sharing tables at every level
        // and leaves; then some cleared (their nodes stay).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut keys = alloc::vec::Vec::new();
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let order = (x % 13) as u32;
            let phys = ((x >> 20) % (1 << 36)) & !((PAGE_SIZE << order) - 1);
            let kind = if x & 1 == 0 {
                crate::BlockType::Contig
            } else {
                crate::BlockType::Split
            };
            keys.push(crate::key::encode_typed(phys, order, kind));
        }
        for &k in &keys {
            t.set(&a, &mut src, k).unwrap();
        }
        for &k in keys.iter().step_by(3) {
            t.clear(&a, k).unwrap();
        }
        let mut walked = alloc::vec::Vec::new();
        t.walk(&a, &mut |p| walked.push(p), &mut |_| {}).unwrap();
        assert!(walked.len() > 100, "{} pages", walked.len());
        assert_eq!(t.pages_in_walk_order(), walked);
        assert_eq!(t.page_count(), walked.len());
        t.destroy(&a, &mut src);
        assert_eq!(src.in_use, 0);
    }

    #[test]
    fn range_query_finds_exactly_the_set_keys() {
        let (a, mut src) = setup();
        let mut t = Tree::new(&a, &mut src).unwrap();
        let k = encode(0x4123_4000, 0);
        t.set(&a, &mut src, k).unwrap();
        assert!(t.any_in_range(&a, k, 1).unwrap());
        assert!(t.any_in_range(&a, k - 100, 101).unwrap());
        assert!(!t.any_in_range(&a, k - 100, 100).unwrap());
        assert!(!t.any_in_range(&a, k + 1, 1 << 40).unwrap());
        assert!(t.any_in_range(&a, 0, 1 << KEY_BITS).unwrap());
    }

    #[test]
    fn running_out_of_pages_is_an_error() {
        let a = Arena::new(0x4000_0000, 3 * PAGE_SIZE);
        let mut src = BumpPages::new(0x4000_0000, 0x4000_3000);
        let mut t = Tree::new(&a, &mut src).unwrap();
        assert_eq!(
            t.set(&a, &mut src, encode(0x4000_0000, 0)),
            Err(TreeError::OutOfMemory)
        );
    }
}
