//! Linux's KHO client formats, as Linux 7.2 writes and reads them (`docs/abi.md` §10):
//! `kexec-metadata`, the `kho_vmalloc` descriptor of a preserved vmalloc area, Linux's own
//! KHO test client (`kho_test`, compatible `kho-test-v1`) and the ones'-complement sum its
//! arm64 `csum_partial` computes over every test folio.
//!
//! Owns encodings and checks only: memory comes through `PhysMem`, pages through `mm`,
//! preservation through `Kho`. Never follows an address from the previous image before the
//! caller's `preserved` check says a preserved block covers it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use mm::{FrameAllocator, MmError, Pfn, PAGE_SIZE};

use crate::fdt::{Fdt, FdtError, FdtWriteError, FdtWriter};
use crate::outgoing::{Kho, KhoError};
use crate::phys::{page_bytes, read_bytes, read_page, write_bytes, PageBuf, PhysMem, ZERO_PAGE};

/// `kexec-metadata` version Linux 7.2 writes and reads.
pub const KEXEC_METADATA_VERSION: u32 = 1;
/// Bytes of `previous_release` (Linux's utsname release, NUL padded).
pub const RELEASE_LEN: usize = 65;
/// Size of the packed `kexec-metadata` blob: version, release, count.
pub const KEXEC_METADATA_SIZE: usize = 4 + RELEASE_LEN + 4;
/// Client node of Linux's KHO test module.
pub const KHO_TEST_NODE: &str = "kho_test";
/// Root `compatible` of the test module's sub-FDT.
pub const KHO_TEST_COMPATIBLE: &str = "kho-test-v1";
/// The test module's `magic` ("KHO!"), a native-endian (little-endian) u32.
pub const KHO_TEST_MAGIC: u32 = 0x4b48_4f21;
/// Page addresses per vmalloc chunk page: a `next` word, then 511 addresses.
pub const VMALLOC_CHUNK_ENTRIES: usize = (PAGE_SIZE as usize - 8) / 8;
/// `kho_vmalloc.flags`: the area came from `vmalloc` (`VM_ALLOC`).
pub const KHO_VMALLOC_ALLOC: u16 = 0x1;
/// `kho_vmalloc.flags`: the area may use huge mappings.
pub const KHO_VMALLOC_HUGE_VMAP: u16 = 0x2;
/// Largest folio order the test module allocates (Linux's `MAX_PAGE_ORDER` on arm64 4K).
pub const KHO_TEST_MAX_ORDER: u32 = 10;

/// Why a Linux client is unusable. Each names the check and the value that failed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinuxClientError {
    /// The blob is smaller than its format.
    TooSmall { what: &'static str, len: u64 },
    /// `kexec-metadata` has a version this image does not read.
    MetadataVersion { version: u32 },
    /// The sub-FDT is not an FDT.
    SubFdt { phys: u64, err: FdtError },
    /// The sub-FDT's root `compatible` does not list `kho-test-v1`.
    NotKhoTest { phys: u64 },
    /// A property is missing or has the wrong size.
    Property { prop: &'static str, len: usize },
    /// `magic` is not "KHO!".
    Magic { value: u32 },
    /// A vmalloc chunk or data run, or a folio, is not a preserved block of the recorded
    /// order.
    NotPreserved {
        what: &'static str,
        phys: u64,
        order: u32,
    },
    /// The vmalloc descriptor is inconsistent (order, flags, page count, chunk chain).
    Vmalloc { what: &'static str, value: u64 },
    /// The folio list names more folios than the vmalloc area holds.
    FolioCount { nr: u32, capacity: u64 },
    /// The checksum over the folios differs from the stored one.
    Checksum { stored: u32, computed: u32 },
    /// Memory that passed the checks could not be read.
    Unreadable { phys: u64 },
}

impl fmt::Display for LinuxClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LinuxClientError::*;
        match self {
            TooSmall { what, len } => write!(f, "{what} is {len} bytes, too small"),
            MetadataVersion { version } => {
                write!(
                    f,
                    "kexec-metadata version {version}, this image reads {KEXEC_METADATA_VERSION}"
                )
            }
            SubFdt { phys, err } => write!(f, "sub-FDT at {phys:#x}: {err}"),
            NotKhoTest { phys } => {
                write!(
                    f,
                    "sub-FDT at {phys:#x} is not compatible with {KHO_TEST_COMPATIBLE}"
                )
            }
            Property { prop, len } => write!(f, "property {prop} missing or {len} bytes"),
            Magic { value } => write!(f, "magic {value:#x} is not {KHO_TEST_MAGIC:#x}"),
            NotPreserved { what, phys, order } => {
                write!(f, "{what} {phys:#x} order {order} is not a preserved block")
            }
            Vmalloc { what, value } => write!(f, "vmalloc descriptor: {what} ({value:#x})"),
            FolioCount { nr, capacity } => {
                write!(f, "{nr} folios listed, the array holds {capacity}")
            }
            Checksum { stored, computed } => {
                write!(f, "checksum {computed:#010x} != stored {stored:#010x}")
            }
            Unreadable { phys } => write!(f, "{phys:#x} unreadable"),
        }
    }
}

