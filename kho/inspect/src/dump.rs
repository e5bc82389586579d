//! A guest memory dump as physical memory: QEMU `dump-guest-memory` ELF cores and raw
//! `pmemsave` files.
//!
//! Owns the dump's bytes, one page-aligned buffer per RAM range, and answers kho's
//! [`PhysMem`] for exactly those ranges. Parses the ELF64 header and program headers itself
//! (physical addresses in `p_paddr`); every offset and size is checked against the file, so
//! a truncated or foreign file is an [`InspectError`], never a panic.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use kho::PhysMem;
use mm::{PhysAddr, PhysRange, PAGE_SIZE};

use crate::InspectError;

/// ELF program header type of a loadable segment (one RAM range in a QEMU core).
const PT_LOAD: u32 = 1;
/// `e_phnum` value meaning "the count is in section header 0's `sh_info`".
const PN_XNUM: u16 = 0xffff;

/// One RAM range of the dump, copied into a buffer whose offset `phys % 4096` sits at
/// the same alignment modulo 4096 as `phys` (kho's `PhysMem` contract).
struct Segment {
    phys: u64,
    len: usize,
    /// `phys % PAGE_SIZE` bytes of padding, then `len` bytes of the dump.
    buf: *mut u8,
    cap: usize,
}

impl Segment {
    fn new(phys: u64, len: usize) -> Result<Self, InspectError> {
        let pad = (phys % PAGE_SIZE) as usize;
        let cap = (pad + len)
            .next_multiple_of(PAGE_SIZE as usize)
            .max(PAGE_SIZE as usize);
        let layout = Layout::from_size_align(cap, PAGE_SIZE as usize).map_err(|_| {
            InspectError::TooLarge {
                phys,
                len: len as u64,
            }
        })?;
        // SAFETY: layout has a non-zero size (at least one page).
        let buf = unsafe { alloc_zeroed(layout) };
        if buf.is_null() {
            return Err(InspectError::TooLarge {
                phys,
                len: len as u64,
            });
        }
        Ok(Segment {
            phys,
            len,
            buf,
            cap,
        })
    }

    /// The dump's bytes of this segment, for filling it from the file.
    fn bytes_mut(&mut self) -> &mut [u8] {
        let pad = (self.phys % PAGE_SIZE) as usize;
        // SAFETY: buf holds cap >= pad + len bytes we own; `&mut self` means no pointer
        // handed out through PhysMem is in use (kho only uses them during a `&self` call).
        unsafe { std::slice::from_raw_parts_mut(self.buf.add(pad), self.len) }
    }

    fn range(&self) -> PhysRange {
        PhysRange::new(PhysAddr(self.phys), self.len as u64)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, PAGE_SIZE as usize).expect("layout");
        // SAFETY: buf was allocated in `new` with exactly this layout and is freed once.
        unsafe { dealloc(self.buf, layout) };
    }
}

/// What kind of file the dump was read from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DumpKind {
    /// QEMU `dump-guest-memory` (ELF64 core, physical addresses in the program headers).
    ElfCore,
    /// QEMU `pmemsave` (raw bytes starting at `--base`).
    Raw,
}

/// A memory dump, readable through kho's [`PhysMem`] at the guest's physical addresses.
pub struct Dump {
    segments: Vec<Segment>,
    kind: DumpKind,
}

