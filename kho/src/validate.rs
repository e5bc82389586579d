//! Validation of a previous image's handover data, before anything of it is used.
//!
//! Owns the checks of `docs/abi.md` "Validation" and nothing else: it reads the KHO FDT, the
//! scratch array and the tree (or v1's two trees) through `PhysMem`, writes nothing and
//! reserves nothing, and returns either the exact block set or one error naming the failed
//! check and the address. The walk's leaf decoder (`leaf`) and the sort of the runs it yields
//! (`merge`) are modules of their own.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::fdt::{Fdt, FdtError};
use crate::format::{
    read_kho_fdt, AbiVersion, ClientEntry, FormatError, KhoFdtView, MetaCrc, COMPATIBLE_LINUX_V4,
    COMPATIBLE_V1, MAX_KHO_FDT_SIZE,
};
use crate::key::{decode, BlockType, KeyError};
use crate::leaf::{for_each_key, Decoder};
use crate::merge::Sorted;
use crate::phys::{next_nonzero_word, read_bytes, read_u64, PageBuf, PhysMem, ZERO_PAGE};
use crate::sweep::Sweep;
use crate::tree::{LEAF_BITS, TABLE_BITS, TABLE_LEVELS};
use mm::{PhysAddr, PhysRange, PAGE_SIZE};

/// Most tree pages a handover may have (4 GiB of metadata): bounds the walk.
pub const MAX_TREE_PAGES: usize = 1 << 20;
/// Most scratch areas the scratch array may list.
pub const MAX_SCRATCH_AREAS: usize = 64;

/// Which tree a node belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TreeName {
    /// `preserved-memory-map`: every block (v2: the only tree, typed keys).
    Main,
    /// v1's `baton,split-memory-map`: SPLIT blocks.
    Split,
}

/// One preserved block of the previous image. `repr(C)`: two words, `phys` then `order`
/// and `kind` (validation writes blocks as words: `kho::merge`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct Block {
    /// Physical address, aligned to the block size.
    pub phys: u64,
    /// log2 of the number of pages.
    pub order: u32,
    /// How its pages held references.
    pub kind: BlockType,
}

impl Block {
    /// The bytes the block covers.
    pub fn region(&self) -> PhysRange {
        PhysRange::new(PhysAddr(self.phys), PAGE_SIZE << self.order)
    }
}

/// Pages of a list of blocks and how many of them are SPLIT.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockTotals {
    /// Pages of every block.
    pub pages: u64,
    /// Blocks of type SPLIT.
    pub split: usize,
}

impl BlockTotals {
    /// Adds `count` blocks of `order` and `kind`.
    pub(crate) fn add(&mut self, count: usize, order: u32, kind: BlockType) {
        self.pages += (count as u64) << order;
        if kind == BlockType::Split {
            self.split += count;
        }
    }

    /// The totals of `blocks`, one by one (what the counts kept on the way must equal).
    pub fn of(blocks: &[Block]) -> BlockTotals {
        let mut t = BlockTotals::default();
        for b in blocks {
            t.add(1, b.order, b.kind);
        }
        t
    }
}

/// Why the handover data is ignored. Each variant names one check and carries the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// `/chosen/linux,kho-fdt` or `linux,kho-scratch` is malformed (wrong length, zero size).
    ChosenProperty { prop: &'static str, len: usize },
    /// The KHO FDT's range is empty, too large, or not RAM.
    KhoFdtRange { phys: u64, size: u64 },
    /// The KHO FDT overlaps scratch or a range that must not be touched.
    KhoFdtOverlaps { phys: u64, with: PhysRange },
    /// The KHO FDT is not a well-formed FDT.
    KhoFdt { phys: u64, err: FdtError },
    /// The KHO FDT's content is not this format.
    Format { phys: u64, err: FormatError },
    /// The scratch array is malformed, not RAM, or lists an unusable area.
    ScratchArray { phys: u64, size: u64 },
    /// A scratch area is empty, misaligned, not RAM, or overlaps another.
    ScratchArea { area: PhysRange },
    /// A tree node address is not page aligned.
    NodeMisaligned {
        tree: TreeName,
        level: u32,
        phys: u64,
    },
    /// A tree node is not inside RAM.
    NodeOutsideRam {
        tree: TreeName,
        level: u32,
        phys: u64,
    },
    /// A tree node lies in scratch or in a range that must not be touched.
    NodeOverlaps {
        tree: TreeName,
        level: u32,
        phys: u64,
        with: PhysRange,
    },
    /// A tree node is reachable twice (a shared node or a cycle).
    NodeReachableTwice {
        tree: TreeName,
        level: u32,
        phys: u64,
    },
    /// More tree nodes than `MAX_TREE_PAGES`.
    TooManyNodes { phys: u64 },
    /// The metadata checksum does not match.
    Checksum { stored: u32, computed: u32 },
    /// A key is not well formed.
    BadKey { tree: TreeName, err: KeyError },
    /// A block is not inside one RAM range.
    BlockOutsideRam { phys: u64, order: u32 },
    /// A block overlaps scratch, a tree node, or a range that must not be touched.
    BlockOverlaps {
        phys: u64,
        order: u32,
        with: PhysRange,
    },
    /// Two blocks overlap.
    BlocksOverlap {
        phys: u64,
        order: u32,
        other: u64,
        other_order: u32,
    },
    /// v1: a key of the split tree is not in the main tree.
    SplitKeyNotPreserved { phys: u64, order: u32 },
    /// A client's blob is empty or not covered by preserved blocks.
    ClientNotPreserved { name: String, phys: u64, size: u64 },
    /// `kho-v4`: the KHO FDT's pages are not covered by preserved blocks (Linux preserves
    /// the page it writes its KHO FDT in; without it the next kernel would free it).
    KhoFdtNotPreserved { phys: u64, size: u64 },
}

