//! The previous release's writer (`baton,kho-typed-v1`), kept for tests of the upgrade path.
//!
//! Owns nothing an image uses: it builds v1's two trees (every block untyped in the main
//! tree, SPLIT blocks again in the split tree) and the v1 KHO FDT over them, so host tests
//! can hand a v1 handover to this release's reader. Only with feature `test-helpers`.

use alloc::vec::Vec;

use crate::fdt::FdtWriteError;
use crate::format::{write_kho_fdt_v1, ClientEntry, MetaCrc};
use crate::key::{encode, BlockType};
use crate::phys::PhysMem;
use crate::tree::{PageSource, Tree, TreeError};
use crate::validate::Block;

/// Why a v1 handover could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V1Error {
    /// A tree page could not be had or reached.
    Tree(TreeError),
    /// The KHO FDT could not be written.
    Fdt(FdtWriteError),
}

impl From<TreeError> for V1Error {
    fn from(e: TreeError) -> Self {
        V1Error::Tree(e)
    }
}

/// A v1 handover of `blocks` and `clients`: its two trees (pages from `src`) and the bytes of
/// its KHO FDT (to be placed in pages of their own). Returns `(fdt, tree pages)`.
pub fn write_v1_handover<M: PhysMem + ?Sized, S: PageSource + ?Sized>(
    mem: &M,
    src: &mut S,
    blocks: &[Block],
    clients: &[ClientEntry],
) -> Result<(Vec<u8>, Vec<u64>), V1Error> {
    let mut main = Tree::new(mem, src)?;
    let mut split = Tree::new(mem, src)?;
    for b in blocks {
        let key = encode(b.phys, b.order);
        main.set(mem, src, key)?;
        if b.kind == BlockType::Split {
            split.set(mem, src, key)?;
        }
    }
    let mut crc = MetaCrc::new_v1(main.root(), split.root());
    let mut pages = Vec::new();
    for t in [&main, &split] {
        t.walk(mem, &mut |p| pages.push(p), &mut |_| {})?;
    }
    for &p in &pages {
        if !crc.page(mem, p) {
            return Err(V1Error::Tree(TreeError::NodeNotRam { phys: p }));
        }
    }
    for c in clients {
        crc.client(c);
    }
    let fdt =
        write_kho_fdt_v1(main.root(), split.root(), crc.finish(), clients).map_err(V1Error::Fdt)?;
    Ok((fdt, pages))
}
