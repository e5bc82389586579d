//! Small FDT writer: nodes, properties, memory reservations, v17 header.
//!
//! Owns the bytes it builds and nothing else. Checks names and nesting as it goes so that the
//! result always parses with `Fdt::parse`, `dtc` and libfdt.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::*;

/// Why the writer refused an operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FdtWriteError {
    /// A name contains NUL, or a non-root node name is empty.
    BadName,
    /// A property was added after a child node, or outside any node.
    PropertyOutOfOrder,
    /// `end_node` or `finish` did not match the open nodes.
    Unbalanced,
    /// The blob would exceed 4 GiB or nest deeper than `FDT_MAX_DEPTH`.
    TooLarge,
}

impl fmt::Display for FdtWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FdtWriteError::BadName => "FDT name is empty or contains NUL",
            FdtWriteError::PropertyOutOfOrder => {
                "FDT property after a child node or outside a node"
            }
            FdtWriteError::Unbalanced => "FDT nodes not closed in order",
            FdtWriteError::TooLarge => "FDT too large or too deep",
        })
    }
}

/// Builds an FDT blob.
#[derive(Debug, Default)]
pub struct FdtWriter {
    structure: Vec<u8>,
    strings: Vec<u8>,
    /// Offset of every name in `strings`, so each is stored once.
    names: BTreeMap<String, u32>,
    mem_reserve: Vec<(u64, u64)>,
    /// For each open node: has it got a child yet?
    open: Vec<bool>,
    root_done: bool,
    boot_cpuid_phys: u32,
}

impl FdtWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `/memreserve/` entry.
    pub fn mem_reserve(&mut self, addr: u64, size: u64) {
        self.mem_reserve.push((addr, size));
    }

    /// Sets the header's `boot_cpuid_phys`.
    pub fn boot_cpuid_phys(&mut self, id: u32) {
        self.boot_cpuid_phys = id;
    }

    fn token(&mut self, t: u32) {
        self.structure.extend_from_slice(&t.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    /// Opens a node; the first one must be the root (`""`).
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtWriteError> {
        if name.contains('\0') || self.open.is_empty() != name.is_empty() {
            return Err(FdtWriteError::BadName);
        }
        if self.root_done {
            return Err(FdtWriteError::Unbalanced);
        }
        if self.open.len() >= FDT_MAX_DEPTH {
            return Err(FdtWriteError::TooLarge);
        }
        if let Some(has_child) = self.open.last_mut() {
            *has_child = true;
        }
        self.token(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self.open.push(false);
        Ok(())
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtWriteError> {
        self.open.pop().ok_or(FdtWriteError::Unbalanced)?;
        self.token(FDT_END_NODE);
        if self.open.is_empty() {
            self.root_done = true;
        }
        Ok(())
    }

    /// Adds a property with a raw value to the innermost open node.
    pub fn prop(&mut self, name: &str, value: &[u8]) -> Result<(), FdtWriteError> {
        if name.is_empty() || name.contains('\0') {
            return Err(FdtWriteError::BadName);
        }
        match self.open.last() {
            Some(false) => {}
            _ => return Err(FdtWriteError::PropertyOutOfOrder),
        }
        let len = u32::try_from(value.len()).map_err(|_| FdtWriteError::TooLarge)?;
        let nameoff = self.intern(name)?;
        self.token(FDT_PROP);
        self.token(len);
        self.token(nameoff);
        self.structure.extend_from_slice(value);
        self.pad();
        Ok(())
    }

    /// Adds a NUL-terminated string property.
    pub fn prop_str(&mut self, name: &str, value: &str) -> Result<(), FdtWriteError> {
        if value.contains('\0') {
            return Err(FdtWriteError::BadName);
        }
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.prop(name, &v)
    }

    /// Adds a u64 property stored little-endian (the KHO FDT convention, see docs/abi.md).
    pub fn prop_u64_le(&mut self, name: &str, value: u64) -> Result<(), FdtWriteError> {
        self.prop(name, &value.to_le_bytes())
    }

    fn intern(&mut self, name: &str) -> Result<u32, FdtWriteError> {
        if let Some(&off) = self.names.get(name) {
            return Ok(off);
        }
        let off = u32::try_from(self.strings.len()).map_err(|_| FdtWriteError::TooLarge)?;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.names.insert(String::from(name), off);
        Ok(off)
    }

    /// Finishes the blob: header, reservations, structure, strings.
    pub fn finish(mut self) -> Result<Vec<u8>, FdtWriteError> {
        if !self.root_done || !self.open.is_empty() {
            return Err(FdtWriteError::Unbalanced);
        }
        self.token(FDT_END);
        let off_rsv = FDT_HEADER_SIZE; // 40, already 8-aligned
        let off_struct = off_rsv + 16 * (self.mem_reserve.len() + 1);
        let off_strings = off_struct + self.structure.len();
        let total = off_strings + self.strings.len();
        let total32 = u32::try_from(total).map_err(|_| FdtWriteError::TooLarge)?;
        let mut out = Vec::with_capacity(total.next_multiple_of(8));
        for v in [
            FDT_MAGIC,
            total32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            self.boot_cpuid_phys,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for &(a, s) in self.mem_reserve.iter().chain(core::iter::once(&(0, 0))) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&self.strings);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tree_parses_back() {
        let mut w = FdtWriter::new();
        w.mem_reserve(0x1000, 0x2000);
        w.begin_node("").unwrap();
        w.prop_str("compatible", "x,y").unwrap();
        w.prop_u64_le("a", 7).unwrap();
        w.begin_node("c@1").unwrap();
        w.prop("compatible", &[]).unwrap();
        w.end_node().unwrap();
        assert_eq!(w.prop("late", &[]), Err(FdtWriteError::PropertyOutOfOrder));
        w.end_node().unwrap();
        let b = w.finish().unwrap();
        let f = Fdt::parse(&b).unwrap();
        assert_eq!(f.mem_reserve, alloc::vec![(0x1000, 0x2000)]);
        assert_eq!(f.root().prop("compatible"), Some(&b"x,y\0"[..]));
        assert_eq!(f.root().prop("a"), Some(&7u64.to_le_bytes()[..]));
        assert_eq!(f.nodes[f.find("/c@1").unwrap()].props.len(), 1);
    }
}
