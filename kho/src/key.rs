//! Radix keys: a block's physical address and order folded into one integer.
//!
//! Owns the encoding only (`docs/abi.md`, "Keys"). The block type does not live in the key: it
//! travels as membership of the split tree (see `tree` and `docs/abi.md`, "Block types").

use core::fmt;
use mm::PAGE_SHIFT;

/// Bit position of the order marker for order 0 (`64 - PAGE_SHIFT`).
pub const ORDER0_MARKER_BIT: u32 = 64 - PAGE_SHIFT;
/// Largest order a key may carry in this format (a 4 TiB block): same as `mm::MAX_BLOCK_ORDER`.
pub const MAX_KEY_ORDER: u32 = 30;

/// How the pages of a preserved block hold references.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlockType {
    /// Not split: the head holds the only reference, tails are at 0 (folios are always this).
    Contig,
    /// Split: every page holds its own reference.
    Split,
}

impl fmt::Display for BlockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockType::Contig => "CONTIG",
            BlockType::Split => "SPLIT",
        })
    }
}

/// Why a raw key is not a block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The key is zero: no order marker at all.
    NoMarker,
    /// The highest set bit lies above the order-0 marker position (a negative order).
    MarkerAboveOrder0 { key: u64 },
    /// The order is larger than the format allows ([`MAX_KEY_ORDER`]).
    OrderTooLarge { key: u64, order: u32 },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NoMarker => write!(f, "key 0 has no order marker"),
            KeyError::MarkerAboveOrder0 { key } => {
                write!(
                    f,
                    "key {key:#x} has a bit above the order-0 marker (bit {ORDER0_MARKER_BIT})"
                )
            }
            KeyError::OrderTooLarge { key, order } => {
                write!(f, "key {key:#x} encodes order {order} > {MAX_KEY_ORDER}")
            }
        }
    }
}

/// Key of the block of `2^order` pages at `phys`.
///
/// `phys` must be aligned to the block size and `order <= MAX_KEY_ORDER`; bits of `phys` below
/// the block size are dropped (callers check alignment first).
pub const fn encode(phys: u64, order: u32) -> u64 {
    (1u64 << (ORDER0_MARKER_BIT - order)) | (phys >> (PAGE_SHIFT + order))
}

/// `(phys, order)` of a key, or why it is not well formed.
pub const fn decode(key: u64) -> Result<(u64, u32), KeyError> {
    if key == 0 {
        return Err(KeyError::NoMarker);
    }
    let marker = 63 - key.leading_zeros();
    if marker > ORDER0_MARKER_BIT {
        return Err(KeyError::MarkerAboveOrder0 { key });
    }
    let order = ORDER0_MARKER_BIT - marker;
    if order > MAX_KEY_ORDER {
        return Err(KeyError::OrderTooLarge { key, order });
    }
    let frame = key & !(1u64 << marker);
    Ok((frame << (PAGE_SHIFT + order), order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_vectors() {
        // order 0 at 0x4000_0000: marker bit 52, pfn 0x40000
        assert_eq!(encode(0x4000_0000, 0), 0x0010_0000_0004_0000);
        // order 9 (2 MiB) at 0x4020_0000: marker bit 43, frame 0x201
        assert_eq!(encode(0x4020_0000, 9), 0x0000_0800_0000_0201);
        // order 10 (4 MiB) at 0: marker bit 42 only
        assert_eq!(encode(0, 10), 0x0000_0400_0000_0000);
        // order 30 (4 TiB) at 4 TiB: marker bit 22, frame 1
        assert_eq!(encode(1 << 42, 30), 0x0000_0000_0040_0001);
        // order 0 at the top page of the address space
        assert_eq!(encode(0xffff_ffff_ffff_f000, 0), 0x001f_ffff_ffff_ffff);
        assert_eq!(decode(0x0010_0000_0004_0000), Ok((0x4000_0000, 0)));
        assert_eq!(decode(0x0000_0800_0000_0201), Ok((0x4020_0000, 9)));
        assert_eq!(
            decode(0x001f_ffff_ffff_ffff),
            Ok((0xffff_ffff_ffff_f000, 0))
        );
    }

    #[test]
    fn every_order_round_trips_and_marker_sits_where_the_abi_says() {
        for order in 0..=MAX_KEY_ORDER {
            let size = 1u64 << (PAGE_SHIFT + order);
            for phys in [0, size, 0x4000_0000u64.next_multiple_of(size) + 3 * size] {
                let key = encode(phys, order);
                assert_eq!(63 - key.leading_zeros(), 52 - order, "order {order}");
                assert_eq!(key >> (52 - order), 1);
                assert_eq!(decode(key), Ok((phys, order)));
            }
        }
    }

    #[test]
    fn malformed_keys_are_named() {
        assert_eq!(decode(0), Err(KeyError::NoMarker));
        assert_eq!(
            decode(1 << 53),
            Err(KeyError::MarkerAboveOrder0 { key: 1 << 53 })
        );
        assert_eq!(
            decode(1 << 59 | 5),
            Err(KeyError::MarkerAboveOrder0 { key: 1 << 59 | 5 })
        );
        // marker at bit 21 => order 31
        assert_eq!(
            decode(1 << 21),
            Err(KeyError::OrderTooLarge {
                key: 1 << 21,
                order: 31
            })
        );
        assert_eq!(
            decode(1),
            Err(KeyError::OrderTooLarge { key: 1, order: 52 })
        );
    }
}
