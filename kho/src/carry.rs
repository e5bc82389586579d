//! What one image carries for another: preserved blocks and client entries that this
//! image's workload does not own (a Linux kernel's, handed through baton), kept unchanged
//! from handover to handover.
//!
//! Owns the `baton-carry` client blob of baton's own format (`docs/abi.md` §10.4): the list
//! that tells the next baton image which blocks and clients are carried, so its workload
//! never sees them. Never touches the carried memory itself.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::format::client_name_ok;
use crate::incoming::IncomingError;
use crate::key::{decode_typed, encode_typed, BlockType};
use crate::outgoing::KhoError;

/// Client name of the carry list in baton's own format.
pub const CARRY_CLIENT: &str = "baton-carry";
/// First bytes of the carry blob ("BCRY" little-endian), then its version.
const MAGIC: u32 = 0x5952_4342;
const VERSION: u32 = 1;
/// Bytes of the blob's header: five u32 words.
const HEADER: usize = 20;
/// Most entries a carry list may name (blocks and clients): bounds the parse.
pub const MAX_CARRIED: usize = 1 << 24;

/// Why carrying failed, or why a carry list is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CarryError {
    /// The previous image's block could not be claimed.
    Incoming(IncomingError),
    /// The outgoing handover refused the block or client.
    Kho(KhoError),
    /// The blob is not a carry list: the check and the offset where it failed.
    Malformed { what: &'static str, offset: usize },
}

impl fmt::Display for CarryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CarryError::Incoming(e) => write!(f, "claiming a carried block: {e}"),
            CarryError::Kho(e) => write!(f, "preserving a carried block: {e}"),
            CarryError::Malformed { what, offset } => {
                write!(f, "{CARRY_CLIENT} blob: {what} at offset {offset}")
            }
        }
    }
}

impl From<IncomingError> for CarryError {
    fn from(e: IncomingError) -> Self {
        CarryError::Incoming(e)
    }
}

impl From<KhoError> for CarryError {
    fn from(e: KhoError) -> Self {
        CarryError::Kho(e)
    }
}

/// Blocks and client names carried for another owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CarryList {
    /// `(phys, order, type)` of each carried block.
    pub blocks: Vec<(u64, u32, BlockType)>,
    /// Names of carried client entries.
    pub clients: Vec<String>,
}

impl CarryList {
    /// True if nothing is carried.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.clients.is_empty()
    }

    /// The blob: magic, version, the next image's kexec count, block count, client count
    /// (u32 LE each), the blocks as v2 typed keys (u64 LE), then each client name NUL
    /// terminated.
    pub fn encode(&self, kexec_count: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + 8 * self.blocks.len());
        for w in [
            MAGIC,
            VERSION,
            kexec_count,
            self.blocks.len() as u32,
            self.clients.len() as u32,
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for &(p, o, t) in &self.blocks {
            v.extend_from_slice(&encode_typed(p, o, t).to_le_bytes());
        }
        for c in &self.clients {
            v.extend_from_slice(c.as_bytes());
            v.push(0);
        }
        v
    }

    /// Reads a blob written by [`CarryList::encode`] (the list and the kexec count); every
    /// field is checked.
    pub fn decode(b: &[u8]) -> Result<(Self, u32), CarryError> {
        let bad = |what, offset| CarryError::Malformed { what, offset };
        let word = |i: usize| -> Result<u32, CarryError> {
            let s = b.get(i..i + 4).ok_or(bad("truncated header", i))?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        if word(0)? != MAGIC {
            return Err(bad("bad magic", 0));
        }
        if word(4)? != VERSION {
            return Err(bad("unknown version", 4));
        }
        let count = word(8)?;
        let (nb, nc) = (word(12)? as usize, word(16)? as usize);
        if nb.saturating_add(nc) > MAX_CARRIED {
            return Err(bad("too many entries", 12));
        }
        let mut out = CarryList::default();
        let mut at = HEADER;
        for _ in 0..nb {
            let s = b.get(at..at + 8).ok_or(bad("truncated block list", at))?;
            let mut k = [0u8; 8];
            k.copy_from_slice(s);
            let key = decode_typed(u64::from_le_bytes(k)).map_err(|_| bad("bad block key", at))?;
            out.blocks.push(key);
            at += 8;
        }
        for _ in 0..nc {
            let rest = b.get(at..).ok_or(bad("truncated client list", at))?;
            let n = rest
                .iter()
                .position(|&c| c == 0)
                .ok_or(bad("unterminated client name", at))?;
            let name =
                core::str::from_utf8(&rest[..n]).map_err(|_| bad("client name not UTF-8", at))?;
            if !client_name_ok(name) {
                return Err(bad("bad client name", at));
            }
            out.clients.push(String::from(name));
            at += n + 1;
        }
        if at != b.len() {
            return Err(bad("trailing bytes", at));
        }
        Ok((out, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CarryList {
        CarryList {
            blocks: alloc::vec![
                (0x4000_0000, 10, BlockType::Contig),
                (0x4800_1000, 0, BlockType::Split),
            ],
            clients: alloc::vec![String::from("kho_test")],
        }
    }

    #[test]
    fn carry_list_round_trips() {
        let l = sample();
        assert_eq!(CarryList::decode(&l.encode(3)), Ok((l, 3)));
    }

    #[test]
    fn carry_list_refuses_every_truncation_and_a_flipped_magic() {
        let b = sample().encode(1);
        for n in 0..b.len() {
            assert!(
                CarryList::decode(&b[..n]).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
        let mut m = b.clone();
        m[0] ^= 1;
        assert_eq!(
            CarryList::decode(&m),
            Err(CarryError::Malformed {
                what: "bad magic",
                offset: 0
            })
        );
    }
}