impl fmt::Display for TreeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TreeName::Main => "main",
            TreeName::Split => "split",
        })
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::BadCompatible => {
                write!(
                    f,
                    "root compatible is none of \"{}\", \"{COMPATIBLE_V1}\", \"{COMPATIBLE_LINUX_V4}\": unknown handover format",
                    crate::format::COMPATIBLE
                )
            }
            FormatError::MissingProperty { node, prop } => write!(f, "node {node} lacks {prop}"),
            FormatError::BadPropertySize { node, prop, len } => {
                write!(f, "{node}/{prop} is {len} bytes, not 8")
            }
            FormatError::BadChecksumProperty { value } => {
                write!(f, "checksum property {value:#x} does not fit 32 bits")
            }
            FormatError::BadClientNode { node } => {
                write!(
                    f,
                    "client node \"{node}\" is badly named, repeated or has children"
                )
            }
        }
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RestoreError::*;
        write!(f, "handover ignored: ")?;
        match self {
            ChosenProperty { prop, len } => write!(f, "/chosen/{prop} malformed ({len} bytes)"),
            KhoFdtRange { phys, size } => {
                write!(
                    f,
                    "KHO FDT at {phys:#x} size {size:#x} is empty, too big or not RAM"
                )
            }
            KhoFdtOverlaps { phys, with } => write!(f, "KHO FDT at {phys:#x} overlaps {with}"),
            KhoFdt { phys, err } => write!(f, "KHO FDT at {phys:#x}: {err}"),
            Format { phys, err } => write!(f, "KHO FDT at {phys:#x}: {err}"),
            ScratchArray { phys, size } => {
                write!(
                    f,
                    "scratch array at {phys:#x} size {size:#x} is malformed or not RAM"
                )
            }
            ScratchArea { area } => write!(f, "scratch area {area} is unusable"),
            NodeMisaligned { tree, level, phys } => {
                write!(
                    f,
                    "{tree} tree level-{level} node {phys:#x} not page aligned"
                )
            }
            NodeOutsideRam { tree, level, phys } => {
                write!(f, "{tree} tree level-{level} node {phys:#x} outside RAM")
            }
            NodeOverlaps {
                tree,
                level,
                phys,
                with,
            } => {
                write!(
                    f,
                    "{tree} tree level-{level} node {phys:#x} overlaps {with}"
                )
            }
            NodeReachableTwice { tree, level, phys } => {
                write!(
                    f,
                    "{tree} tree level-{level} node {phys:#x} reachable twice"
                )
            }
            TooManyNodes { phys } => write!(f, "more than {MAX_TREE_PAGES} nodes at {phys:#x}"),
            Checksum { stored, computed } => {
                write!(
                    f,
                    "metadata CRC-32 {computed:#010x} != stored {stored:#010x}"
                )
            }
            BadKey { tree, err } => write!(f, "{tree} tree: {err}"),
            BlockOutsideRam { phys, order } => {
                write!(f, "block {phys:#x} order {order} outside RAM")
            }
            BlockOverlaps { phys, order, with } => {
                write!(f, "block {phys:#x} order {order} overlaps {with}")
            }
            BlocksOverlap {
                phys,
                order,
                other,
                other_order,
            } => write!(
                f,
                "block {phys:#x} order {order} overlaps block {other:#x} order {other_order}"
            ),
            SplitKeyNotPreserved { phys, order } => {
                write!(
                    f,
                    "split block {phys:#x} order {order} missing from the main tree"
                )
            }
            ClientNotPreserved { name, phys, size } => {
                write!(f, "client {name} blob {phys:#x}+{size:#x} not preserved")
            }
            KhoFdtNotPreserved { phys, size } => {
                write!(
                    f,
                    "{COMPATIBLE_LINUX_V4} KHO FDT at {phys:#x}+{size:#x} is not a preserved block"
                )
            }
        }
    }
}

