//! The one FDT walk: header checks, then one strict pass over the structure block
//! (`baton_fdt::check_tree_visit`) that feeds every node and property into a [`BootInfo`].
//!
//! Owns no memory: it borrows the FDT bytes and fills fixed-capacity lists. Every check on
//! untrusted input returns a [`BootInfoError`] naming the check and the offset or value: a
//! malformed tree is a `baton_fdt::FdtError` (the one vocabulary, shared with kho's reader),
//! content baton cannot use is one of the other variants. Nothing here panics or indexes
//! past the buffer (the strict walk bounds every token and value by the structure block).
//!
//! Why not kho's reader (`baton_fdt::Fdt`): this walk runs before the heap exists (it finds
//! the RAM the heap will come from), so it allocates nothing; that reader builds node
//! tables on the heap. Both check the header with `baton_fdt::check_header`, and this walk
//! is `baton_fdt::check_tree`'s (that reader's rules, allocation-free), so every tree the
//! boot accepts is one the handover's rewrite can read; a malformed tree is refused with
//! that check's error before anything this walk found counts. The `/chosen`
//! handover properties are only recorded here, raw, and decoded by kho
//! (`kho::bootfdt::decode_handover`).

use arch::PsciMethod;
use baton_fdt::{FdtError, Header, Visit};
use mm::{PhysAddr, PhysRange};

use crate::boards::{BoardKind, BoardSource};
use crate::bootinfo::{BootInfo, ConsoleInfo, RangeIssue, RangeList, RangeWarning, TimerInfo};

pub use baton_fdt::{FDT_HEADER_SIZE as HEADER_SIZE, FDT_MAGIC};
/// Largest FDT baton accepts (the Pi 4 tree is ~55 KiB).
pub const MAX_FDT_SIZE: u32 = 2 << 20;
/// Deepest node nesting baton accepts.
pub const MAX_DEPTH: usize = 16;
/// Most `/memreserve/` entries read before declaring the map unterminated.
pub const MAX_MEMRESERVE: usize = 64;

/// Why the boot FDT gives no usable [`BootInfo`]: a malformed tree (the shared
/// [`FdtError`] vocabulary of `baton_fdt`, the same names and messages kho's reader uses),
/// or a well-formed tree whose content baton cannot use.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The tree itself is malformed.
    Fdt(FdtError),
    /// The FDT is not 4-byte aligned in memory.
    Misaligned { addr: u64 },
    /// `#address-cells`/`#size-cells` is above 4 or has the wrong length.
    BadCells { offset: usize, value: u32 },
    /// A property has a length its format does not allow.
    BadPropLength { prop: &'static str, len: usize },
    /// A fixed-capacity list is full.
    TooMany { what: &'static str },
    /// No `/memory` node gives any RAM.
    NoMemory,
}

impl From<FdtError> for BootInfoError {
    fn from(e: FdtError) -> Self {
        BootInfoError::Fdt(e)
    }
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use BootInfoError::*;
        match *self {
            Fdt(e) => write!(f, "{e}"),
            Misaligned { addr } => write!(f, "FDT at {addr:#x} is not 4-byte aligned"),
            BadCells { offset, value } => {
                write!(
                    f,
                    "#address-cells/#size-cells {value} at {offset:#x} is invalid"
                )
            }
            BadPropLength { prop, len } => write!(f, "property {prop} has bad length {len}"),
            TooMany { what } => write!(f, "too many {what} for baton's fixed tables"),
            NoMemory => write!(f, "no /memory node describes any RAM"),
        }
    }
}

fn be32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(w)
}

/// Reads `FDT_MAGIC` from the first word (for "is there an FDT at x0 at all").
pub fn has_magic(first_word: [u8; 4]) -> bool {
    u32::from_be_bytes(first_word) == FDT_MAGIC
}

/// Checks the 40-byte header (`hdr` holds at least [`HEADER_SIZE`] bytes) for a tree of at
/// most [`MAX_FDT_SIZE`] bytes: `baton_fdt::check_header`, the one header check.
pub fn check_header(hdr: &[u8]) -> Result<Header, BootInfoError> {
    Ok(baton_fdt::check_header(hdr, MAX_FDT_SIZE as usize)?)
}

