//! arm64 `Image` headers: reading and checking the header of the image baton hands over to,
//! and the baton stamp that proves a copy of an Image is byte for byte the file that was
//! built.
//!
//! The header layout is the arm64 boot protocol's (Linux `Documentation/arch/arm64/booting`):
//! `code0`, `code1`, `text_offset`, `image_size`, `flags`, `res2`..`res4`, `magic`, `res5`, all
//! little-endian. baton's build stamps `res3` with a tag and the CRC-32 of the file (computed
//! with `res3` zero); an Image without the tag (Linux, say) is accepted unstamped. Target
//! free and host-tested: the kernel and the host `stamp-image` tool share it, so the stamp
//! format is defined once. Its own crate so that the image build can run `stamp-image`
//! without building the test harness or the board layer.
#![cfg_attr(not(test), no_std)]

use core::fmt;

/// Bytes of the header.
pub const HEADER_SIZE: usize = 64;
/// "ARM\x64" as a little-endian word, at [`OFF_MAGIC`] (the value baton's own header has).
pub const MAGIC: u32 = arch::entry::IMAGE_MAGIC;
/// Offset of `text_offset` (u64).
pub const OFF_TEXT_OFFSET: usize = 8;
/// Offset of `image_size` (u64).
pub const OFF_IMAGE_SIZE: usize = arch::entry::IMAGE_SIZE_OFFSET;
/// Offset of `flags` (u64).
pub const OFF_FLAGS: usize = 24;
/// Offset of `res3` (u64), where baton keeps its stamp.
pub const OFF_STAMP: usize = 40;
/// Offset of the magic (u32).
pub const OFF_MAGIC: usize = 56;
/// High half of a stamped `res3`: "BTNC".
pub const STAMP_TAG: u32 = u32::from_le_bytes(*b"BTNC");

/// `flags` bit 0: kernel endianness (1 = big-endian).
pub const FLAG_BE: u64 = 1 << 0;
/// `flags` bits 1-2: page size (0 unspecified, 1 = 4 KiB, 2 = 16 KiB, 3 = 64 KiB).
pub const FLAG_PAGE_SIZE_SHIFT: u32 = 1;
/// `flags` bit 3: physical placement (1 = any 2 MiB-aligned base; 0 = near the base of DRAM).
pub const FLAG_ANYWHERE: u64 = 1 << 3;
/// Boundary the image's base (`load address - text_offset`) must sit on.
pub const IMAGE_ALIGN: u64 = 2 << 20;

/// What the header of a valid Image says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Bytes from the 2 MiB-aligned base to the first byte of the image.
    pub text_offset: u64,
    /// Bytes the image occupies once running (file, BSS, stacks, ...), from its first byte.
    pub image_size: u64,
    /// Raw `flags`.
    pub flags: u64,
    /// The baton stamp (CRC-32 of the file with `res3` zero), if the image carries one.
    pub stamp: Option<u32>,
}

impl ImageHeader {
    /// True unless the image asked to be placed near the base of DRAM (`flags` bit 3 = 0);
    /// baton places it inside scratch either way and says so.
    pub fn anywhere(&self) -> bool {
        self.flags & FLAG_ANYWHERE != 0
    }
}