/// Adds `b` to `a` in 64-bit ones'-complement arithmetic (end-around carry).
#[inline]
fn add64(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    s + c as u64
}

/// Adds `b` to `a` in 32-bit ones'-complement arithmetic (end-around carry).
#[inline]
fn add32(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    s + c as u32
}

/// The 16-bit ones'-complement sum of `bytes` read as little-endian words from an 8-byte
/// aligned start (a missing tail reads as zero), folded from 64 to 32 to 16 bits with
/// end-around carry: what Linux's arm64 `do_csum` returns for such a buffer. End-around
/// sums are zero only for all-zero input, so the result does not depend on how the words
/// are grouped.
pub fn fold_sum(bytes: &[u8]) -> u32 {
    let mut sum = 0u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        sum = add64(sum, u64::from_le_bytes(a));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        sum = add64(sum, u64::from_le_bytes(a));
    }
    fold(sum)
}

/// Folds a 64-bit end-around sum to 16 bits (64 -> 32 -> 16), end-around at each step.
fn fold(sum: u64) -> u32 {
    let s32 = add32((sum >> 32) as u32, sum as u32);
    let s16 = (s32 >> 16) + (s32 & 0xffff);
    (s16 & 0xffff) + (s16 >> 16)
}

/// Linux's `csum_partial(buf, len, wsum)` for a buffer that starts 8-byte aligned: the
/// running 32-bit sum `wsum` plus [`fold_sum`], with end-around carry.
pub fn csum_partial(bytes: &[u8], wsum: u32) -> u32 {
    add32(fold_sum(bytes), wsum)
}

/// [`csum_partial`] over a block in memory, page by page (a folio of any order).
fn csum_block<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    order: u32,
    mut wsum: u32,
) -> Result<u32, LinuxClientError> {
    // Each page sums to a 16-bit value; adding those with end-around carry gives the same
    // result as one sum over the whole block (ones'-complement sums regroup freely).
    let mut page: PageBuf = ZERO_PAGE;
    let mut block = 0u64;
    for i in 0..(1u64 << order) {
        let at = phys + i * PAGE_SIZE;
        if !read_page(mem, at, &mut page) {
            return Err(LinuxClientError::Unreadable { phys: at });
        }
        block = add64(block, u64::from(fold_sum(page_bytes(&page))));
    }
    wsum = add32(fold(block), wsum);
    Ok(wsum)
}

/// Linux's `kexec-metadata` client: which kernel handed over, and kexecs since a cold boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KexecMetadata {
    /// `previous_release`: the release string of the image that handed over.
    pub release: String,
    /// `kexec_count`: handovers since the last cold boot, this one included.
    pub count: u32,
}

impl KexecMetadata {
    /// Reads the packed blob (version 1, at least [`KEXEC_METADATA_SIZE`] bytes).
    pub fn decode(b: &[u8]) -> Result<Self, LinuxClientError> {
        let too_small = LinuxClientError::TooSmall {
            what: "kexec-metadata",
            len: b.len() as u64,
        };
        let version = u32_le(b.get(0..4).ok_or(too_small.clone())?);
        if version != KEXEC_METADATA_VERSION {
            return Err(LinuxClientError::MetadataVersion { version });
        }
        if b.len() < KEXEC_METADATA_SIZE {
            return Err(too_small);
        }
        let rel = &b[4..4 + RELEASE_LEN];
        let end = rel.iter().position(|&c| c == 0).unwrap_or(RELEASE_LEN);
        let release = rel[..end]
            .iter()
            .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
            .collect();
        let mut cnt = [0u8; 4];
        cnt.copy_from_slice(&b[4 + RELEASE_LEN..KEXEC_METADATA_SIZE]);
        Ok(KexecMetadata {
            release,
            count: u32::from_le_bytes(cnt),
        })
    }