/// One open node during the walk.
#[derive(Copy, Clone)]
struct Frame<'a> {
    name: &'a str,
    /// `#address-cells` / `#size-cells` for this node's children.
    addr_cells: u32,
    size_cells: u32,
    /// `ranges`: `None` if absent (children not translatable), empty for identity.
    ranges: Option<&'a [u8]>,
    reg: Option<&'a [u8]>,
    compatible: &'a [u8],
    device_type: &'a [u8],
    status_ok: bool,
    method: &'a [u8],
    clock_frequency: Option<u32>,
    props_done: bool,
    /// Inside `/cpus` (reg values are CPU ids, not addresses).
    in_cpus: bool,
    /// The root's `#address-cells` / `#size-cells` were read (the first one counts).
    root_cells_seen: (bool, bool),
}

impl<'a> Frame<'a> {
    fn new(name: &'a str, in_cpus: bool) -> Self {
        Self {
            name,
            addr_cells: 2,
            size_cells: 1,
            ranges: None,
            reg: None,
            compatible: &[],
            device_type: &[],
            status_ok: true,
            method: &[],
            clock_frequency: None,
            props_done: false,
            in_cpus,
            root_cells_seen: (false, false),
        }
    }
}

/// Strings of a NUL-separated string list.
fn strings(list: &[u8]) -> impl Iterator<Item = &str> {
    list.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(baton_fdt::utf8)
}

/// A single NUL-terminated string property.
fn prop_str(v: &[u8], offset: usize) -> Result<&str, BootInfoError> {
    let s = v.strip_suffix(&[0]).unwrap_or(v);
    let s = match s.iter().position(|&b| b == 0) {
        Some(i) => &s[..i],
        None => s,
    };
    baton_fdt::utf8(s).ok_or(BootInfoError::Fdt(FdtError::BadName { offset }))
}

/// A string property's bytes up to its first NUL, whatever they are.
fn prop_bytes(v: &[u8]) -> &[u8] {
    v.split(|&b| b == 0).next().unwrap_or(v)
}

/// Reads `cells` big-endian cells as one number; `None` if it needs more than 64 bits.
fn read_cells(b: &[u8], cells: u32) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..cells as usize {
        let w = be32(b, i * 4) as u64;
        if v >> 32 != 0 {
            return None;
        }
        v = (v << 32) | w;
    }
    Some(v)
}

/// Splits a `reg`-like property into (address, size) pairs.
fn pairs<'v>(
    v: &'v [u8],
    ac: u32,
    sc: u32,
    prop: &'static str,
) -> Result<impl Iterator<Item = Option<(u64, u64)>> + 'v, BootInfoError> {
    let stride = ((ac + sc) * 4) as usize;
    if stride == 0 || !v.len().is_multiple_of(stride) {
        return Err(BootInfoError::BadPropLength { prop, len: v.len() });
    }
    Ok(v.chunks_exact(stride).map(move |c| {
        let a = read_cells(c, ac)?;
        let s = read_cells(&c[(ac * 4) as usize..], sc)?;
        Some((a, s))
    }))
}

fn u32_or_u64(v: &[u8], prop: &'static str) -> Result<u64, BootInfoError> {
    match v.len() {
        4 => Ok(be32(v, 0) as u64),
        8 => Ok(((be32(v, 0) as u64) << 32) | be32(v, 4) as u64),
        len => Err(BootInfoError::BadPropLength { prop, len }),
    }
}

/// Maps `addr` on the bus of `stack[bus]` to a CPU address through every `ranges` above it.
fn translate(stack: &[Frame<'_>], mut bus: usize, mut addr: u64) -> Option<u64> {
    while bus > 0 {
        let f = &stack[bus];
        let ranges = f.ranges?;
        if !ranges.is_empty() {
            let (ca, pa, sc) = (f.addr_cells, stack[bus - 1].addr_cells, f.size_cells);
            let stride = ((ca + pa + sc) * 4) as usize;
            if stride == 0 || !ranges.len().is_multiple_of(stride) {
                return None;
            }
            addr = ranges.chunks_exact(stride).find_map(|e| {
                let child = read_cells(e, ca)?;
                let parent = read_cells(&e[(ca * 4) as usize..], pa)?;
                let size = read_cells(&e[((ca + pa) * 4) as usize..], sc)?;
                (addr >= child && addr - child < size)
                    .then(|| parent.checked_add(addr - child))
                    .flatten()
            })?;
        }
        bus -= 1;
    }
    Some(addr)
}

/// A PL011 seen during the walk.
#[derive(Copy, Clone)]
struct UartCandidate {
    path: [u8; 128],
    path_len: usize,
    base: u64,
    ok: bool,
}

const MAX_UARTS: usize = 8;
const MAX_ALIASES: usize = 48;

/// Walk state outside the node stack.
struct Walk<'a> {
    info: BootInfo<'a>,
    uarts: [Option<UartCandidate>; MAX_UARTS],
    aliases: [(&'a str, &'a str); MAX_ALIASES],
    nr_aliases: usize,
    /// First address the CPU cannot reach (page aligned).
    limit: u64,
}

