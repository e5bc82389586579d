//! Radix keys: a block's physical address, order and type folded into one integer.
//!
//! Owns the encodings only (`docs/abi.md`, "Keys"): the typed key of `baton,kho-typed-v2`
//! (type in bit 59, inside the bits the tree indexes) and the untyped key of
//! `baton,kho-typed-v1`, whose type travelled as membership of a second tree.

use core::fmt;
use mm::PAGE_SHIFT;

/// Bit position of the order marker for order 0 (`64 - PAGE_SHIFT`).
pub const ORDER0_MARKER_BIT: u32 = 64 - PAGE_SHIFT;
/// Largest order a key may carry in this format (a 4 TiB block): same as `mm::MAX_BLOCK_ORDER`.
pub const MAX_KEY_ORDER: u32 = 30;
/// Bit of a v2 key that carries the block type (0 CONTIG, 1 SPLIT): the highest bit the
/// six-level tree indexes (`docs/abi.md` §3.1 says why this one).
pub const TYPE_BIT: u32 = 59;
/// Bits between the order-0 marker and the type bit: never set in a v2 key.
pub const RESERVED_KEY_BITS: u64 =
    ((1u64 << TYPE_BIT) - 1) & !((1u64 << (ORDER0_MARKER_BIT + 1)) - 1);

/// How the pages of a preserved block hold references. One byte, 0 or 1 (validation writes
/// blocks as words: `kho::merge`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
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
    /// A v2 key sets a bit between the order-0 marker and the type bit (53..=58), or a bit
    /// above the type bit: no type this format knows.
    UnknownTypeBits { key: u64 },
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
            KeyError::UnknownTypeBits { key } => {
                write!(
                    f,
                    "key {key:#x} sets a bit in 53..=63 other than the type bit {TYPE_BIT}"
                )
            }
        }
    }
}

/// Untyped key of the block of `2^order` pages at `phys` (v1's trees; a v2 CONTIG key).
///
/// `phys` must be aligned to the block size and `order <= MAX_KEY_ORDER`; bits of `phys` below
/// the block size are dropped (callers check alignment first).
pub const fn encode(phys: u64, order: u32) -> u64 {
    (1u64 << (ORDER0_MARKER_BIT - order)) | (phys >> (PAGE_SHIFT + order))
}

/// v2 key of the block of `2^order` pages at `phys` recorded as `kind`:
/// `type << 59 | 1 << (52 - order) | phys >> (12 + order)`.
pub const fn encode_typed(phys: u64, order: u32, kind: BlockType) -> u64 {
    let t = match kind {
        BlockType::Contig => 0,
        BlockType::Split => 1,
    };
    (t << TYPE_BIT) | encode(phys, order)
}

/// `(phys, order, type)` of a v2 key, or why it is not well formed: bits 53..=58 and
/// 60..=63 must be zero, the rest is an untyped key ([`decode`]).
#[inline]
pub const fn decode_typed(key: u64) -> Result<(u64, u32, BlockType), KeyError> {
    if key & (RESERVED_KEY_BITS | !((1u64 << (TYPE_BIT + 1)) - 1)) != 0 {
        return Err(KeyError::UnknownTypeBits { key });
    }
    let kind = if key & (1 << TYPE_BIT) != 0 {
        BlockType::Split
    } else {
        BlockType::Contig
    };
    match decode(key & !(1 << TYPE_BIT)) {
        Ok((phys, order)) => Ok((phys, order, kind)),
        // Name the key as read, not the key with its type bit cleared.
        Err(KeyError::OrderTooLarge { order, .. }) => Err(KeyError::OrderTooLarge { key, order }),
        // The other bits are clear, so no marker can sit above bit 52: only NoMarker is left.
        Err(e) => Err(e),
    }
}