/// What validation needs to know about this image.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Physical address and size of the KHO FDT (from `/chosen/linux,kho-fdt`).
    pub kho_fdt: PhysRange,
    /// RAM ranges.
    pub ram: &'a [PhysRange],
    /// Scratch areas (from the scratch array).
    pub scratch: &'a [PhysRange],
    /// Ranges nothing may overlap: the running image, the boot FDT, the scratch array, initrd.
    pub avoid: &'a [PhysRange],
}

/// A handover that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// Every block, sorted by address.
    pub blocks: Vec<Block>,
    /// Page-rounded ranges of the metadata (KHO FDT, tree nodes), sorted: reserved until
    /// restore is done, then returned to the allocator.
    pub metadata: Vec<PhysRange>,
    /// Client entries, in KHO FDT order.
    pub clients: Vec<ClientEntry>,
    /// Pages of `blocks` and how many are SPLIT (counted on the way, not by a pass over
    /// `blocks`).
    pub totals: BlockTotals,
}

fn in_ram(ram: &[PhysRange], r: &PhysRange) -> bool {
    !r.is_empty() && ram.iter().any(|m| m.contains_range(r))
}

fn first_overlap(lists: &[&[PhysRange]], r: &PhysRange) -> Option<PhysRange> {
    lists
        .iter()
        .flat_map(|l| l.iter())
        .find(|o| o.overlaps(r))
        .copied()
}

/// Parses and checks the scratch array (`docs/abi.md`, "Scratch array"). baton's formats:
/// every entry a non-empty area, the array outside every area. Linux's `kho-v4`
/// (`format.untyped_keys() && !format.is_baton()`): entries of size 0 are skipped (Linux
/// writes one per memory-less slot) and the array may lie inside an area (Linux places it,
/// like every kexec segment, in scratch).
pub fn parse_scratch_array<M: PhysMem + ?Sized>(
    mem: &M,
    ram: &[PhysRange],
    array: PhysRange,
    format: AbiVersion,
) -> Result<Vec<PhysRange>, RestoreError> {
    let linux = !format.is_baton();
    let bad = RestoreError::ScratchArray {
        phys: array.start.0,
        size: array.size(),
    };
    let n = (array.size() / 16) as usize;
    if !array.size().is_multiple_of(16)
        || n == 0
        || n > MAX_SCRATCH_AREAS
        || !array.start.is_aligned(8)
    {
        return Err(bad);
    }
    if !in_ram(ram, &array) {
        return Err(bad);
    }
    let mut areas: Vec<PhysRange> = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let a = read_u64(mem, array.start.0 + 16 * i).ok_or(bad.clone())?;
        let s = read_u64(mem, array.start.0 + 16 * i + 8).ok_or(bad.clone())?;
        let area = PhysRange {
            start: PhysAddr(a),
            end: PhysAddr(a.wrapping_add(s)),
        };
        if linux && s == 0 {
            continue;
        }
        let array_ok = if linux {
            !area.overlaps(&array) || area.contains_range(&array)
        } else {
            !area.overlaps(&array)
        };
        if s == 0
            || a % PAGE_SIZE != 0
            || s % PAGE_SIZE != 0
            || a.checked_add(s).is_none()
            || !in_ram(ram, &area)
            || !array_ok
            || areas.iter().any(|o| o.overlaps(&area))
        {
            return Err(RestoreError::ScratchArea { area });
        }
        areas.push(area);
    }
    if areas.is_empty() {
        return Err(bad);
    }
    Ok(areas)
}

struct Walker<'m, 'i, M: PhysMem + ?Sized> {
    mem: &'m M,
    inp: &'i Inputs<'i>,
    fdt_pages: PhysRange,
    seen: BTreeSet<u64>,
    crc: MetaCrc,
}