const PAGE: u64 = 4096;

fn push<const N: usize>(
    l: &mut RangeList<N>,
    r: PhysRange,
    what: &'static str,
) -> Result<(), BootInfoError> {
    l.push(r).map_err(|_| BootInfoError::TooMany { what })
}

/// Parses the FDT in `buf` (which may be longer than the tree) located at physical address
/// `phys`, into a [`BootInfo`].
pub fn parse(buf: &[u8], phys: u64) -> Result<BootInfo<'_>, BootInfoError> {
    parse_limited(buf, phys, DEFAULT_ADDRESS_LIMIT)
}

/// The address limit [`parse`] assumes: a 48-bit CPU and identity map.
pub const DEFAULT_ADDRESS_LIMIT: u64 = 1 << 48;

/// [`parse`] for a CPU that reaches addresses below `limit` only (`arch::cpuid::
/// addressable_limit()`: PARange and the VA limit): RAM at or above it is clipped or
/// refused, each with a [`RangeWarning`] naming the node.
pub fn parse_limited(buf: &[u8], phys: u64, limit: u64) -> Result<BootInfo<'_>, BootInfoError> {
    let h = check_header(buf)?;
    if (buf.len() as u64) < h.totalsize as u64 {
        return Err(BootInfoError::Fdt(FdtError::BadTotalSize {
            totalsize: h.totalsize,
            len: buf.len(),
        }));
    }
    let buf = &buf[..h.totalsize as usize];
    let mut w = Walk {
        info: BootInfo::empty(BoardKind::Generic, BoardSource::Compatible),
        uarts: [None; MAX_UARTS],
        aliases: [("", ""); MAX_ALIASES],
        nr_aliases: 0,
        limit: limit & !(PAGE - 1),
    };
    let mut nodes = NodeWalk {
        stack: [Frame::new("", false); MAX_DEPTH],
        depth: 0,
        w: &mut w,
    };
    // One pass: the strict reader's rules (allocation-free; a tree the boot accepts is one
    // the handover's rewrite, `kho::bootfdt::rewrite` on that reader, can read), each node
    // and property handed to this walk as it is checked. A malformed tree is refused first,
    // whatever the walk made of it; then the checks in the order they always ran.
    let (_, walked) = baton_fdt::check_tree_visit(buf, &mut nodes)?;
    if !(buf.as_ptr() as usize).is_multiple_of(4) {
        return Err(BootInfoError::Misaligned { addr: phys });
    }
    // The `/memreserve/` entries go first in the lists and warnings, as they always did.
    let walk_warnings = core::mem::take(&mut w.info.range_warnings);
    let walk_dropped = core::mem::take(&mut w.info.range_warnings_dropped);
    w.info.fdt = Some(PhysRange::new(PhysAddr(phys), h.totalsize as u64));
    parse_memreserve(buf, &h, &mut w.info)?;
    walked?;
    for warning in walk_warnings.into_iter().flatten() {
        w.info.warn_range(warning);
    }
    w.info.range_warnings_dropped += walk_dropped;
    pick_console(&mut w);
    w.info.memory.sort_and_merge();
    w.info.devices.sort_and_merge();
    Ok(w.info)
}

