//! The KHO FDT: names, property encoding and the metadata checksum (`docs/abi.md`).
//!
//! Owns writing the KHO FDT (`baton,kho-typed-v2`, or Linux's `kho-v4` for a Linux next
//! image) from this image's tree and clients, and reading the properties of a previous
//! image's KHO FDT (v2, the previous release's v1, or Linux's `kho-v4`) into plain values.
//! Never follows an address it reads: that is `validate`'s job.

use alloc::string::String;
use alloc::vec::Vec;

use crate::fdt::{Fdt, FdtWriteError, FdtWriter};
use crate::phys::{crc32_page_in_place, crc32_soft, read_page_crc32, PageBuf, PhysMem};

/// Root `compatible` of the KHO FDT this image writes: one tree of typed keys.
pub const COMPATIBLE: &str = "baton,kho-typed-v2";
/// Root `compatible` of the previous release's format (two trees), still read.
pub const COMPATIBLE_V1: &str = "baton,kho-typed-v1";
/// Root `compatible` of Linux 7.2's KHO FDT: one tree of untyped keys, no checksum; the
/// KHO FDT page and every client blob are preserved blocks themselves (`docs/abi.md` §10).
pub const COMPATIBLE_LINUX_V4: &str = "kho-v4";
/// Linux's client that says which kernel handed over and how many kexecs since a cold boot.
pub const KEXEC_METADATA: &str = "kexec-metadata";
/// Root property: u64 physical address of the root table of the tree of every block.
pub const PROP_MEMORY_MAP: &str = "preserved-memory-map";
/// v1 root property: u64 physical address of the root table of the tree of SPLIT blocks.
pub const PROP_SPLIT_MAP: &str = "baton,split-memory-map";
/// Root property: u64 whose low 32 bits are the CRC-32 of the metadata (high 32 bits zero).
pub const PROP_CHECKSUM: &str = "baton,metadata-crc32";
/// Client property: u64 physical address of the client's blob or sub-FDT.
pub const PROP_DATA: &str = "preserved-data";
/// Client property: u64 size in bytes of the client's blob.
pub const PROP_SIZE: &str = "blob-size";
/// `/chosen` property of the boot FDT: address and size of the KHO FDT.
pub const CHOSEN_KHO_FDT: &str = "linux,kho-fdt";
/// `/chosen` property of the boot FDT: address and size of the scratch array.
pub const CHOSEN_KHO_SCRATCH: &str = "linux,kho-scratch";
/// Largest KHO FDT the next image accepts.
pub const MAX_KHO_FDT_SIZE: u64 = 1 << 20;
/// Longest client name (a node name without unit address): Linux's node name limit.
pub const MAX_CLIENT_NAME: usize = 63;

/// Which handover format a KHO FDT is in (its root `compatible`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbiVersion {
    /// `baton,kho-typed-v1`: untyped keys in a main tree, SPLIT keys again in a split tree.
    V1,
    /// `baton,kho-typed-v2`: one tree, the type in key bit 59.
    V2,
    /// Linux's `kho-v4`: one tree of untyped keys (every block CONTIG), no checksum.
    LinuxV4,
}

impl AbiVersion {
    /// The root `compatible` string of this format.
    pub const fn compatible(self) -> &'static str {
        match self {
            AbiVersion::V1 => COMPATIBLE_V1,
            AbiVersion::V2 => COMPATIBLE,
            AbiVersion::LinuxV4 => COMPATIBLE_LINUX_V4,
        }
    }

    /// True for the formats whose keys carry no type (v1's main tree, Linux's tree).
    pub const fn untyped_keys(self) -> bool {
        !matches!(self, AbiVersion::V2)
    }

    /// True for baton's own formats (checksummed metadata, baton's rules).
    pub const fn is_baton(self) -> bool {
        !matches!(self, AbiVersion::LinuxV4)
    }
}

impl core::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.compatible())
    }
}

/// One client sub-tree entry: a named, preserved blob.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientEntry {
    /// Node name in the KHO FDT.
    pub name: String,
    /// Physical address of the blob or sub-FDT.
    pub phys: u64,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// True if `name` is a client name these formats allow: 1..=63 of `[A-Za-z0-9,._+-_]`,
/// starting with a letter (Linux's clients, such as `kho_test`, fit).
pub fn client_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CLIENT_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ",._+-_".contains(c))
}

/// Running CRC-32 over the handover metadata, in the order `docs/abi.md` fixes. Tree pages
/// go through [`PhysMem::crc32_update`] (the CPU's CRC instructions on the target); the few
/// other bytes through crc32fast: both compute the same CRC-32.
pub struct MetaCrc(u32);