impl<M: PhysMem + ?Sized> Walker<'_, '_, M> {
    /// Checks a node address, then reads the node into `page`, adds it to the checksum and
    /// returns the page's non-zero summary (`nonzero_groups`, computed in the same pass).
    fn check_node(
        &mut self,
        tree: TreeName,
        level: u32,
        phys: u64,
        page: &mut PageBuf,
    ) -> Result<u64, RestoreError> {
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(RestoreError::NodeMisaligned { tree, level, phys });
        }
        let r = PhysRange::new(PhysAddr(phys), PAGE_SIZE);
        if !in_ram(self.inp.ram, &r) || self.mem.ptr(phys, PAGE_SIZE as usize).is_none() {
            return Err(RestoreError::NodeOutsideRam { tree, level, phys });
        }
        let fdt = [self.fdt_pages];
        if let Some(with) = first_overlap(&[self.inp.scratch, self.inp.avoid, &fdt], &r) {
            return Err(RestoreError::NodeOverlaps {
                tree,
                level,
                phys,
                with,
            });
        }
        if self.seen.len() >= MAX_TREE_PAGES {
            return Err(RestoreError::TooManyNodes { phys });
        }
        if !self.seen.insert(phys) {
            return Err(RestoreError::NodeReachableTwice { tree, level, phys });
        }
        let Some(groups) = self.crc.read_page(self.mem, phys, page) else {
            return Err(RestoreError::NodeOutsideRam { tree, level, phys });
        };
        // kho-inspect reads these records to list the nodes per tree and level: keep the
        // wording in step with `kho-inspect`'s `NODE_RECORD` parser.
        log::trace!("kho: {tree} tree level-{level} node {phys:#x}");
        Ok(groups)
    }

    /// Walks one tree iteratively (depth-first, index order), handing each leaf to `leaf`
    /// with its key prefix (key bits 15 and up) and its non-zero summary.
    fn walk(
        &mut self,
        tree: TreeName,
        root: u64,
        leaf: &mut dyn FnMut(u64, &PageBuf, u64),
    ) -> Result<(), RestoreError> {
        const LEVELS: usize = TABLE_LEVELS as usize + 1;
        // The node being walked at each level (leaves are level 0), and its summary.
        let mut bufs: Vec<PageBuf> = alloc::vec![ZERO_PAGE; LEVELS];
        let mut groups = [0u64; LEVELS];
        let top = TABLE_LEVELS as usize;
        groups[top] = self.check_node(tree, TABLE_LEVELS, root, &mut bufs[top])?;
        // Stack of (level, next index, key prefix); bufs[level] holds the node.
        let mut stack: Vec<(u32, usize, u64)> = Vec::with_capacity(LEVELS);
        stack.push((TABLE_LEVELS, 0, 0));
        while let Some(top) = stack.last_mut() {
            let (level, from, prefix) = *top;
            let (lv, below) = (level as usize, level as usize - 1);
            let Some((idx, child)) = next_nonzero_word(&bufs[lv], groups[lv], from) else {
                stack.pop();
                continue;
            };
            top.1 = idx + 1;
            let child_level = level - 1;
            groups[below] = self.check_node(tree, child_level, child, &mut bufs[below])?;
            let p = prefix | ((idx as u64) << (LEAF_BITS + TABLE_BITS * (level - 1)));
            if child_level > 0 {
                stack.push((child_level, 0, p));
            } else {
                leaf(p, &bufs[0], groups[0]);
            }
        }
        Ok(())
    }
}

/// Checks the whole handover described by `inp` and returns its blocks, or the first failed
/// check. Reads memory only through `mem`; writes nothing. Reads both formats
/// ([`validate_versioned`] says which one it was).
pub fn validate<M: PhysMem + ?Sized>(mem: &M, inp: &Inputs<'_>) -> Result<Validated, RestoreError> {
    validate_versioned(mem, inp).map(|(v, _)| v)
}

/// [`validate`], and the format the handover was in: `baton,kho-typed-v2` (one tree of typed
/// keys) or the previous release's `baton,kho-typed-v1` (two trees).
pub fn validate_versioned<M: PhysMem + ?Sized>(
    mem: &M,
    inp: &Inputs<'_>,
) -> Result<(Validated, AbiVersion), RestoreError> {
    let view = read_view(mem, inp)?;
    let (main, split_keys, nodes) = walk_trees(mem, inp, &view)?;
    let Sorted {
        mut blocks,
        uniform,
        mut totals,
    } = main.finish()?;
    check_placement(inp, &blocks, &uniform, &nodes, !view.version.is_baton())?;
    if view.version == AbiVersion::V1 {
        totals.split += mark_v1_split(&mut blocks, split_keys)?;
    }
    check_clients(inp, &view, &blocks)?;
    let mut metadata = nodes;
    if view.version.is_baton() {
        // baton's KHO FDT is metadata; Linux's is a preserved block of its own.
        metadata.push(inp.kho_fdt.outer_pages());
    }
    metadata.sort_unstable();
    Ok((
        Validated {
            blocks,
            metadata,
            clients: view.clients,
            totals,
        },
        view.version,
    ))
}

/// Trees: walks the tree of every block (and v1's split tree) with every node check, and
/// checks the metadata checksum (baton's formats). Returns the blocks of the tree of every
/// block as decoded during the walk (a bad key is reported only after every node check and
/// the checksum), v1's raw split keys, and the tree nodes, sorted.
fn walk_trees<M: PhysMem + ?Sized>(
    mem: &M,
    inp: &Inputs<'_>,
    view: &KhoFdtView,
) -> Result<(Decoder, Vec<u64>, Vec<PhysRange>), RestoreError> {
    let mut w = Walker {
        mem,
        inp,
        fdt_pages: inp.kho_fdt.outer_pages(),
        seen: BTreeSet::new(),
        crc: MetaCrc::for_view(view),
    };
    let mut main = Decoder::new(view.version);
    let mut split_keys = Vec::new();
    w.walk(
        TreeName::Main,
        view.main_root,
        &mut |prefix, leaf, groups| main.leaf(prefix, leaf, groups),
    )?;
    if let Some(split_root) = view.split_root {
        w.walk(TreeName::Split, split_root, &mut |prefix, leaf, groups| {
            for_each_key(prefix, leaf, groups, |k| split_keys.push(k))
        })?;
    }
    let Walker { seen, mut crc, .. } = w;
    for c in &view.clients {
        crc.client(c);
    }
    let computed = crc.finish();
    if view.version.is_baton() && computed != view.crc {
        return Err(RestoreError::Checksum {
            stored: view.crc,
            computed,
        });
    }
    let nodes = seen
        .iter()
        .map(|&p| PhysRange::new(PhysAddr(p), PAGE_SIZE))
        .collect();
    Ok((main, split_keys, nodes))
}

