//! A `newc` cpio archive writer: the initramfs the Linux peer boots with (its init, the
//! next kernel, the next initrd and command line), made in memory for each test.
//!
//! Owns only the archive format (ASCII hex headers, 4-byte padding, the trailer). Never
//! reads the files it packs: the caller passes their bytes.

/// One archive being built.
#[derive(Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

/// `S_IFDIR`, `S_IFREG`, `S_IFCHR` of the mode word.
const DIR: u32 = 0o040000;
const REG: u32 = 0o100000;
const CHR: u32 = 0o020000;

impl Cpio {
    /// An archive with `/dev/console` (the kernel opens it for init's stdio).
    pub fn new() -> Self {
        let mut c = Cpio::default();
        c.entry("dev", DIR | 0o755, &[], (0, 0));
        c.entry("dev/console", CHR | 0o600, &[], (5, 1));
        c
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Adds a regular file at `name` (no leading slash); `exec` makes it mode 0755.
    pub fn file(mut self, name: &str, data: &[u8], exec: bool) -> Self {
        let mode = if exec { 0o755 } else { 0o644 };
        self.entry(name, REG | mode, data, (0, 0));
        self
    }

    /// The finished archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_with_four_byte_padding() {
        let a = Cpio::new().file("init", b"abc", true).finish();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let init = a.windows(5).position(|w| w == b"init\0").expect("name");
        // Header is 110 bytes; the name starts right after it.
        assert_eq!(&a[init - 110..init - 104], b"070701");
        assert!(a.windows(11).any(|w| w == b"TRAILER!!!\0"));
    }
}