impl MetaCrc {
    /// v2: starts with the root address.
    pub fn new(root: u64) -> Self {
        MetaCrc(crc32_soft(0, &root.to_le_bytes()))
    }
    /// v1: starts with the two root addresses (main, then split).
    pub fn new_v1(main_root: u64, split_root: u64) -> Self {
        let c = crc32_soft(0, &main_root.to_le_bytes());
        MetaCrc(crc32_soft(c, &split_root.to_le_bytes()))
    }
    /// Starts as the KHO FDT `view` says: v2 with its root, v1 with both roots.
    pub fn for_view(view: &KhoFdtView) -> Self {
        match view.split_root {
            Some(split) => Self::new_v1(view.main_root, split),
            None => Self::new(view.main_root),
        }
    }
    /// Adds one tree page (4096 bytes, page aligned) of this image's own tree, hashed where
    /// it lies (nothing writes it meanwhile); false if it is not RAM.
    pub fn page<M: PhysMem + ?Sized>(&mut self, mem: &M, phys: u64) -> bool {
        match crc32_page_in_place(mem, phys, self.0) {
            Some(crc) => {
                self.0 = crc;
                true
            }
            None => false,
        }
    }
    /// Copies the tree page at `phys` into `out` and adds it, hashing while it copies
    /// ([`PhysMem::copy_crc32`]): what is hashed is exactly what the caller then decodes.
    /// False (nothing added) if the page is not RAM.
    pub fn read_page<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        phys: u64,
        out: &mut PageBuf,
    ) -> bool {
        match read_page_crc32(mem, phys, out, self.0) {
            Some(crc) => {
                self.0 = crc;
                true
            }
            None => false,
        }
    }
    /// Adds one client entry.
    pub fn client(&mut self, c: &ClientEntry) {
        let mut h = self.0;
        h = crc32_soft(h, c.name.as_bytes());
        h = crc32_soft(h, &[0]);
        h = crc32_soft(h, &c.phys.to_le_bytes());
        self.0 = crc32_soft(h, &c.size.to_le_bytes());
    }
    /// The CRC-32.
    pub fn finish(self) -> u32 {
        self.0
    }
}

/// Builds the KHO FDT bytes (v2).
pub fn write_kho_fdt(
    root: u64,
    crc: u32,
    clients: &[ClientEntry],
) -> Result<Vec<u8>, FdtWriteError> {
    write_any(COMPATIBLE, root, None, Some(crc), clients)
}

/// Builds the KHO FDT bytes of the previous release's format (v1: two trees), for tests of
/// the upgrade path. This image never hands over in v1.
#[cfg(any(test, feature = "test-helpers"))]
pub fn write_kho_fdt_v1(
    main_root: u64,
    split_root: u64,
    crc: u32,
    clients: &[ClientEntry],
) -> Result<Vec<u8>, FdtWriteError> {
    write_any(
        COMPATIBLE_V1,
        main_root,
        Some(split_root),
        Some(crc),
        clients,
    )
}

/// Rewrites a view as it was read (same format, same properties): tests edit a handover so.
#[cfg(any(test, feature = "test-helpers"))]
pub fn write_view(v: &KhoFdtView) -> Result<Vec<u8>, FdtWriteError> {
    let crc = v.version.is_baton().then_some(v.crc);
    write_any(
        v.version.compatible(),
        v.main_root,
        v.split_root,
        crc,
        &v.clients,
    )
}

/// Builds a KHO FDT in Linux's `kho-v4` format: the root of a tree of untyped keys and the
/// clients; no checksum (Linux has none). The caller preserves the page it lands in.
pub fn write_kho_fdt_linux(root: u64, clients: &[ClientEntry]) -> Result<Vec<u8>, FdtWriteError> {
    write_any(COMPATIBLE_LINUX_V4, root, None, None, clients)
}

fn write_any(
    compatible: &str,
    main_root: u64,
    split_root: Option<u64>,
    crc: Option<u32>,
    clients: &[ClientEntry],
) -> Result<Vec<u8>, FdtWriteError> {
    let mut w = FdtWriter::new();
    w.begin_node("")?;
    w.prop_str("compatible", compatible)?;
    w.prop_u64_le(PROP_MEMORY_MAP, main_root)?;
    if let Some(split_root) = split_root {
        w.prop_u64_le(PROP_SPLIT_MAP, split_root)?;
    }
    if let Some(crc) = crc {
        w.prop_u64_le(PROP_CHECKSUM, u64::from(crc))?;
    }
    for c in clients {
        w.begin_node(&c.name)?;
        w.prop_u64_le(PROP_DATA, c.phys)?;
        w.prop_u64_le(PROP_SIZE, c.size)?;
        w.end_node()?;
    }
    w.end_node()?;
    w.finish()
}

