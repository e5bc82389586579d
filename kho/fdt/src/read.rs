//! Strict FDT reader: parses a whole blob into a node table, checking every offset first.
//!
//! Owns nothing but borrowed views into the input slice. Every length and offset is checked
//! with checked arithmetic before use; malformed input gives an `FdtError`, never a panic.
//!
//! One of baton's two FDT readers, on purpose: this one builds node tables on the heap (the
//! KHO FDT, client sub-trees, the boot-FDT rewrite); `board::fdt` walks the boot FDT before
//! any heap exists, into fixed-capacity lists, through [`crate::check_tree_visit`] (this
//! reader's rules, allocation-free). Both use [`check_header`] and this module's
//! [`FdtError`].

use alloc::vec::Vec;
use core::fmt;

use super::*;

/// Why a blob is not a well-formed FDT. Offsets are byte offsets into the blob.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob is shorter than the header.
    TooShortForHeader { len: usize },
    /// The magic is not 0xd00dfeed.
    BadMagic { magic: u32 },
    /// `totalsize` is larger than the blob or smaller than the header.
    BadTotalSize { totalsize: u32, len: usize },
    /// The format version is older than 16 or the last compatible version newer than 17.
    UnsupportedVersion { version: u32, last_comp: u32 },
    /// A block (structure, strings, memory reservation) lies outside `totalsize` or is misaligned.
    BlockOutOfBounds {
        block: &'static str,
        offset: u32,
        size: u32,
    },
    /// The structure block ended inside a token.
    Truncated { offset: usize },
    /// An unknown token.
    BadToken { offset: usize, token: u32 },
    /// A name is not NUL-terminated inside its block, or is not UTF-8.
    BadName { offset: usize },
    /// A property's name offset points outside the strings block.
    BadNameOffset { offset: usize, nameoff: u32 },
    /// Nodes nested deeper than `FDT_MAX_DEPTH`.
    TooDeep { offset: usize },
    /// Tokens out of order (property after a child, END_NODE without a node, two roots...).
    BadStructure { offset: usize },
    /// The memory reservation block has no (0, 0) terminator before the structure block.
    UnterminatedMemReserve,
    /// A token the reader could not take (`reason` says why; kept for readers of the
    /// vocabulary: no reader of this workspace reports it since the boot parse stopped
    /// using fdt-rs).
    Unreadable { offset: usize, reason: &'static str },
    /// The structure block holds no root node.
    NoRootNode,
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdtError::TooShortForHeader { len } => write!(f, "FDT of {len} bytes has no header"),
            FdtError::BadMagic { magic } => write!(f, "FDT magic {magic:#x} is not 0xd00dfeed"),
            FdtError::BadTotalSize { totalsize, len } => {
                write!(
                    f,
                    "FDT totalsize {totalsize} does not fit the {len} bytes given"
                )
            }
            FdtError::UnsupportedVersion { version, last_comp } => {
                write!(
                    f,
                    "FDT version {version} (last compatible {last_comp}) unsupported"
                )
            }
            FdtError::BlockOutOfBounds {
                block,
                offset,
                size,
            } => {
                write!(
                    f,
                    "FDT {block} block at {offset:#x}+{size:#x} is out of bounds"
                )
            }
            FdtError::Truncated { offset } => write!(f, "FDT structure truncated at {offset:#x}"),
            FdtError::BadToken { offset, token } => {
                write!(f, "FDT token {token:#x} at {offset:#x} is unknown")
            }
            FdtError::BadName { offset } => write!(f, "FDT name at {offset:#x} is malformed"),
            FdtError::BadNameOffset { offset, nameoff } => {
                write!(
                    f,
                    "FDT property at {offset:#x} has name offset {nameoff:#x} out of bounds"
                )
            }
            FdtError::TooDeep { offset } => write!(f, "FDT nodes nest too deep at {offset:#x}"),
            FdtError::BadStructure { offset } => {
                write!(f, "FDT structure tokens out of order at {offset:#x}")
            }
            FdtError::UnterminatedMemReserve => write!(f, "FDT memory reservations unterminated"),
            FdtError::Unreadable { offset, reason } => {
                write!(f, "FDT token at {offset:#x} unreadable: {reason}")
            }
            FdtError::NoRootNode => write!(f, "FDT has no root node"),
        }
    }
}

