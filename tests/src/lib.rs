//! Host-side harness that boots the baton `Image` in QEMU and reports what happened.
//!
//! Owns QEMU child processes for the boot tests: builds the command line per board, captures
//! the serial console, enforces a timeout (killing and reaping QEMU), and returns the exit
//! status and the output. Also writes the small files some tests need (a 5-instruction boot
//! shim that enters the Image at any address with any x0, and corrupted device trees).
//! It asserts nothing itself; `tests/boot.rs` does.

pub mod cpio; // newc archives: the Linux peer's initramfs

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long one boot may take before QEMU is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The machines and entry ELs the image must boot on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Board {
    /// `-M virt`, entered at EL1 (x0 = FDT, loaded at 0x4020_0000).
    Virt,
    /// `-M virt,virtualization=on`, entered at EL2.
    VirtEl2,
    /// `-M raspi4b -dtb <Pi 4 tree>`, entered at EL2 at 0x20_0000.
    Rpi4,
    /// `-M raspi4b` without a DTB (x0 is not an FDT).
    Rpi4NoDtb,
}

/// Optional parts of a boot.
#[derive(Clone, Debug, Default)]
pub struct Boot {
    /// Kernel command line (`-append`, virt only: QEMU writes it into /chosen/bootargs).
    pub append: Option<String>,
    /// Image to boot instead of [`image_path`].
    pub image: Option<PathBuf>,
    /// Extra QEMU arguments, appended last.
    pub extra: Vec<String>,
    /// Replace `-kernel` with the boot shim: load the image at `image_addr`, point x0 at
    /// `fdt_addr` (see [`shim_boot`]).
    pub shim: Option<Shim>,
    /// RAM size (virt only), default 128M.
    pub memory: Option<&'static str>,
    /// Leave out `-semihosting` (the exit status is then lost; QEMU exits 0 on power-off).
    pub no_semihosting: bool,
}

/// A boot through the 5-instruction shim instead of QEMU's own Image loader.
#[derive(Clone, Debug)]
pub struct Shim {
    pub image_addr: u64,
    pub fdt_addr: u64,
    /// A device tree file to load at `fdt_addr`; `None` uses the tree QEMU virt places at
    /// the start of RAM for firmware (then `fdt_addr` should be 0x4000_0000).
    pub fdt_file: Option<PathBuf>,
}

/// What a boot did.
#[derive(Debug)]
pub struct Run {
    /// QEMU's exit status (the image's semihosting exit code), `None` if killed.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// Serial console and QEMU's stderr, in that order.
    pub output: String,
    pub elapsed: Duration,
    /// The QEMU command line, for failure messages.
    pub command: String,
}

impl Run {
    /// The value of `key=` on the `BATON-BOOT` summary line.
    pub fn boot_field(&self, key: &str) -> Option<String> {
        let line = self.output.lines().find(|l| l.contains("BATON-BOOT "))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    }

    /// Panics with the whole console log unless `needle` was printed.
    pub fn expect(&self, needle: &str) -> &Self {
        assert!(
            self.output.contains(needle),
            "expected {needle:?} in the console output of\n  {}\n--- output ---\n{}",
            self.command,
            self.output
        );
        self
    }

    /// Panics with the console log unless QEMU exited with `status`.
    pub fn expect_status(&self, status: i32) -> &Self {
        assert!(
            !self.timed_out && self.status == Some(status),
            "expected exit status {status}, got {:?} (timed out: {}) from\n  {}\n--- output ---\n{}",
            self.status,
            self.timed_out,
            self.command,
            self.output
        );
        self
    }
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Image under test: `$BATON_IMAGE` (set by `make test`), else `build/Image`.
pub fn image_path() -> PathBuf {
    let p = std::env::var_os("BATON_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/Image"));
    assert!(
        p.is_file(),
        "no Image at {} (run `make` first, or set BATON_IMAGE)",
        p.display()
    );
    p
}

/// The Raspberry Pi 4 device tree: `$BATON_RPI4_DTB`, else `../shared/fixtures/dtb/`.
pub fn rpi4_dtb() -> PathBuf {
    std::env::var_os("BATON_RPI4_DTB")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures/dtb/bcm2711-rpi-4-b.dtb"))
}

/// The QEMU binary: `$QEMU`, else `qemu-system-aarch64`.
pub fn qemu() -> String {
    std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-aarch64".into())
}

/// A fresh scratch directory under the target directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "baton-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The boot shim: `ldr x0, fdt; ldr x1, image; br x1`, then the two literals. QEMU's
/// generic loader starts CPU 0 on it; the Image then runs at `image` with x0 = `fdt`,
/// like under any arm64 boot loader.
pub fn shim_bytes(image: u64, fdt: u64) -> Vec<u8> {
    const LDR_X0_PC16: u32 = 0x5800_0080; // ldr x0, [pc, #16]
    const LDR_X1_PC20: u32 = 0x5800_00a1; // ldr x1, [pc, #20]
    const BR_X1: u32 = 0xd61f_0020;
    const NOP: u32 = 0xd503_201f;
    let mut v = Vec::new();
    for w in [LDR_X0_PC16, LDR_X1_PC20, BR_X1, NOP] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(&fdt.to_le_bytes());
    v.extend_from_slice(&image.to_le_bytes());
    v
}