/// `(phys, order)` of an untyped (v1) key, or why it is not well formed.
#[inline]
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
    fn typed_vectors_of_both_types() {
        use BlockType::{Contig, Split};
        // docs/abi.md §3.1: the same blocks as above, CONTIG and SPLIT.
        assert_eq!(encode_typed(0x4000_0000, 0, Contig), 0x0010_0000_0004_0000);
        assert_eq!(encode_typed(0x4000_0000, 0, Split), 0x0810_0000_0004_0000);
        assert_eq!(encode_typed(0x4020_0000, 9, Contig), 0x0000_0800_0000_0201);
        assert_eq!(encode_typed(0x4020_0000, 9, Split), 0x0800_0800_0000_0201);
        assert_eq!(encode_typed(0, 10, Split), 0x0800_0400_0000_0000);
        assert_eq!(encode_typed(1 << 42, 30, Split), 0x0800_0000_0040_0001);
        assert_eq!(
            encode_typed(0xffff_ffff_ffff_f000, 0, Split),
            0x081f_ffff_ffff_ffff
        );
        for (key, want) in [
            (0x0010_0000_0004_0000, (0x4000_0000, 0, Contig)),
            (0x0810_0000_0004_0000, (0x4000_0000, 0, Split)),
            (0x0800_0800_0000_0201, (0x4020_0000, 9, Split)),
            (0x0800_0000_0040_0001, (1 << 42, 30, Split)),
            (0x081f_ffff_ffff_ffff, (0xffff_ffff_ffff_f000, 0, Split)),
        ] {
            assert_eq!(decode_typed(key), Ok(want), "{key:#x}");
        }
        // The type bit is indexed by the tree: root entry 256 + (bits 51..52).
        assert_eq!(crate::tree::table_index(0x0810_0000_0004_0000, 5), 258);
        assert_eq!(crate::tree::table_index(0x0010_0000_0004_0000, 5), 2);
        const { assert!(0x081f_ffff_ffff_ffffu64 >> crate::tree::KEY_BITS == 0) };
    }

    #[test]
    fn every_order_and_type_round_trips() {
        for kind in [BlockType::Contig, BlockType::Split] {
            for order in 0..=MAX_KEY_ORDER {
                let size = 1u64 << (PAGE_SHIFT + order);
                for phys in [0, size, 0x4000_0000u64.next_multiple_of(size) + 3 * size] {
                    let key = encode_typed(phys, order, kind);
                    assert_eq!(decode_typed(key), Ok((phys, order, kind)));
                    assert_eq!(key & RESERVED_KEY_BITS, 0);
                }
            }
        }
    }

    #[test]
    fn typed_keys_with_unknown_bits_are_named() {
        assert_eq!(RESERVED_KEY_BITS, 0x07e0_0000_0000_0000);
        let k = encode(0x4000_0000, 0);
        for bit in (53..=58).chain(60..=63) {
            let bad = k | 1 << bit;
            assert_eq!(
                decode_typed(bad),
                Err(KeyError::UnknownTypeBits { key: bad }),
                "bit {bit}"
            );
            let bad = bad | 1 << TYPE_BIT;
            assert_eq!(
                decode_typed(bad),
                Err(KeyError::UnknownTypeBits { key: bad })
            );
        }
        assert_eq!(decode_typed(0), Err(KeyError::NoMarker));
        assert_eq!(decode_typed(1 << TYPE_BIT), Err(KeyError::NoMarker));
        // The refused vectors of docs/abi.md §3.1.
        for key in [0x0020_0000_0004_0000, 0x0830_0000_0004_0000] {
            assert_eq!(decode_typed(key), Err(KeyError::UnknownTypeBits { key }));
        }
        assert_eq!(
            decode_typed(0x0000_0000_0020_0000),
            Err(KeyError::OrderTooLarge {
                key: 0x20_0000,
                order: 31
            })
        );
        assert_eq!(
            decode_typed(1 << TYPE_BIT | 1 << 21),
            Err(KeyError::OrderTooLarge {
                key: 1 << TYPE_BIT | 1 << 21,
                order: 31
            })
        );
        // An untyped (v1) decode still refuses the type bit: v1 keys never carry it.
        assert_eq!(
            decode(1 << TYPE_BIT | k),
            Err(KeyError::MarkerAboveOrder0 {
                key: 1 << TYPE_BIT | k
            })
        );
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