    /// The packed blob (release cut to 64 bytes, NUL padded).
    pub fn encode(&self) -> [u8; KEXEC_METADATA_SIZE] {
        let mut b = [0u8; KEXEC_METADATA_SIZE];
        b[0..4].copy_from_slice(&KEXEC_METADATA_VERSION.to_le_bytes());
        let rel = self.release.as_bytes();
        let n = rel.len().min(RELEASE_LEN - 1);
        b[4..4 + n].copy_from_slice(&rel[..n]);
        b[4 + RELEASE_LEN..].copy_from_slice(&self.count.to_le_bytes());
        b
    }
}

/// Linux's `struct kho_vmalloc`: a preserved vmalloc area, as 16 little-endian bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KhoVmalloc {
    /// Physical address of the first chunk page.
    pub first: u64,
    /// Pages in the area.
    pub total_pages: u32,
    /// `KHO_VMALLOC_*` flags.
    pub flags: u16,
    /// Order of each contiguous run of the area.
    pub order: u16,
}

impl KhoVmalloc {
    /// Decodes the 16-byte property value.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 16 {
            return None;
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Some(KhoVmalloc {
            first: u64_at(0),
            total_pages: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            order: u16::from_le_bytes([b[14], b[15]]),
        })
    }

    /// The 16-byte property value.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.first.to_le_bytes());
        b[8..12].copy_from_slice(&self.total_pages.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.order.to_le_bytes());
        b
    }
}

/// What a `kho-test-v1` client holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KhoTestSummary {
    /// Folios listed.
    pub folios: u32,
    /// Bytes in those folios.
    pub bytes: u64,
    /// The checksum (stored, and recomputed equal when verified).
    pub csum: u32,
}