impl Dump {
    /// Reads `path`: an ELF core if it starts with the ELF magic, else a raw dump, which
    /// needs `base` (the physical address of its first byte).
    pub fn open(path: &Path, base: Option<u64>) -> Result<Dump, InspectError> {
        let io = |e: std::io::Error| InspectError::Io {
            path: path.display().to_string(),
            err: e.to_string(),
        };
        let mut f = File::open(path).map_err(io)?;
        let file_len = f.metadata().map_err(io)?.len();
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(io)?;
        if n == 4 && magic == *b"\x7fELF" {
            if base.is_some() {
                return Err(InspectError::BaseWithElf);
            }
            let mut head = vec![0u8; file_len.min(64) as usize];
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            f.read_exact(&mut head).map_err(io)?;
            let loads = elf_loads(&head, &mut f, file_len).map_err(|e| match e {
                ElfRead::Bad(e) => e,
                ElfRead::Io(e) => io(e),
            })?;
            let mut segments = Vec::new();
            for (off, phys, len) in loads {
                let mut s = Segment::new(phys, len as usize)?;
                f.seek(SeekFrom::Start(off)).map_err(io)?;
                f.read_exact(s.bytes_mut()).map_err(io)?;
                segments.push(s);
            }
            return Dump::from_segments(segments, DumpKind::ElfCore);
        }
        let base = base.ok_or(InspectError::RawNeedsBase)?;
        if file_len == 0 {
            return Err(InspectError::Empty);
        }
        base.checked_add(file_len).ok_or(InspectError::TooLarge {
            phys: base,
            len: file_len,
        })?;
        let mut s = Segment::new(base, file_len as usize)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.read_exact(s.bytes_mut()).map_err(io)?;
        Dump::from_segments(vec![s], DumpKind::Raw)
    }

    /// A dump of the bytes `data` at physical `base` (raw dumps and tests).
    pub fn from_bytes(base: u64, data: &[u8]) -> Result<Dump, InspectError> {
        if data.is_empty() {
            return Err(InspectError::Empty);
        }
        let mut s = Segment::new(base, data.len())?;
        s.bytes_mut().copy_from_slice(data);
        Dump::from_segments(vec![s], DumpKind::Raw)
    }

    fn from_segments(mut segments: Vec<Segment>, kind: DumpKind) -> Result<Dump, InspectError> {
        segments.retain(|s| s.len > 0);
        segments.sort_by_key(|s| s.phys);
        if segments.is_empty() {
            return Err(InspectError::Empty);
        }
        for w in segments.windows(2) {
            if w[0].range().overlaps(&w[1].range()) {
                return Err(InspectError::SegmentsOverlap {
                    phys: w[1].phys,
                    other: w[0].phys,
                });
            }
        }
        Ok(Dump { segments, kind })
    }

    /// What the dump was read from.
    pub fn kind(&self) -> DumpKind {
        self.kind
    }

    /// The physical ranges the dump holds, sorted: what the inspector treats as RAM.
    pub fn ranges(&self) -> Vec<PhysRange> {
        self.segments.iter().map(Segment::range).collect()
    }

    /// A copy of `len` bytes at `phys`, or an error naming the address if the dump does not
    /// hold all of them.
    pub fn read(&self, phys: u64, len: usize) -> Result<Vec<u8>, InspectError> {
        kho::read_bytes(self, phys, len).ok_or(InspectError::OutsideDump {
            phys,
            len: len as u64,
        })
    }
}

// SAFETY: each pointer is inside one segment's buffer (bounds checked below), which lives as
// long as the Dump; buffers are page aligned with `phys % 4096` bytes of padding, so a
// pointer has phys's alignment modulo 4096; the Dump hands out no references to them while
// borrowed (`bytes_mut` needs `&mut self`).
unsafe impl PhysMem for Dump {
    fn ptr(&self, phys: u64, len: usize) -> Option<*mut u8> {
        let i = self
            .segments
            .partition_point(|s| s.phys <= phys)
            .checked_sub(1)?;
        let s = &self.segments[i];
        let off = phys - s.phys;
        let end = off.checked_add(len as u64)?;
        if end > s.len as u64 {
            return None;
        }
        let pad = s.phys % PAGE_SIZE;
        // SAFETY: pad + off + len <= pad + s.len <= cap: the offset stays in the buffer.
        Some(unsafe { s.buf.add((pad + off) as usize) })
    }
}