/// What the KHO FDT says, before any address in it is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KhoFdtView {
    /// The format its `compatible` names.
    pub version: AbiVersion,
    /// Root of the tree of every block.
    pub main_root: u64,
    /// v1 only: root of the tree of SPLIT blocks.
    pub split_root: Option<u64>,
    /// Stored CRC-32 (0 for `kho-v4`, which has none).
    pub crc: u32,
    /// Client entries in FDT order.
    pub clients: Vec<ClientEntry>,
}

/// Why the KHO FDT's properties are unusable (the FDT itself parsed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// Root `compatible` names no format this image reads ([`COMPATIBLE`], [`COMPATIBLE_V1`],
    /// or [`COMPATIBLE_LINUX_V4`] anywhere in its list).
    BadCompatible,
    /// A required property is missing; `node` is "/" or the client name.
    MissingProperty { node: String, prop: &'static str },
    /// A u64 property is not exactly 8 bytes.
    BadPropertySize {
        node: String,
        prop: &'static str,
        len: usize,
    },
    /// The checksum property has bits above 32 set.
    BadChecksumProperty { value: u64 },
    /// A client node's name is not allowed, or repeats, or the node has children.
    BadClientNode { node: String },
}

fn u64_prop(fdt: &Fdt<'_>, node: usize, prop: &'static str) -> Result<u64, FormatError> {
    let n = &fdt.nodes[node];
    let name = || {
        if node == 0 {
            String::from("/")
        } else {
            String::from(n.name)
        }
    };
    let v = n
        .prop(prop)
        .ok_or_else(|| FormatError::MissingProperty { node: name(), prop })?;
    let arr: [u8; 8] = v.try_into().map_err(|_| FormatError::BadPropertySize {
        node: name(),
        prop,
        len: v.len(),
    })?;
    Ok(u64::from_le_bytes(arr))
}

/// Reads the KHO FDT's properties.
pub fn read_kho_fdt(fdt: &Fdt<'_>) -> Result<KhoFdtView, FormatError> {
    let compat = fdt
        .root()
        .prop("compatible")
        .ok_or(FormatError::BadCompatible)?;
    let first = compat.split(|&c| c == 0).next().unwrap_or(&[]);
    if compat.last() != Some(&0) {
        return Err(FormatError::BadCompatible);
    }
    // baton's formats name themselves first; Linux matches `kho-v4` anywhere in the list
    // (as its `fdt_node_check_compatible` does).
    let linux = compat[..compat.len() - 1]
        .split(|&c| c == 0)
        .any(|e| e == COMPATIBLE_LINUX_V4.as_bytes());
    let version = [AbiVersion::V2, AbiVersion::V1]
        .into_iter()
        .find(|v| first == v.compatible().as_bytes())
        .or(linux.then_some(AbiVersion::LinuxV4))
        .ok_or(FormatError::BadCompatible)?;
    let main_root = u64_prop(fdt, 0, PROP_MEMORY_MAP)?;
    // In v2 a `baton,split-memory-map` is an unknown property: ignored, never walked.
    let split_root = match version {
        AbiVersion::V1 => Some(u64_prop(fdt, 0, PROP_SPLIT_MAP)?),
        AbiVersion::V2 | AbiVersion::LinuxV4 => None,
    };
    let crc = if version.is_baton() {
        let crc64 = u64_prop(fdt, 0, PROP_CHECKSUM)?;
        u32::try_from(crc64).map_err(|_| FormatError::BadChecksumProperty { value: crc64 })?
    } else {
        0
    };
    let mut clients: Vec<ClientEntry> = Vec::new();
    for &c in &fdt.root().children {
        let n = &fdt.nodes[c];
        if !client_name_ok(n.name)
            || !n.children.is_empty()
            || clients.iter().any(|e| e.name == n.name)
        {
            return Err(FormatError::BadClientNode {
                node: String::from(n.name),
            });
        }
        clients.push(ClientEntry {
            name: String::from(n.name),
            phys: u64_prop(fdt, c, PROP_DATA)?,
            size: u64_prop(fdt, c, PROP_SIZE)?,
        });
    }
    Ok(KhoFdtView {
        version,
        main_root,
        split_root,
        crc,
        clients,
    })
}