/// Why a file is not an Image baton can enter.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the 64-byte header.
    TooShort { len: u64 },
    /// No "ARM\x64" at offset 56.
    BadMagic { found: u32 },
    /// `flags` says big-endian; baton runs little-endian.
    BigEndian,
    /// `flags` asks for 16 KiB or 64 KiB pages; baton's MMU uses 4 KiB.
    PageSize { code: u64 },
    /// `image_size` 0: a pre-3.17 Image whose footprint is unknown.
    NoImageSize,
    /// The file is longer than the image says it occupies.
    SizeSmallerThanFile { image_size: u64, file: u64 },
    /// `text_offset` is not page aligned or does not leave the image inside its 2 MiB slot.
    BadTextOffset { text_offset: u64 },
    /// The stamp does not match the bytes: the copy changed since it was built.
    StampMismatch { stored: u32, computed: u32 },
    /// The file does not carry a baton stamp (only [`stamp_of`] callers that require one).
    NotStamped,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => {
                write!(f, "length: {len} bytes, shorter than the 64-byte header")
            }
            Self::BadMagic { found } => {
                write!(
                    f,
                    "magic: {found:#010x} at offset 56, expected {MAGIC:#010x} (\"ARM\\x64\")"
                )
            }
            Self::BigEndian => write!(f, "flags: big-endian image (bit 0 set)"),
            Self::PageSize { code } => {
                write!(
                    f,
                    "flags: page size code {code} (16/64 KiB); baton maps 4 KiB pages"
                )
            }
            Self::NoImageSize => write!(f, "image_size: 0 (pre-3.17 Image, footprint unknown)"),
            Self::SizeSmallerThanFile { image_size, file } => write!(
                f,
                "image_size: {image_size:#x} smaller than the file ({file:#x} bytes)"
            ),
            Self::BadTextOffset { text_offset } => write!(
                f,
                "text_offset: {text_offset:#x} not page aligned or not below 2 MiB"
            ),
            Self::StampMismatch { stored, computed } => write!(
                f,
                "stamp: stored CRC-32 {stored:#010x}, bytes give {computed:#010x} (image changed)"
            ),
            Self::NotStamped => write!(f, "stamp: missing (image not stamped by the build)"),
        }
    }
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Reads and checks the header of `file` (the whole Image file) and, if it carries a baton
/// stamp, checks the stamp against the bytes.
pub fn parse(file: &[u8]) -> Result<ImageHeader, ImageError> {
    let len = file.len() as u64;
    if file.len() < HEADER_SIZE {
        return Err(ImageError::TooShort { len });
    }
    let magic = u32::from_le_bytes([
        file[OFF_MAGIC],
        file[OFF_MAGIC + 1],
        file[OFF_MAGIC + 2],
        file[OFF_MAGIC + 3],
    ]);
    if magic != MAGIC {
        return Err(ImageError::BadMagic { found: magic });
    }
    let flags = le64(file, OFF_FLAGS);
    if flags & FLAG_BE != 0 {
        return Err(ImageError::BigEndian);
    }
    let code = (flags >> FLAG_PAGE_SIZE_SHIFT) & 0b11;
    if code > 1 {
        return Err(ImageError::PageSize { code });
    }
    let text_offset = le64(file, OFF_TEXT_OFFSET);
    if !text_offset.is_multiple_of(4096) || text_offset >= IMAGE_ALIGN {
        return Err(ImageError::BadTextOffset { text_offset });
    }
    let image_size = le64(file, OFF_IMAGE_SIZE);
    if image_size == 0 {
        return Err(ImageError::NoImageSize);
    }
    if image_size < len {
        return Err(ImageError::SizeSmallerThanFile {
            image_size,
            file: len,
        });
    }
    let stamp = stamp_of(file)?;
    Ok(ImageHeader {
        text_offset,
        image_size,
        flags,
        stamp,
    })
}

/// `image_size` and `text_offset` of the arm64 Image whose header is `header` (at least 64
/// bytes), if it has the magic: how much room a loader must give it, before any other check
/// (sizing scratch at boot, where reading the whole file would cost its CRC).
pub fn room_needed(header: &[u8]) -> Option<(u64, u64)> {
    if header.len() < HEADER_SIZE
        || u32::from_le_bytes(header[OFF_MAGIC..OFF_MAGIC + 4].try_into().ok()?) != MAGIC
    {
        return None;
    }
    Some((le64(header, OFF_IMAGE_SIZE), le64(header, OFF_TEXT_OFFSET)))
}

/// True if the Image whose header is `header` carries baton's stamp tag (not yet checked
/// against its bytes): a baton next image, as far as sizing scratch at boot goes.
pub fn has_stamp_tag(header: &[u8]) -> bool {
    header.len() >= HEADER_SIZE && (le64(header, OFF_STAMP) >> 32) as u32 == STAMP_TAG
}

/// CRC-32 of `file` with the stamp word read as zero.
pub fn crc(file: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let cut = OFF_STAMP.min(file.len());
    h.update(&file[..cut]);
    if file.len() >= OFF_STAMP + 8 {
        h.update(&[0u8; 8]);
        h.update(&file[OFF_STAMP + 8..]);
    }
    h.finalize()
}

/// The stamp `file` carries, checked against its bytes: `Ok(None)` if it carries none.
pub fn stamp_of(file: &[u8]) -> Result<Option<u32>, ImageError> {
    if file.len() < HEADER_SIZE {
        return Err(ImageError::TooShort {
            len: file.len() as u64,
        });
    }
    let word = le64(file, OFF_STAMP);
    if (word >> 32) as u32 != STAMP_TAG {
        return Ok(None);
    }
    let stored = word as u32;
    let computed = crc(file);
    if stored != computed {
        return Err(ImageError::StampMismatch { stored, computed });
    }
    Ok(Some(stored))
}