/// Placement: every block (sorted) inside one RAM range, clear of scratch, the ranges to
/// avoid, the KHO FDT (baton's formats) and every tree node, and clear of its neighbours.
/// A placement failure is reported before any overlap between blocks, wherever they are.
fn check_placement(
    inp: &Inputs<'_>,
    blocks: &[Block],
    uniform: &[Range<usize>],
    nodes: &[PhysRange],
    linux: bool,
) -> Result<(), RestoreError> {
    // In address order. A block the sweeps clear gives a window [its start, `hi`) that every
    // later block starting at or after its end and ending by `hi` is cleared by too (the
    // sweeps' bounds); such a block costs two comparisons. Any other block goes through the
    // sweeps, and one they do not clear through the exact checks, which name the failure.
    // `lo` is the end of the block before: sorted blocks overlap iff one starts before the
    // end of the one before it (aligned blocks nest or are disjoint), which includes one
    // block recorded with both types (v2): the same region twice.
    let fdt_pages = [inp.kho_fdt.outer_pages()];
    // Linux's KHO FDT page is a preserved block of its own; baton's is metadata.
    let fdt: &[PhysRange] = if linux { &[] } else { &fdt_pages };
    let mut ram = Sweep::new(&[inp.ram]);
    let mut avoid = Sweep::new(&[inp.scratch, inp.avoid, fdt]);
    let mut tree_nodes = Sweep::new(&[nodes]);
    let (mut lo, mut hi) = (0u64, 0u64);
    let mut overlap = None;
    let (mut i, mut u) = (0, 0);
    loop {
        i = pass_windows(blocks, uniform, &mut u, i, &mut lo, hi);
        let Some(b) = blocks.get(i) else {
            break;
        };
        let end = b.phys.checked_add(PAGE_SIZE << b.order);
        let r = b.region();
        let swept = end.and_then(|_| {
            let in_ram = ram.within_until(&r)?;
            let clear = avoid.clear_until(&r)?;
            Some(in_ram.min(clear).min(tree_nodes.clear_until(&r)?))
        });
        match swept {
            Some(bound) => hi = bound,
            None => {
                check_block_exactly(inp, b, nodes, linux)?;
                hi = 0;
            }
        }
        let prev = i.checked_sub(1).and_then(|j| blocks.get(j));
        if let Some(p) = prev.filter(|_| overlap.is_none() && b.phys < lo) {
            overlap = Some(RestoreError::BlocksOverlap {
                phys: b.phys,
                order: b.order,
                other: p.phys,
                other_order: p.order,
            });
        }
        // Placed, so its end did not wrap.
        lo = r.end.0;
        i += 1;
    }
    overlap.map_or(Ok(()), Err)
}

/// The index of the first block from `i` on that is not in the window (see [`pass_window`]):
/// a uniform stretch (`merge::Sorted`) is passed by a binary search of its ends, any other
/// block one by one. `u` is the first stretch that does not end at or before `i`.
fn pass_windows(
    blocks: &[Block],
    uniform: &[Range<usize>],
    u: &mut usize,
    mut i: usize,
    lo: &mut u64,
    hi: u64,
) -> usize {
    loop {
        while uniform.get(*u).is_some_and(|r| r.end <= i) {
            *u += 1;
        }
        let (upto, stretch) = match uniform.get(*u) {
            Some(r) if r.start <= i => (r.end, true),
            Some(r) => (r.start, false),
            None => (blocks.len(), false),
        };
        let Some(part) = blocks.get(i..upto).filter(|p| !p.is_empty()) else {
            return i;
        };
        let passed = if stretch {
            pass_stretch(part, lo, hi)
        } else {
            pass_window(part, lo, hi)
        };
        i += passed;
        if passed < part.len() {
            return i;
        }
    }
}

/// [`pass_window`] of a uniform stretch: blocks of one order at increasing addresses, so
/// each starts at or after the end of the one before and the ends increase (only the
/// stretch's last block may wrap). The first start is tested, then the ends by a binary
/// search.
fn pass_stretch(stretch: &[Block], lo: &mut u64, hi: u64) -> usize {
    if stretch.first().is_none_or(|b| b.phys < *lo) {
        return 0;
    }
    let end = |b: &Block| b.phys.checked_add(PAGE_SIZE << b.order);
    let n = stretch.partition_point(|b| end(b).is_some_and(|e| e <= hi));
    if let Some(e) = n.checked_sub(1).and_then(|k| stretch.get(k)).and_then(end) {
        *lo = e;
    }
    n
}