fn parse_memreserve(buf: &[u8], h: &Header, info: &mut BootInfo<'_>) -> Result<(), BootInfoError> {
    let mut off = h.off_mem_rsvmap as usize;
    for _ in 0..MAX_MEMRESERVE {
        if off + 16 > buf.len() {
            break;
        }
        let addr = ((be32(buf, off) as u64) << 32) | be32(buf, off + 4) as u64;
        let size = ((be32(buf, off + 8) as u64) << 32) | be32(buf, off + 12) as u64;
        if addr == 0 && size == 0 {
            return Ok(());
        }
        if size > 0 && addr.checked_add(size - 1).is_none() {
            info.warn_range(RangeWarning {
                node: "/memreserve/",
                start: addr,
                size,
                issue: RangeIssue::Wraps,
                kept: Some(PhysRange::new(PhysAddr(addr), size)),
            });
        }
        push(
            &mut info.memreserve,
            PhysRange::new(PhysAddr(addr), size),
            "/memreserve/ entries",
        )?;
        off += 16;
    }
    Err(FdtError::UnterminatedMemReserve.into())
}

/// The walk over the checked tree's nodes: the open nodes' frames and what they add up to.
struct NodeWalk<'a, 'w> {
    stack: [Frame<'a>; MAX_DEPTH],
    depth: usize,
    w: &'w mut Walk<'a>,
}

impl<'a> Visit<'a> for NodeWalk<'a, '_> {
    type Error = BootInfoError;

    fn begin_node(&mut self, name: &'a str, at: usize) -> Result<(), BootInfoError> {
        let depth = self.depth;
        if depth == MAX_DEPTH {
            return Err(FdtError::TooDeep { offset: at }.into());
        }
        if depth > 0 && !self.stack[depth - 1].props_done {
            finish_node(&mut self.stack, depth - 1, self.w, at)?;
        }
        // Only the root may be nameless: the handover's writer refuses any other empty
        // name, so the boot refuses it too.
        if depth > 0 && name.is_empty() {
            return Err(FdtError::BadName { offset: at }.into());
        }
        let in_cpus = depth > 0
            && (self.stack[depth - 1].in_cpus || (depth == 2 && self.stack[1].name == "cpus"));
        self.stack[depth] = Frame::new(name, in_cpus);
        self.depth += 1;
        Ok(())
    }

    fn prop(&mut self, name: &'a str, value: &'a [u8], at: usize) -> Result<(), BootInfoError> {
        // The strict walk puts every property inside a node, before its first child.
        match self.depth.checked_sub(1) {
            Some(idx) if !self.stack[idx].props_done => {
                handle_prop(&mut self.stack, idx, name, value, self.w, at)
            }
            _ => Err(FdtError::BadStructure { offset: at }.into()),
        }
    }