fn prop<'a>(
    fdt: &Fdt<'a>,
    node: usize,
    name: &'static str,
    len: usize,
) -> Result<&'a [u8], LinuxClientError> {
    match fdt.nodes[node].prop(name) {
        Some(v) if v.len() == len => Ok(v),
        v => Err(LinuxClientError::Property {
            prop: name,
            len: v.map_or(0, |v| v.len()),
        }),
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Verifies the `kho-test-v1` client whose sub-FDT is `(phys, size)` the way Linux's test
/// module does on restore, reading memory only: compatible, magic, the vmalloc'd folio
/// list, each folio a preserved block of its recorded order, and the checksum over every
/// folio. `preserved(phys, order)` must say whether exactly that block is preserved.
pub fn verify_kho_test<M: PhysMem + ?Sized>(
    mem: &M,
    phys: u64,
    size: u64,
    preserved: &dyn Fn(u64, u32) -> bool,
) -> Result<KhoTestSummary, LinuxClientError> {
    if !(40..=crate::format::MAX_KHO_FDT_SIZE).contains(&size) {
        return Err(LinuxClientError::TooSmall {
            what: "kho-test-v1 sub-FDT",
            len: size,
        });
    }
    let bytes =
        read_bytes(mem, phys, size as usize).ok_or(LinuxClientError::Unreadable { phys })?;
    let fdt = Fdt::parse(&bytes).map_err(|err| LinuxClientError::SubFdt { phys, err })?;
    let compat = fdt.root().prop("compatible").unwrap_or(&[]);
    if !compat
        .split(|&c| c == 0)
        .any(|e| e == KHO_TEST_COMPATIBLE.as_bytes())
    {
        return Err(LinuxClientError::NotKhoTest { phys });
    }
    let magic = u32_le(prop(&fdt, 0, "magic", 4)?);
    if magic != KHO_TEST_MAGIC {
        return Err(LinuxClientError::Magic { value: magic });
    }
    let data = fdt.child(0, "data").ok_or(LinuxClientError::Property {
        prop: "data",
        len: 0,
    })?;
    let nr = u32_le(prop(&fdt, data, "nr_folios", 4)?);
    let stored = u32_le(prop(&fdt, data, "csum", 4)?);
    let vm = KhoVmalloc::decode(prop(&fdt, data, "folios_info", 16)?).ok_or(
        LinuxClientError::Property {
            prop: "folios_info",
            len: 0,
        },
    )?;
    let pages = vmalloc_pages(mem, &vm, preserved)?;
    let capacity = pages.len() as u64 * (PAGE_SIZE / 8);
    if u64::from(nr) > capacity {
        return Err(LinuxClientError::FolioCount { nr, capacity });
    }
    let mut csum = 0u32;
    let mut total = 0u64;
    let mut page: PageBuf = ZERO_PAGE;
    for i in 0..u64::from(nr) {
        let per = PAGE_SIZE / 8;
        let at = pages[(i / per) as usize];
        if i % per == 0 && !read_page(mem, at, &mut page) {
            return Err(LinuxClientError::Unreadable { phys: at });
        }
        let entry = u64::from_le(page[(i % per) as usize]);
        let order = (entry & (PAGE_SIZE - 1)) as u32;
        let folio = entry & !(PAGE_SIZE - 1);
        if order > crate::key::MAX_KEY_ORDER || !preserved(folio, order) {
            return Err(LinuxClientError::NotPreserved {
                what: "folio",
                phys: folio,
                order,
            });
        }
        csum = csum_block(mem, folio, order, csum)?;
        total += PAGE_SIZE << order;
    }
    if csum != stored {
        return Err(LinuxClientError::Checksum {
            stored,
            computed: csum,
        });
    }
    Ok(KhoTestSummary {
        folios: nr,
        bytes: total,
        csum,
    })
}

/// The pages of a preserved vmalloc area, in order, after checking every chunk and run is
/// a preserved block and the count matches `total_pages`.
fn vmalloc_pages<M: PhysMem + ?Sized>(
    mem: &M,
    vm: &KhoVmalloc,
    preserved: &dyn Fn(u64, u32) -> bool,
) -> Result<Vec<u64>, LinuxClientError> {
    let order = u32::from(vm.order);
    if order > KHO_TEST_MAX_ORDER {
        return Err(LinuxClientError::Vmalloc {
            what: "order too large",
            value: order.into(),
        });
    }
    if vm.flags & !(KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP) != 0 {
        return Err(LinuxClientError::Vmalloc {
            what: "unknown flags",
            value: vm.flags.into(),
        });
    }
    let total = u64::from(vm.total_pages);
    let run = 1u64 << order;
    // Every chunk names up to 511 runs: more chunks than that is a cycle or junk.
    let max_chunks = total.div_ceil(run * VMALLOC_CHUNK_ENTRIES as u64) + 1;
    let mut pages = Vec::with_capacity(total as usize);
    let mut chunk = vm.first;
    let mut chunks = 0u64;
    let mut page: PageBuf = ZERO_PAGE;
    while chunk != 0 {
        chunks += 1;
        if chunks > max_chunks || !chunk.is_multiple_of(PAGE_SIZE) || !preserved(chunk, 0) {
            return Err(LinuxClientError::NotPreserved {
                what: "vmalloc chunk",
                phys: chunk,
                order: 0,
            });
        }
        if !read_page(mem, chunk, &mut page) {
            return Err(LinuxClientError::Unreadable { phys: chunk });
        }
        let word = |i: usize| u64::from_le(page[i]);
        for i in 1..=VMALLOC_CHUNK_ENTRIES {
            let at = word(i);
            if at == 0 {
                break;
            }
            if pages.len() as u64 + run > total {
                return Err(LinuxClientError::Vmalloc {
                    what: "more pages than total_pages",
                    value: total,
                });
            }
            // Linux preserves each run as pages cut at natural alignment: order-0 runs are
            // single blocks; a larger run must be one block of its order.
            if !at.is_multiple_of(PAGE_SIZE << order) || !preserved(at, order) {
                return Err(LinuxClientError::NotPreserved {
                    what: "vmalloc page",
                    phys: at,
                    order,
                });
            }
            for p in 0..run {
                pages.push(at + p * PAGE_SIZE);
            }
        }
        chunk = word(0);
    }
    if pages.len() as u64 != total {
        return Err(LinuxClientError::Vmalloc {
            what: "fewer pages than total_pages",
            value: total,
        });
    }
    Ok(pages)
}

/// Why authoring a `kho-test-v1` client failed.
#[derive(Clone, Debug)]
pub enum AuthorError {
    /// `mm` could not allocate.
    Mm(MmError),
    /// `kho` refused a preserve or the client.
    Kho(KhoError),
    /// The sub-FDT could not be written.
    Fdt(FdtWriteError),
    /// Memory just allocated could not be written.
    Unwritable { phys: u64 },
}

impl fmt::Display for AuthorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthorError::Mm(e) => write!(f, "mm: {e}"),
            AuthorError::Kho(e) => write!(f, "kho: {e}"),
            AuthorError::Fdt(e) => write!(f, "sub-FDT: {e:?}"),
            AuthorError::Unwritable { phys } => write!(f, "{phys:#x} not writable"),
        }
    }
}