/// How many blocks at the front of `blocks` lie in the window: each starting at or after
/// the end of the one before it (the first at or after `*lo`) and ending by `hi`, without
/// wrapping. `*lo` becomes the end of the last of them. Two comparisons per block.
#[inline]
fn pass_window(blocks: &[Block], lo: &mut u64, hi: u64) -> usize {
    let mut n = 0;
    for b in blocks {
        match b.phys.checked_add(PAGE_SIZE << b.order) {
            Some(end) if b.phys >= *lo && end <= hi => *lo = end,
            _ => break,
        }
        n += 1;
    }
    n
}

/// The exact placement checks of one block, naming the first that fails.
fn check_block_exactly(
    inp: &Inputs<'_>,
    b: &Block,
    nodes: &[PhysRange],
    linux: bool,
) -> Result<(), RestoreError> {
    let r = b.region();
    if b.phys.checked_add(PAGE_SIZE << b.order).is_none() || !in_ram(inp.ram, &r) {
        return Err(RestoreError::BlockOutsideRam {
            phys: b.phys,
            order: b.order,
        });
    }
    // Linux's KHO FDT page is a preserved block of its own; baton's is metadata.
    let fdt_pages = [inp.kho_fdt.outer_pages()];
    let fdt: &[PhysRange] = if linux { &[] } else { &fdt_pages };
    if let Some(with) = first_overlap(&[inp.scratch, inp.avoid, fdt], &r) {
        return Err(RestoreError::BlockOverlaps {
            phys: b.phys,
            order: b.order,
            with,
        });
    }
    // Tree nodes are sorted: the first node at or after the block start decides.
    let i = nodes.partition_point(|n| n.end <= r.start);
    if let Some(n) = nodes.get(i).filter(|n| n.overlaps(&r)) {
        return Err(RestoreError::BlockOverlaps {
            phys: b.phys,
            order: b.order,
            with: *n,
        });
    }
    Ok(())
}

/// Clients: every client blob covered by preserved blocks, and in `kho-v4` the KHO FDT's
/// own pages too.
fn check_clients(
    inp: &Inputs<'_>,
    view: &KhoFdtView,
    blocks: &[Block],
) -> Result<(), RestoreError> {
    for c in &view.clients {
        if !covered(blocks, c.phys, c.size) {
            return Err(RestoreError::ClientNotPreserved {
                name: c.name.clone(),
                phys: c.phys,
                size: c.size,
            });
        }
    }
    let fdt_pages = inp.kho_fdt.outer_pages();
    if !view.version.is_baton() && !covered(blocks, fdt_pages.start.0, fdt_pages.size()) {
        return Err(RestoreError::KhoFdtNotPreserved {
            phys: inp.kho_fdt.start.0,
            size: inp.kho_fdt.size(),
        });
    }
    Ok(())
}

/// Reads the KHO FDT named by `inp` (range checked: non-empty, at most
/// [`MAX_KHO_FDT_SIZE`], RAM, clear of scratch and `avoid`) into its properties.
fn read_view<M: PhysMem + ?Sized>(mem: &M, inp: &Inputs<'_>) -> Result<KhoFdtView, RestoreError> {
    let f = inp.kho_fdt;
    if f.size() == 0 || f.size() > MAX_KHO_FDT_SIZE || !in_ram(inp.ram, &f) {
        return Err(RestoreError::KhoFdtRange {
            phys: f.start.0,
            size: f.size(),
        });
    }
    if let Some(with) = first_overlap(&[inp.scratch, inp.avoid], &f) {
        return Err(RestoreError::KhoFdtOverlaps {
            phys: f.start.0,
            with,
        });
    }
    let bytes = read_bytes(mem, f.start.0, f.size() as usize).ok_or(RestoreError::KhoFdtRange {
        phys: f.start.0,
        size: f.size(),
    })?;
    let fdt = Fdt::parse(&bytes).map_err(|err| RestoreError::KhoFdt {
        phys: f.start.0,
        err,
    })?;
    read_kho_fdt(&fdt).map_err(|err| RestoreError::Format {
        phys: f.start.0,
        err,
    })
}

/// The format of the KHO FDT at `kho_fdt` (fully parsed and checked as [`validate`] does),
/// before the scratch areas are known: what the scratch array's rules depend on.
pub fn peek_format<M: PhysMem + ?Sized>(
    mem: &M,
    ram: &[PhysRange],
    kho_fdt: PhysRange,
) -> Result<AbiVersion, RestoreError> {
    let inp = Inputs {
        kho_fdt,
        ram,
        scratch: &[],
        avoid: &[],
    };
    read_view(mem, &inp).map(|v| v.version)
}