/// `(file offset, physical address, size)` of every PT_LOAD segment of the ELF core at
/// `path`: where a physical address lives in the file (to damage a copy on purpose).
pub fn elf_segments(path: &Path) -> Result<Vec<(u64, u64, u64)>, InspectError> {
    let io = |e: std::io::Error| InspectError::Io {
        path: path.display().to_string(),
        err: e.to_string(),
    };
    let mut f = File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut head = vec![0u8; file_len.min(64) as usize];
    f.read_exact(&mut head).map_err(io)?;
    if !head.starts_with(b"\x7fELF") {
        return Err(InspectError::BadElf {
            what: "no ELF magic",
            value: 0,
        });
    }
    elf_loads(&head, &mut f, file_len).map_err(|e| match e {
        ElfRead::Bad(e) => e,
        ElfRead::Io(e) => io(e),
    })
}

enum ElfRead {
    Bad(InspectError),
    Io(std::io::Error),
}

fn le(b: &[u8], off: usize, n: usize) -> Result<u64, ElfRead> {
    let s = b
        .get(off..off + n)
        .ok_or(ElfRead::Bad(InspectError::BadElf {
            what: "header truncated",
            value: off as u64,
        }))?;
    Ok(s.iter().rev().fold(0, |a, &x| (a << 8) | u64::from(x)))
}

/// `(file offset, physical address, size)` of every PT_LOAD segment, each checked to lie
/// inside the file.
fn elf_loads(head: &[u8], f: &mut File, file_len: u64) -> Result<Vec<(u64, u64, u64)>, ElfRead> {
    let bad = |what, value| ElfRead::Bad(InspectError::BadElf { what, value });
    if head.len() < 64 {
        return Err(bad("header truncated", head.len() as u64));
    }
    if head[4] != 2 {
        return Err(bad("not ELF64 (EI_CLASS)", u64::from(head[4])));
    }
    if head[5] != 1 {
        return Err(bad("not little-endian (EI_DATA)", u64::from(head[5])));
    }
    let phoff = le(head, 0x20, 8)?;
    let shoff = le(head, 0x28, 8)?;
    let phentsize = le(head, 0x36, 2)?;
    let mut phnum = le(head, 0x38, 2)?;
    if phentsize != 56 {
        return Err(bad("e_phentsize is not 56", phentsize));
    }
    // Cores with many segments keep the real count in section header 0 (sh_info).
    let mut read_at = |off: u64, len: u64| -> Result<Vec<u8>, ElfRead> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= file_len)
            .ok_or(bad("table beyond the end of the file", off))?;
        let mut v = vec![0u8; (end - off) as usize];
        f.seek(SeekFrom::Start(off)).map_err(ElfRead::Io)?;
        f.read_exact(&mut v).map_err(ElfRead::Io)?;
        Ok(v)
    };
    if phnum == u64::from(PN_XNUM) {
        let sh0 = read_at(shoff, 64)?;
        phnum = le(&sh0, 44, 4)?;
    }
    let table = read_at(phoff, phnum * 56)?;
    let mut out = Vec::new();
    // Segments hold disjoint parts of the file: together they are never larger than it.
    // A core whose segments claim more (headers pointing at the same bytes) would make
    // the reader allocate many times the file's size.
    let mut total: u64 = 0;
    for i in 0..phnum as usize {
        let ph = &table[56 * i..56 * (i + 1)];
        if le(ph, 0, 4)? as u32 != PT_LOAD {
            continue;
        }
        let (off, paddr, filesz) = (le(ph, 8, 8)?, le(ph, 24, 8)?, le(ph, 32, 8)?);
        if off.checked_add(filesz).is_none_or(|e| e > file_len) {
            return Err(ElfRead::Bad(InspectError::Truncated {
                phys: paddr,
                need: filesz,
                have: file_len.saturating_sub(off),
            }));
        }
        if paddr.checked_add(filesz).is_none() {
            return Err(bad("segment wraps the address space", paddr));
        }
        total = total
            .checked_add(filesz)
            .filter(|&t| t <= file_len)
            .ok_or(bad("segments larger than the file together", paddr))?;
        out.push((off, paddr, filesz));
    }
    if out.is_empty() {
        return Err(bad("no PT_LOAD segment", 0));
    }
    Ok(out)
}