/// One property: name and raw value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Prop<'a> {
    /// Property name.
    pub name: &'a str,
    /// Raw value bytes.
    pub value: &'a [u8],
}

/// One node: name (root is ""), parent index, properties and children in blob order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node<'a> {
    /// Node name including any unit address.
    pub name: &'a str,
    /// Index of the parent in [`Fdt::nodes`]; `None` for the root.
    pub parent: Option<usize>,
    /// Properties in blob order.
    pub props: Vec<Prop<'a>>,
    /// Indices of children in blob order.
    pub children: Vec<usize>,
}

impl<'a> Node<'a> {
    /// The value of property `name`, if present.
    pub fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.props.iter().find(|p| p.name == name).map(|p| p.value)
    }
}

/// A parsed FDT: node table (index 0 is the root), memory reservations, boot CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fdt<'a> {
    /// Every node, root first, in blob (depth-first) order.
    pub nodes: Vec<Node<'a>>,
    /// `/memreserve/` entries (address, size).
    pub mem_reserve: Vec<(u64, u64)>,
    /// Header `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// Header `totalsize`.
    pub totalsize: u32,
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some((u64::from(be32(b, off)?) << 32) | u64::from(be32(b, off.checked_add(4)?)?))
}

fn cstr(b: &[u8], off: usize) -> Option<&str> {
    crate::cstr_at(b, off)
}

/// The header fields, after [`check_header`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `totalsize`: bytes of the whole tree.
    pub totalsize: u32,
    /// Offset of the structure block.
    pub off_dt_struct: u32,
    /// Offset of the strings block.
    pub off_dt_strings: u32,
    /// Offset of the memory reservation block.
    pub off_mem_rsvmap: u32,
    /// Format version (16 or 17).
    pub version: u32,
    /// `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// Bytes of the strings block.
    pub size_dt_strings: u32,
    /// Bytes of the structure block.
    pub size_dt_struct: u32,
}

/// Checks the 40-byte header at the start of `b` for a tree of at most `available` bytes
/// (the blob's length, or the most a caller will map): magic, `totalsize` within
/// `[header, available]`, version 16/17, and every block inside `totalsize` (structure
/// 4-aligned, memory reservations 8-aligned, none inside the header).
pub fn check_header(b: &[u8], available: usize) -> Result<Header, FdtError> {
    if b.len() < FDT_HEADER_SIZE {
        return Err(FdtError::TooShortForHeader { len: b.len() });
    }
    let hdr = |i: usize| be32(b, 4 * i).ok_or(FdtError::TooShortForHeader { len: b.len() });
    let magic = hdr(0)?;
    if magic != FDT_MAGIC {
        return Err(FdtError::BadMagic { magic });
    }
    let totalsize = hdr(1)?;
    if (totalsize as usize) > available || (totalsize as usize) < FDT_HEADER_SIZE {
        return Err(FdtError::BadTotalSize {
            totalsize,
            len: available,
        });
    }
    let (version, last_comp) = (hdr(5)?, hdr(6)?);
    if version < 16 || last_comp > 17 {
        return Err(FdtError::UnsupportedVersion { version, last_comp });
    }
    let h = Header {
        totalsize,
        off_dt_struct: hdr(2)?,
        off_dt_strings: hdr(3)?,
        off_mem_rsvmap: hdr(4)?,
        version,
        boot_cpuid_phys: hdr(7)?,
        size_dt_strings: hdr(8)?,
        size_dt_struct: hdr(9)?,
    };
    let block = |name: &'static str, off: u32, size: u32, align: u32| {
        let end = u64::from(off) + u64::from(size);
        if end > u64::from(totalsize)
            || (off as usize) < FDT_HEADER_SIZE
            || !off.is_multiple_of(align)
            || !size.is_multiple_of(align)
        {
            Err(FdtError::BlockOutOfBounds {
                block: name,
                offset: off,
                size,
            })
        } else {
            Ok(())
        }
    };
    block("structure", h.off_dt_struct, h.size_dt_struct, 4)?;
    block("strings", h.off_dt_strings, h.size_dt_strings, 1)?;
    block("memory reservation", h.off_mem_rsvmap, 0, 8)?;
    Ok(h)
}