    fn end_node(&mut self, at: usize) -> Result<(), BootInfoError> {
        let Some(idx) = self.depth.checked_sub(1) else {
            return Err(FdtError::BadStructure { offset: at }.into());
        };
        if !self.stack[idx].props_done {
            finish_node(&mut self.stack, idx, self.w, at)?;
        }
        self.depth = idx;
        Ok(())
    }
}

fn cells(v: &[u8], at: usize) -> Result<u32, BootInfoError> {
    if v.len() != 4 {
        return Err(BootInfoError::BadCells {
            offset: at,
            value: v.len() as u32,
        });
    }
    match be32(v, 0) {
        n @ 0..=4 => Ok(n),
        value => Err(BootInfoError::BadCells { offset: at, value }),
    }
}

/// Root `#address-cells`/`#size-cells`: 1 or 2 (a 64-bit address space in 32-bit cells).
fn root_cells(v: &[u8], at: usize) -> Result<u32, BootInfoError> {
    match cells(v, at)? {
        n @ 1..=2 => Ok(n),
        value => Err(BootInfoError::BadCells { offset: at, value }),
    }
}

fn handle_prop<'a>(
    stack: &mut [Frame<'a>; MAX_DEPTH],
    idx: usize,
    name: &'a str,
    v: &'a [u8],
    w: &mut Walk<'a>,
    at: usize,
) -> Result<(), BootInfoError> {
    let node_name = stack[idx].name;
    if idx == 1 && node_name == "chosen" {
        let (ac, sc) = (stack[0].addr_cells, stack[0].size_cells);
        match name {
            // Any bytes: the command line is not text (Linux takes any bytes too).
            "bootargs" => w.info.bootargs = prop_bytes(v),
            "stdout-path" => w.info.stdout_path = prop_str(v, at)?,
            "linux,initrd-start" => {
                let start = u32_or_u64(v, "linux,initrd-start")?;
                let end = w.info.initrd.map_or(start, |r| r.end.0);
                w.info.initrd = Some(PhysRange::new(PhysAddr(start), end.saturating_sub(start)));
            }
            "linux,initrd-end" => {
                let end = u32_or_u64(v, "linux,initrd-end")?;
                let start = w.info.initrd.map_or(end, |r| r.start.0);
                w.info.initrd = Some(PhysRange::new(PhysAddr(start), end.saturating_sub(start)));
            }
            "linux,kho-fdt" => {
                w.info.handover.kho_fdt = Some(v);
                (w.info.handover.address_cells, w.info.handover.size_cells) = (ac, sc);
            }
            "linux,kho-scratch" => {
                w.info.handover.kho_scratch = Some(v);
                (w.info.handover.address_cells, w.info.handover.size_cells) = (ac, sc);
            }
            _ => {}
        }
    }
    if idx == 1 && node_name == "aliases" {
        if let Ok(path) = prop_str(v, at) {
            if w.nr_aliases < MAX_ALIASES {
                w.aliases[w.nr_aliases] = (name, path);
                w.nr_aliases += 1;
            }
        }
    }
    let f = &mut stack[idx];
    match name {
        // The root's cells as kho's reader takes them (the first occurrence, 1 or 2): the
        // handover writes `/chosen` in them.
        "#address-cells" if idx == 0 && !f.root_cells_seen.0 => {
            f.addr_cells = root_cells(v, at)?;
            f.root_cells_seen.0 = true;
        }
        "#size-cells" if idx == 0 && !f.root_cells_seen.1 => {
            f.size_cells = root_cells(v, at)?;
            f.root_cells_seen.1 = true;
        }
        // Later root occurrences are ignored, as kho's reader ignores them.
        "#address-cells" | "#size-cells" if idx == 0 => {}
        "#address-cells" => f.addr_cells = cells(v, at)?,
        "#size-cells" => f.size_cells = cells(v, at)?,
        "ranges" => f.ranges = Some(v),
        "reg" => f.reg = Some(v),
        "compatible" => f.compatible = v,
        "device_type" => f.device_type = v,
        "status" => f.status_ok = matches!(prop_str(v, at)?, "okay" | "ok"),
        "method" => f.method = v,
        "clock-frequency" if v.len() == 4 => f.clock_frequency = Some(be32(v, 0)),
        "model" if idx == 0 => w.info.model = prop_str(v, at)?,
        _ => {}
    }
    Ok(())
}

/// What a node's `compatible` list says about the devices the boot reads, from one pass
/// over its strings (each node's list was read three times).
#[derive(Default)]
struct Kinds {
    /// `arm,psci*`: the PSCI node (its `method`).
    psci: bool,
    /// `arm,armv8-timer` or `arm,armv7-timer`.
    timer: bool,
    /// `arm,pl011`: a console candidate.
    pl011: bool,
}

impl Kinds {
    fn of(compatible: &[u8]) -> Self {
        let mut k = Kinds::default();
        for c in strings(compatible) {
            k.psci |= c.starts_with("arm,psci");
            k.timer |= c == "arm,armv8-timer" || c == "arm,armv7-timer";
            k.pl011 |= c == "arm,pl011";
        }
        k
    }
}

fn finish_node<'a>(
    stack: &mut [Frame<'a>; MAX_DEPTH],
    idx: usize,
    w: &mut Walk<'a>,
    at: usize,
) -> Result<(), BootInfoError> {
    stack[idx].props_done = true;
    let f = stack[idx];
    if idx == 0 {
        w.info.board = BoardKind::from_compatible(strings(f.compatible));
        if w.info.model.is_empty() {
            w.info.model = w.info.board.name();
        }
        return Ok(());
    }
    let parent = stack[idx - 1];
    let kinds = Kinds::of(f.compatible);
    if kinds.psci {
        w.info.psci = PsciMethod::from_name(prop_str(f.method, at)?);
    }
    if kinds.timer {
        w.info.timer = Some(TimerInfo {
            clock_frequency: f.clock_frequency,
        });
    }
    let Some(reg) = f.reg else { return Ok(()) };
    if f.in_cpus || parent.size_cells == 0 {
        return Ok(());
    }
    let is_memory = f.device_type == b"memory\0"
        || (idx == 1 && (f.name == "memory" || f.name.starts_with("memory@")));
    let is_reserved = idx == 2 && parent.name == "reserved-memory";
    let is_pl011 = kinds.pl011;
    for p in pairs(reg, parent.addr_cells, parent.size_cells, "reg")? {
        let Some((addr, size)) = p else { continue };
        if size == 0 {
            continue;
        }
        let Some(cpu) = translate(stack, idx - 1, addr) else {
            continue;
        };
        let r = PhysRange::new(PhysAddr(cpu), size);
        // Its last byte past 2^64 (a range ending exactly at 2^64 does not wrap).
        let wraps = cpu.checked_add(size - 1).is_none();
        if is_memory {
            let kept = PhysRange::from_bounds(cpu, r.end.0.min(w.limit));
            let issue = match (wraps, r.end.0 > w.limit) {
                (true, _) => Some(RangeIssue::Wraps),
                (false, true) => Some(RangeIssue::AboveLimit { limit: w.limit }),
                (false, false) => None,
            };
            if let Some(issue) = issue {
                let kept = (!kept.is_empty()).then_some(kept);
                w.info.warn_range(RangeWarning {
                    node: f.name,
                    start: cpu,
                    size,
                    issue,
                    kept,
                });
                if let Some(k) = kept {
                    push(&mut w.info.memory, k, "memory ranges")?;
                }
            } else {
                push(&mut w.info.memory, r, "memory ranges")?;
            }
        } else if is_reserved {
            if wraps {
                // Kept, clipped at the top of the address space: reserving too much is safe.
                w.info.warn_range(RangeWarning {
                    node: f.name,
                    start: cpu,
                    size,
                    issue: RangeIssue::Wraps,
                    kept: Some(r),
                });
            }
            push(&mut w.info.reserved_memory, r, "/reserved-memory regions")?;
        } else {
            if w.info.devices.push(r.outer_pages()).is_err() {
                w.info.devices.sort_and_merge();
                push(&mut w.info.devices, r.outer_pages(), "device ranges")?;
            }
            if is_pl011 {
                record_uart(stack, idx, cpu, f.status_ok, w);
            }
        }
    }
    Ok(())
}

fn record_uart(stack: &[Frame<'_>], idx: usize, base: u64, ok: bool, w: &mut Walk<'_>) {
    if w.uarts.iter().flatten().any(|u| u.base == base) {
        return; // only the first `reg` entry of a UART counts
    }
    let Some(slot) = w.uarts.iter_mut().find(|u| u.is_none()) else {
        return;
    };
    let mut c = UartCandidate {
        path: [0; 128],
        path_len: 0,
        base,
        ok,
    };
    for f in &stack[1..=idx] {
        for b in core::iter::once(b'/').chain(f.name.bytes()) {
            if c.path_len < c.path.len() {
                c.path[c.path_len] = b;
                c.path_len += 1;
            }
        }
    }
    *slot = Some(c);
}

/// Chooses the console: the PL011 that `stdout-path` names (directly or through an alias),
/// else the first enabled PL011.
fn pick_console(w: &mut Walk<'_>) {
    let target = w.info.stdout_path.split(':').next().unwrap_or("");
    let path = if target.starts_with('/') {
        target
    } else {
        w.aliases[..w.nr_aliases]
            .iter()
            .find(|(n, _)| *n == target)
            .map_or("", |(_, p)| *p)
    };
    let named = w
        .uarts
        .iter()
        .flatten()
        .find(|u| !path.is_empty() && &u.path[..u.path_len] == path.as_bytes());
    let chosen = named.or_else(|| w.uarts.iter().flatten().find(|u| u.ok));
    let clock_hz = w.info.board.facts().uart_clock_hz;
    w.info.console = chosen.map(|u| ConsoleInfo {
        base: u.base,
        clock_hz,
    });
}

/// The checks a BootInfo must pass before the kernel relies on it.
pub fn check_usable(info: &BootInfo<'_>) -> Result<(), BootInfoError> {
    if info.memory.total() == 0 {
        return Err(BootInfoError::NoMemory);
    }
    Ok(())
}