/// v1: every SPLIT key must name a MAIN block, which becomes SPLIT. Returns how many
/// blocks became SPLIT (those that were CONTIG before).
fn mark_v1_split(blocks: &mut [Block], split_keys: Vec<u64>) -> Result<usize, RestoreError> {
    let mut marked = 0;
    // Every SPLIT key must name a MAIN block. The walk yields each order's keys in address
    // order, so a cursor into the sorted blocks only moves forward within a run of keys
    // (O(n) in all); a key below the last one starts a run and is found by binary search.
    let mut i = 0;
    for &k in &split_keys {
        let (phys, order) = decode(k).map_err(|err| RestoreError::BadKey {
            tree: TreeName::Split,
            err,
        })?;
        if i > 0 && blocks[i - 1].phys >= phys {
            i = blocks.partition_point(|b| b.phys < phys);
        }
        while blocks.get(i).is_some_and(|b| b.phys < phys) {
            i += 1;
        }
        match blocks.get_mut(i) {
            Some(b) if b.phys == phys && b.order == order => {
                marked += usize::from(b.kind == BlockType::Contig);
                b.kind = BlockType::Split;
            }
            _ => return Err(RestoreError::SplitKeyNotPreserved { phys, order }),
        }
        i += 1;
    }
    Ok(marked)
}