/// Reservation entries at `off`: pairs of big-endian u64 up to a (0, 0) pair, before the end.
fn read_mem_reserve(b: &[u8], off: usize) -> Result<Vec<(u64, u64)>, FdtError> {
    let mut mem_reserve = Vec::new();
    let mut o = off;
    loop {
        let (Some(a), Some(s)) = (be64(b, o), be64(b, o + 8)) else {
            return Err(FdtError::UnterminatedMemReserve);
        };
        if a == 0 && s == 0 {
            return Ok(mem_reserve);
        }
        mem_reserve.push((a, s));
        o += 16;
    }
}

/// One pass over the structure block, token by token, building the node table.
struct StructWalk<'a> {
    /// The structure block.
    st: &'a [u8],
    /// The strings block.
    strings: &'a [u8],
    /// Offset of the structure block in the blob (errors name blob offsets).
    off_struct: usize,
    /// Next token's offset inside `st`.
    pos: usize,
    nodes: Vec<Node<'a>>,
    /// Open nodes, innermost last.
    stack: Vec<usize>,
    /// The root node has been closed: only NOPs and END may follow.
    root_done: bool,
}

impl<'a> StructWalk<'a> {
    fn new(st: &'a [u8], strings: &'a [u8], off_struct: usize) -> Self {
        StructWalk {
            st,
            strings,
            off_struct,
            pos: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            root_done: false,
        }
    }