impl From<MmError> for AuthorError {
    fn from(e: MmError) -> Self {
        AuthorError::Mm(e)
    }
}

impl From<KhoError> for AuthorError {
    fn from(e: KhoError) -> Self {
        AuthorError::Kho(e)
    }
}

/// Pages needed to hold `bytes` (at least one), as an order.
fn order_for_bytes(bytes: u64) -> u32 {
    bytes
        .div_ceil(PAGE_SIZE)
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
}

/// Authors a `kho-test-v1` client the way Linux's test module does before a kexec: folios of
/// random orders `0..=10` (capped by `fa`'s largest order) filled with random bytes until
/// `max_mem` bytes, the folio list in a vmalloc-style area (order-0 pages and chunk pages,
/// each preserved), the checksum, and the sub-FDT in a preserved folio, named `kho_test`.
/// `rand` gives random 64-bit words.
pub fn author_kho_test<M: PhysMem, N: PhysMem + ?Sized>(
    kho: &mut Kho<M>,
    fa: &mut FrameAllocator<'_>,
    mem: &N,
    max_mem: u64,
    rand: &mut dyn FnMut() -> u64,
) -> Result<KhoTestSummary, AuthorError> {
    let max_mem = max_mem.next_multiple_of(PAGE_SIZE);
    let top = KHO_TEST_MAX_ORDER.min(fa.max_order());
    let mut folios: Vec<u64> = Vec::new();
    let (mut done, mut csum) = (0u64, 0u32);
    let mut page: PageBuf = ZERO_PAGE;
    while done < max_mem {
        let mut order = (rand() % u64::from(top + 1)) as u32;
        if done + (PAGE_SIZE << order) > max_mem {
            order = order_for_bytes(max_mem - done).saturating_sub(1);
        }
        let head = fa.alloc_folio(order)?;
        let phys = head.phys().0;
        let mut block = 0u64;
        for p in 0..(1u64 << order) {
            for w in page.iter_mut() {
                *w = rand().to_le();
            }
            let at = phys + p * PAGE_SIZE;
            if !write_bytes(mem, at, page_bytes(&page)) {
                return Err(AuthorError::Unwritable { phys: at });
            }
            block = add64(block, u64::from(fold_sum(page_bytes(&page))));
        }
        csum = add32(fold(block), csum);
        kho.preserve_folio(fa, head)?;
        folios.push(phys | u64::from(order));
        done += PAGE_SIZE << order;
    }
    let vm = write_vmalloc_array(kho, fa, mem, &folios)?;
    let summary = KhoTestSummary {
        folios: folios.len() as u32,
        bytes: done,
        csum,
    };
    let sub = kho_test_fdt(&summary, &vm).map_err(AuthorError::Fdt)?;
    // The test module sizes its FDT folio for its folio count plus a page.
    let fdt_order = order_for_bytes(folios.len() as u64 * 8 + PAGE_SIZE);
    let head = fa.alloc_folio(fdt_order)?;
    let at = head.phys().0;
    if !write_bytes(mem, at, &sub) {
        return Err(AuthorError::Unwritable { phys: at });
    }
    kho.preserve_folio(fa, head)?;
    kho.add_client(KHO_TEST_NODE, at, sub.len() as u64)?;
    Ok(summary)
}

/// The test module's sub-FDT: compatible, magic, and `/data` with the folio count, the
/// vmalloc descriptor and the checksum, all in the CPU's (little-endian) byte order.
fn kho_test_fdt(s: &KhoTestSummary, vm: &KhoVmalloc) -> Result<Vec<u8>, FdtWriteError> {
    let mut w = FdtWriter::new();
    w.begin_node("")?;
    w.prop_str("compatible", KHO_TEST_COMPATIBLE)?;
    w.prop("magic", &KHO_TEST_MAGIC.to_le_bytes())?;
    w.begin_node("data")?;
    w.prop("nr_folios", &s.folios.to_le_bytes())?;
    w.prop("folios_info", &vm.encode())?;
    w.prop("csum", &s.csum.to_le_bytes())?;
    w.end_node()?;
    w.end_node()?;
    w.finish()
}