/// Writes the stamp into `file` (a built Image) and returns the CRC. Re-stamping a stamped
/// file gives the same bytes.
pub fn stamp(file: &mut [u8]) -> Result<u32, ImageError> {
    if file.len() < HEADER_SIZE {
        return Err(ImageError::TooShort {
            len: file.len() as u64,
        });
    }
    let c = crc(file);
    let word = (u64::from(STAMP_TAG) << 32) | u64::from(c);
    file[OFF_STAMP..OFF_STAMP + 8].copy_from_slice(&word.to_le_bytes());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A minimal valid header followed by `body` bytes of code.
    fn image(body: usize) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_SIZE + body];
        v[OFF_IMAGE_SIZE..OFF_IMAGE_SIZE + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        v[OFF_FLAGS..OFF_FLAGS + 8].copy_from_slice(&(0b1010u64).to_le_bytes());
        v[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC.to_le_bytes());
        for (i, b) in v[HEADER_SIZE..].iter_mut().enumerate() {
            *b = i as u8;
        }
        v
    }

    fn set(v: &mut [u8], off: usize, x: u64) {
        v[off..off + 8].copy_from_slice(&x.to_le_bytes());
    }

    #[test]
    fn valid_unstamped_image_parses() {
        let h = parse(&image(100)).expect("valid");
        assert_eq!((h.text_offset, h.image_size, h.stamp), (0, 1 << 20, None));
        assert!(h.anywhere());
    }

    #[test]
    fn stamp_round_trips_and_is_idempotent() {
        let mut v = image(4000);
        let c = stamp(&mut v).expect("stamp");
        assert_eq!(parse(&v).expect("valid").stamp, Some(c));
        let once = v.clone();
        stamp(&mut v).expect("restamp");
        assert_eq!(v, once);
    }

    #[test]
    fn any_changed_byte_breaks_the_stamp() {
        let mut v = image(300);
        stamp(&mut v).expect("stamp");
        for at in [0usize, 8, 39, 48, 63, 64, 200, 363] {
            let mut w = v.clone();
            w[at] ^= 0x40;
            assert!(
                parse(&w).is_err(),
                "byte {at} changed but the image still parses"
            );
        }
        let mut w = v.clone();
        w[200] ^= 1;
        assert!(matches!(
            stamp_of(&w),
            Err(ImageError::StampMismatch { .. })
        ));
    }

    #[test]
    fn every_header_check_names_its_field() {
        assert_eq!(parse(&[0u8; 10]), Err(ImageError::TooShort { len: 10 }));
        let mut v = image(10);
        v[OFF_MAGIC] = b'X';
        assert!(matches!(parse(&v), Err(ImageError::BadMagic { .. })));
        let mut v = image(10);
        set(&mut v, OFF_FLAGS, 0b1011);
        assert_eq!(parse(&v), Err(ImageError::BigEndian));
        let mut v = image(10);
        set(&mut v, OFF_FLAGS, 0b1110);
        assert_eq!(parse(&v), Err(ImageError::PageSize { code: 3 }));
        let mut v = image(10);
        set(&mut v, OFF_IMAGE_SIZE, 0);
        assert_eq!(parse(&v), Err(ImageError::NoImageSize));
        let mut v = image(100);
        set(&mut v, OFF_IMAGE_SIZE, 64);
        assert_eq!(
            parse(&v),
            Err(ImageError::SizeSmallerThanFile {
                image_size: 64,
                file: 164
            })
        );
        for t in [0x80001u64, 2 << 20] {
            let mut v = image(10);
            set(&mut v, OFF_TEXT_OFFSET, t);
            assert_eq!(parse(&v), Err(ImageError::BadTextOffset { text_offset: t }));
        }
        let mut v = image(10);
        set(&mut v, OFF_TEXT_OFFSET, 0x80000);
        assert_eq!(parse(&v).expect("old text_offset").text_offset, 0x80000);
    }

    #[test]
    fn messages_name_the_check() {
        let m = std::format!("{}", ImageError::BadMagic { found: 0x1234 });
        assert!(m.starts_with("magic:"), "{m}");
        let m = std::format!(
            "{}",
            ImageError::StampMismatch {
                stored: 1,
                computed: 2
            }
        );
        assert!(m.starts_with("stamp:"), "{m}");
    }

    /// Fuzz target: the Image header. Mutated stamped and unstamped images never panic
    /// (overflow checks on); an accepted header has a text_offset inside the 2 MiB
    /// alignment and an image_size covering the file, and its stamp matches the bytes.
    #[test]
    fn fuzz_image_header() {
        let plain = image(4096);
        let mut stamped = plain.clone();
        stamp(&mut stamped).expect("stamp");
        baton_fuzz::run("image-header", 20_000, |rng| {
            let orig = if rng.one_in(2) { &plain } else { &stamped };
            let mut v = orig.clone();
            if rng.one_in(2) {
                let mut head = v[..HEADER_SIZE].to_vec();
                baton_fuzz::mutate(&mut head, rng, 4);
                v.splice(..HEADER_SIZE, head);
            } else {
                baton_fuzz::mutate(&mut v, rng, 4);
            }
            let _ = room_needed(&v);
            let _ = stamp_of(&v);
            match parse(&v) {
                Ok(h) => {
                    // What the loader relies on (board::placement does checked sums with
                    // these, so a huge image_size is refused there as "no room").
                    assert!(h.text_offset < IMAGE_ALIGN && h.image_size >= v.len() as u64);
                    if h.stamp.is_some() && v != stamped {
                        // A stamp only survives bytes that still match it.
                        assert_eq!(crc(&v), h.stamp.unwrap_or(0));
                    }
                    true
                }
                Err(e) => {
                    let _ = std::format!("{e}");
                    false
                }
            }
        });
    }
}