/// Where the shim goes: just after the 1 MiB tree QEMU virt puts at the start of RAM.
pub const SHIM_ADDR: u64 = 0x4010_0000;

/// QEMU arguments that boot `image` through the shim.
pub fn shim_boot(image: &Path, shim: &Shim) -> Vec<String> {
    let dir = scratch_dir("shim");
    let path = dir.join("shim.bin");
    std::fs::write(&path, shim_bytes(shim.image_addr, shim.fdt_addr)).expect("write shim");
    let mut args = vec![
        "-device".to_string(),
        format!(
            "loader,file={},addr={:#x},cpu-num=0",
            path.display(),
            SHIM_ADDR
        ),
        "-device".to_string(),
        format!(
            "loader,file={},addr={:#x}",
            image.display(),
            shim.image_addr
        ),
    ];
    if let Some(f) = &shim.fdt_file {
        args.push("-device".into());
        args.push(format!(
            "loader,file={},addr={:#x}",
            f.display(),
            shim.fdt_addr
        ));
    }
    args
}

/// The full QEMU argv (without the program) for `board` and `opts`.
pub fn qemu_args(board: Board, opts: &Boot) -> Vec<String> {
    let image = opts.image.clone().unwrap_or_else(image_path);
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let mem = opts.memory.unwrap_or("128M");
    match board {
        Board::Virt => push(&["-M", "virt", "-cpu", "cortex-a72", "-m", mem]),
        Board::VirtEl2 => push(&[
            "-M",
            "virt,virtualization=on",
            "-cpu",
            "cortex-a72",
            "-m",
            mem,
        ]),
        Board::Rpi4 | Board::Rpi4NoDtb => push(&["-M", "raspi4b"]),
    }
    push(&[
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-semihosting",
    ]);
    match &opts.shim {
        Some(s) => a.extend(shim_boot(&image, s)),
        None => {
            a.push("-kernel".into());
            a.push(image.display().to_string());
        }
    }
    if board == Board::Rpi4 {
        a.push("-dtb".into());
        a.push(rpi4_dtb().display().to_string());
    }
    if let Some(append) = &opts.append {
        a.push("-append".into());
        a.push(append.clone());
    }
    a.extend(opts.extra.iter().cloned());
    a
}

/// Boots `board` with `opts`, waits at most `timeout`, returns what happened.
pub fn boot_with_timeout(board: Board, opts: &Boot, timeout: Duration) -> Run {
    let args = qemu_args(board, opts);
    let command = format!("{} {}", qemu(), args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(qemu())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} ({e}); run `make deps`", qemu()));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("wait for QEMU") {
            Some(st) => break st.code(),
            None if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let elapsed = start.elapsed();
    let mut output = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if !stderr.is_empty() {
        output.push_str("\n--- qemu stderr ---\n");
        output.push_str(&stderr);
    }
    Run {
        status,
        timed_out,
        output,
        elapsed,
        command,
    }
}

/// Boots with the default timeout.
pub fn boot(board: Board, opts: &Boot) -> Run {
    boot_with_timeout(board, opts, DEFAULT_TIMEOUT)
}

/// QEMU virt's own device tree for `-m mem` (`-M virt,dumpdtb=`), as bytes.
pub fn virt_dtb(mem: &str) -> Vec<u8> {
    let dir = scratch_dir("dumpdtb");
    let path = dir.join("virt.dtb");
    let st = Command::new(qemu())
        .args([
            "-M",
            &format!("virt,dumpdtb={}", path.display()),
            "-cpu",
            "cortex-a72",
            "-m",
            mem,
        ])
        .args(["-display", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run qemu dumpdtb");
    assert!(st.success() || path.is_file(), "qemu dumpdtb failed");
    std::fs::read(&path).expect("read dumped dtb")
}

/// Writes `bytes` to a fresh file named `name` and returns its path.
pub fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir(name).join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

/// Big-endian u32 helpers for header surgery on device trees.
pub fn put_be32(bytes: &mut [u8], off: usize, v: u32) {
    bytes[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn get_be32(bytes: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(bytes[off..off + 4].try_into().expect("4 bytes"))
}

/// Replaces every occurrence of `from` with `to` (same length) in `bytes`; returns how many.
pub fn replace_bytes(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(
        from.len(),
        to.len(),
        "replacement must keep the tree's layout"
    );
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_encodes_two_literals_after_four_instructions() {
        let b = shim_bytes(0x4b00_0000, 0x4800_0000);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[0..4], &0x5800_0080u32.to_le_bytes());
        assert_eq!(
            u64::from_le_bytes(b[16..24].try_into().unwrap()),
            0x4800_0000
        );
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().unwrap()),
            0x4b00_0000
        );
    }

    #[test]
    fn replace_keeps_length_and_counts() {
        let mut v = b"memory@40000000\0memory\0".to_vec();
        assert_eq!(replace_bytes(&mut v, b"memory", b"memorx"), 2);
        assert_eq!(&v, b"memorx@40000000\0memorx\0");
    }
}
