//! Exit status codes of the image, as seen by the host (QEMU's exit status with
//! `-semihosting`). The QEMU tests assert on these; change them together.

/// The image ran to completion.
pub const SUCCESS: u32 = 0;
/// A Rust panic.
pub const PANIC: u32 = 1;
/// An unexpected CPU exception (data abort, undefined instruction, ...).
pub const EXCEPTION: u32 = 2;
/// The FDT at x0 had the magic but failed a check.
pub const BAD_FDT: u32 = 3;
/// Memory could not be set up (memblock, page tables, frame allocator).
pub const NO_MEMORY: u32 = 4;