/// Writes `entries` (u64 each) into preserved order-0 pages described the way Linux's
/// `kho_preserve_vmalloc` describes an area: chunk pages of `{next, phys[511]}`.
fn write_vmalloc_array<M: PhysMem, N: PhysMem + ?Sized>(
    kho: &mut Kho<M>,
    fa: &mut FrameAllocator<'_>,
    mem: &N,
    entries: &[u64],
) -> Result<KhoVmalloc, AuthorError> {
    let per = (PAGE_SIZE / 8) as usize;
    let mut data: Vec<u64> = Vec::new();
    for part in entries.chunks(per) {
        let pfn = fa.alloc_pages(0)?;
        let mut page: PageBuf = ZERO_PAGE;
        for (i, e) in part.iter().enumerate() {
            page[i] = e.to_le();
        }
        write_page(mem, pfn, &page)?;
        kho.preserve_pages(fa, pfn, 1)?;
        data.push(pfn.phys().0);
    }
    // Chunks are linked front to back: write them back to front so each knows its `next`.
    let mut next = 0u64;
    let groups: Vec<&[u64]> = data.chunks(VMALLOC_CHUNK_ENTRIES).collect();
    let groups: Vec<&[u64]> = if groups.is_empty() {
        alloc::vec![&[][..]]
    } else {
        groups
    };
    for g in groups.iter().rev() {
        let pfn = fa.alloc_pages(0)?;
        let mut page: PageBuf = ZERO_PAGE;
        page[0] = next.to_le();
        for (i, p) in g.iter().enumerate() {
            page[1 + i] = p.to_le();
        }
        write_page(mem, pfn, &page)?;
        kho.preserve_pages(fa, pfn, 1)?;
        next = pfn.phys().0;
    }
    Ok(KhoVmalloc {
        first: next,
        total_pages: data.len() as u32,
        flags: KHO_VMALLOC_ALLOC,
        order: 0,
    })
}

fn write_page<N: PhysMem + ?Sized>(mem: &N, pfn: Pfn, page: &PageBuf) -> Result<(), AuthorError> {
    let at = pfn.phys().0;
    if write_bytes(mem, at, page_bytes(page)) {
        Ok(())
    } else {
        Err(AuthorError::Unwritable { phys: at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_sum_matches_a_16_bit_ones_complement_sum() {
        // The same value summed 16 bits at a time, the textbook way.
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut s: u32 = 0;
        for w in bytes.chunks_exact(2) {
            s += u32::from(u16::from_le_bytes([w[0], w[1]]));
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(fold_sum(&bytes), s);
        assert_eq!(fold_sum(&[0; 64]), 0);
        assert_eq!(fold_sum(&[0xff; 64]), 0xffff);
    }

    #[test]
    fn csum_partial_chains_with_end_around_carry() {
        // 0xffff + 0xffff_0001 carries out of 32 bits: the carry comes back in at bit 0.
        assert_eq!(csum_partial(&[0xff, 0xff], 0xffff_0001), 1);
        assert_eq!(csum_partial(&[1, 0], 2), 3);
    }

    #[test]
    fn kexec_metadata_round_trips_and_refuses_other_versions() {
        let m = KexecMetadata {
            release: String::from("baton-0.1.0"),
            count: 7,
        };
        let b = m.encode();
        assert_eq!(b.len(), 73);
        assert_eq!(KexecMetadata::decode(&b), Ok(m));
        let mut v2 = b;
        v2[0] = 2;
        assert_eq!(
            KexecMetadata::decode(&v2),
            Err(LinuxClientError::MetadataVersion { version: 2 })
        );
        assert_eq!(
            KexecMetadata::decode(&b[..72]),
            Err(LinuxClientError::TooSmall {
                what: "kexec-metadata",
                len: 72
            })
        );
    }

    #[test]
    fn vmalloc_descriptor_is_16_little_endian_bytes() {
        let v = KhoVmalloc {
            first: 0x4123_4000,
            total_pages: 3,
            flags: KHO_VMALLOC_ALLOC,
            order: 0,
        };
        let b = v.encode();
        assert_eq!(&b[..8], &0x4123_4000u64.to_le_bytes());
        assert_eq!(KhoVmalloc::decode(&b), Some(v));
        assert_eq!(KhoVmalloc::decode(&b[..15]), None);
    }
}