    /// Every token up to FDT_END; the node table, root first.
    fn run(mut self) -> Result<Vec<Node<'a>>, FdtError> {
        loop {
            let tok_off = self.pos + self.off_struct;
            let tok = be32(self.st, self.pos).ok_or(FdtError::Truncated { offset: tok_off })?;
            self.pos += 4;
            match tok {
                FDT_BEGIN_NODE => self.begin_node(tok_off)?,
                FDT_END_NODE => self.end_node(tok_off)?,
                FDT_PROP => self.prop(tok_off)?,
                FDT_NOP => {}
                FDT_END => {
                    if !self.root_done || !self.stack.is_empty() {
                        return Err(FdtError::BadStructure { offset: tok_off });
                    }
                    return Ok(self.nodes);
                }
                token => {
                    return Err(FdtError::BadToken {
                        offset: tok_off,
                        token,
                    })
                }
            }
        }
    }

    /// FDT_BEGIN_NODE: a name, then a new node under the innermost open one (one root only,
    /// nesting bounded by [`FDT_MAX_DEPTH`]).
    fn begin_node(&mut self, tok_off: usize) -> Result<(), FdtError> {
        let name = cstr(self.st, self.pos).ok_or(FdtError::BadName { offset: tok_off })?;
        self.pos = (self.pos + name.len() + 1).next_multiple_of(4);
        if self.root_done || (self.stack.is_empty() && !name.is_empty()) {
            return Err(FdtError::BadStructure { offset: tok_off });
        }
        if self.stack.len() >= FDT_MAX_DEPTH {
            return Err(FdtError::TooDeep { offset: tok_off });
        }
        let idx = self.nodes.len();
        let parent = self.stack.last().copied();
        if let Some(p) = parent {
            self.nodes[p].children.push(idx);
        }
        self.nodes.push(Node {
            name,
            parent,
            props: Vec::new(),
            children: Vec::new(),
        });
        self.stack.push(idx);
        Ok(())
    }

    /// FDT_END_NODE: closes the innermost open node.
    fn end_node(&mut self, tok_off: usize) -> Result<(), FdtError> {
        if self.stack.pop().is_none() {
            return Err(FdtError::BadStructure { offset: tok_off });
        }
        if self.stack.is_empty() {
            self.root_done = true;
        }
        Ok(())
    }

    /// FDT_PROP: length, name offset and value, added to the innermost open node (before any
    /// of its children).
    fn prop(&mut self, tok_off: usize) -> Result<(), FdtError> {
        let (st, pos) = (self.st, self.pos);
        let len = be32(st, pos).ok_or(FdtError::Truncated { offset: tok_off })?;
        let nameoff = be32(st, pos + 4).ok_or(FdtError::Truncated { offset: tok_off })?;
        let start = pos + 8;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= st.len())
            .ok_or(FdtError::Truncated { offset: tok_off })?;
        let value = &st[start..end];
        self.pos = end.next_multiple_of(4);
        if (nameoff as usize) >= self.strings.len() {
            return Err(FdtError::BadNameOffset {
                offset: tok_off,
                nameoff,
            });
        }
        let name = cstr(self.strings, nameoff as usize)
            .filter(|n| !n.is_empty())
            .ok_or(FdtError::BadName { offset: tok_off })?;
        let Some(&cur) = self.stack.last() else {
            return Err(FdtError::BadStructure { offset: tok_off });
        };
        // A property after a child node is out of order.
        if !self.nodes[cur].children.is_empty() {
            return Err(FdtError::BadStructure { offset: tok_off });
        }
        self.nodes[cur].props.push(Prop { name, value });
        Ok(())
    }
}

impl<'a> Fdt<'a> {
    /// Parses and checks the whole blob: header, memory reservations, then the structure
    /// block token by token.
    pub fn parse(b: &'a [u8]) -> Result<Self, FdtError> {
        let h = check_header(b, b.len())?;
        let b = &b[..h.totalsize as usize];
        let block = |off: u32, size: u32| &b[off as usize..(off + size) as usize];
        let st = block(h.off_dt_struct, h.size_dt_struct);
        let strings = block(h.off_dt_strings, h.size_dt_strings);
        let mem_reserve = read_mem_reserve(b, h.off_mem_rsvmap as usize)?;
        let nodes = StructWalk::new(st, strings, h.off_dt_struct as usize).run()?;
        Ok(Fdt {
            nodes,
            mem_reserve,
            boot_cpuid_phys: h.boot_cpuid_phys,
            totalsize: h.totalsize,
        })
    }

    /// The root node.
    pub fn root(&self) -> &Node<'a> {
        &self.nodes[0]
    }

    /// Index of the child of `parent` called `name`.
    pub fn child(&self, parent: usize, name: &str) -> Option<usize> {
        self.nodes
            .get(parent)?
            .children
            .iter()
            .copied()
            .find(|&c| self.nodes[c].name == name)
    }

    /// Index of the node at absolute `path` ("/" or "/a/b").
    pub fn find(&self, path: &str) -> Option<usize> {
        let mut cur = 0;
        for part in path.split('/').filter(|s| !s.is_empty()) {
            cur = self.child(cur, part)?;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_truncation_of_a_real_tree_is_an_error_not_a_panic() {
        let dtb = include_bytes!("../../tests/data/virt.dtb");
        let ok = Fdt::parse(dtb).unwrap();
        assert!(ok.find("/chosen").is_some());
        let step = if cfg!(miri) { 97 } else { 1 };
        for n in (0..dtb.len()).step_by(step) {
            assert!(Fdt::parse(&dtb[..n]).is_err(), "truncated at {n}");
        }
    }
}