/// True if `[phys, phys + size)` is non-empty and covered by consecutive blocks of `sorted`.
pub(crate) fn covered(sorted: &[Block], phys: u64, size: u64) -> bool {
    let Some(end) = phys.checked_add(size).filter(|_| size > 0) else {
        return false;
    };
    let mut at = phys;
    let mut i = sorted.partition_point(|b| b.region().end <= PhysAddr(phys));
    while at < end {
        match sorted.get(i) {
            Some(b) if b.phys <= at && at < b.region().end.0 => at = b.region().end.0,
            _ => return false,
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{encode, encode_typed};
    use crate::tree::{BumpPages, Tree};
    use crate::Arena;
    use proptest::prelude::*;

    const ARENA: u64 = 0x4000_0000;
    const ARENA_PAGES: u64 = 256;
    /// The RAM range most blocks fall in, small enough for blocks to collide.
    const HIGH: u64 = 0x1_0000_0000;
    const HIGH_SIZE: u64 = 1 << 24;

    /// What validation did before the walk decoded its leaves: every key decoded in walk
    /// order, a full sort, the exact placement checks of every block, then neighbours.
    fn reference(
        keys: &[u64],
        version: AbiVersion,
        inp: &Inputs<'_>,
        nodes: &[PhysRange],
    ) -> Result<Vec<Block>, RestoreError> {
        let d = Decoder::new(version);
        let mut blocks = Vec::new();
        for &k in keys {
            let (phys, order, kind) = d.decode(k).map_err(|err| RestoreError::BadKey {
                tree: TreeName::Main,
                err,
            })?;
            blocks.push(Block { phys, order, kind });
        }
        blocks.sort();
        let linux = !version.is_baton();
        for b in &blocks {
            check_block_exactly(inp, b, nodes, linux)?;
        }
        for pair in blocks.windows(2) {
            if pair[0].region().overlaps(&pair[1].region()) {
                return Err(RestoreError::BlocksOverlap {
                    phys: pair[1].phys,
                    order: pair[1].order,
                    other: pair[0].phys,
                    other_order: pair[0].order,
                });
            }
        }
        Ok(blocks)
    }

    /// One key. Tame: a block of order 0..=8 and either type inside the RAM at `HIGH` (it
    /// may still meet scratch, a range to avoid or another block). Wild: a block in the
    /// arena (on tree nodes, the KHO FDT, a range to avoid), reaching past RAM, or a key
    /// that is not well formed in the format.
    fn key_strategy(typed: bool, wild: bool) -> impl Strategy<Value = u64> {
        (0u64..4096, 0u32..9, any::<bool>(), 0u8..6).prop_map(move |(slot, order, split, how)| {
            let size = PAGE_SIZE << order;
            let how = if wild { how } else { 5 };
            let phys = match how {
                0 | 1 => ARENA + (slot % ARENA_PAGES) * PAGE_SIZE,
                2 => HIGH + HIGH_SIZE - size + (slot % 2) * size,
                _ => HIGH + (slot % (HIGH_SIZE / size)) * size,
            };
            let kind = if split && typed {
                BlockType::Split
            } else {
                BlockType::Contig
            };
            match how {
                3 => encode(phys, order) | 1 << 55,
                4 if typed => 1 << 21 | slot,
                4 => encode(phys, order) | 1 << 59,
                _ => encode_typed(phys, order, kind),
            }
        })
    }

    fn keys_strategy(typed: bool) -> impl Strategy<Value = Vec<u64>> {
        let tame = proptest::collection::vec(key_strategy(typed, false), 0..60);
        let wild = proptest::collection::vec(key_strategy(typed, true), 0..3);
        (tame, wild).prop_map(|(mut t, w)| {
            t.extend(w);
            t
        })
    }

    fn check_against_reference(keys: &[u64], version: AbiVersion) {
        let arena = Arena::new(ARENA, ARENA_PAGES * PAGE_SIZE);
        // Tree pages from the first half of the arena; the KHO FDT and the ranges to avoid
        // in the second.
        let mut src = BumpPages::new(ARENA, ARENA + ARENA_PAGES / 2 * PAGE_SIZE);
        let mut tree = Tree::new(&arena, &mut src).unwrap();
        for &k in keys {
            tree.set(&arena, &mut src, k).unwrap();
        }
        let (mut walked, mut crc) = (Vec::new(), MetaCrc::new(tree.root()));
        let mut read = |p: u64, buf: &mut PageBuf| crc.read_page(&arena, p, buf).is_some();
        tree.walk_with(&mut read, Some(&mut |k| walked.push(k)))
            .unwrap();
        let view = KhoFdtView {
            version,
            main_root: tree.root(),
            split_root: None,
            crc: if version.is_baton() { crc.finish() } else { 0 },
            clients: Vec::new(),
        };
        let half = ARENA + ARENA_PAGES / 2 * PAGE_SIZE;
        let ram = [
            PhysRange::new(PhysAddr(ARENA), ARENA_PAGES * PAGE_SIZE),
            PhysRange::new(PhysAddr(HIGH), HIGH_SIZE),
        ];
        let scratch = [PhysRange::new(PhysAddr(HIGH + (3 << 20)), 1 << 20)];
        let avoid = [
            PhysRange::new(PhysAddr(half + 8 * PAGE_SIZE), 2 * PAGE_SIZE),
            PhysRange::new(PhysAddr(HIGH + (9 << 20) + 0x3000), PAGE_SIZE),
        ];
        let inp = Inputs {
            kho_fdt: PhysRange::new(PhysAddr(half), 0x1800),
            ram: &ram,
            scratch: &scratch,
            avoid: &avoid,
        };
        let got = walk_trees(&arena, &inp, &view).and_then(|(main, _, nodes)| {
            let Sorted {
                blocks,
                uniform,
                totals,
            } = main.finish()?;
            // The counts kept leaf by leaf are those of the blocks.
            assert_eq!(totals, BlockTotals::of(&blocks));
            check_placement(&inp, &blocks, &uniform, &nodes, !version.is_baton())?;
            Ok((blocks, nodes))
        });
        let mut nodes = Vec::new();
        tree.pages(&arena, &mut |p| {
            nodes.push(PhysRange::new(PhysAddr(p), PAGE_SIZE))
        })
        .unwrap();
        nodes.sort_unstable();
        let want = reference(&walked, version, &inp, &nodes).map(|b| (b, nodes));
        assert_eq!(got, want, "{version} keys {keys:#x?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn decoding_in_the_walk_agrees_with_decode_sort_and_exact_checks(
            typed in keys_strategy(true),
            untyped in keys_strategy(false),
        ) {
            check_against_reference(&typed, AbiVersion::V2);
            check_against_reference(&untyped, AbiVersion::V1);
            check_against_reference(&untyped, AbiVersion::LinuxV4);
        }
    }

    proptest! {
        #[test]
        fn a_stretch_passes_the_window_like_block_by_block(
            order in 0u32..4,
            pages in proptest::collection::btree_set(0u64..512, 0..40),
            lo in 0u64..600,
            hi in 0u64..600,
            top in any::<bool>(),
        ) {
            // Blocks of one order at increasing addresses (a uniform stretch), possibly
            // ending at the top of the address space (the last end wraps).
            let size = PAGE_SIZE << order;
            let base = if top { 0u64.wrapping_sub(512 * size) } else { 0 };
            let stretch: Vec<Block> = pages
                .iter()
                .map(|&p| Block { phys: base.wrapping_add(p * size), order, kind: BlockType::Contig })
                .collect();
            let (lo, hi) = (base.wrapping_add(lo * PAGE_SIZE), base.wrapping_add(hi * size));
            let (mut lo_a, mut lo_b) = (lo, lo);
            prop_assert_eq!(pass_stretch(&stretch, &mut lo_a, hi), pass_window(&stretch, &mut lo_b, hi));
            prop_assert_eq!(lo_a, lo_b);
        }
    }

    #[test]
    fn dense_and_sparse_leaves_of_many_runs_decode_sorted() {
        // Whole words of order-0 keys (all 64 bits set), a sparse order-0 leaf, and blocks of
        // other orders and both types between them: several runs to merge.
        let mut keys: Vec<u64> = (0..256)
            .map(|i| encode_typed(HIGH + (1 << 20) + i * PAGE_SIZE, 0, BlockType::Contig))
            .collect();
        keys.extend((0..40).map(|i| encode(HIGH + (6 << 20) + 2 * i * PAGE_SIZE, 0)));
        keys.extend((0..8).map(|i| encode_typed(HIGH + (i << 21), 9, BlockType::Split)));
        keys.retain(|&k| k != encode_typed(HIGH + (2 << 21), 9, BlockType::Split));
        keys.push(encode_typed(HIGH + (12 << 20), 4, BlockType::Split));
        check_against_reference(&keys, AbiVersion::V2);
    }
}
