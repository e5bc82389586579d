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
/// A handover generation failed a check (a `FAIL` line names it), or the chain's `SOAK`
/// summary says it did not pass.
pub const WORKLOAD_FAILED: u32 = 5;
/// The next image was refused (not a valid arm64 Image, or a changed copy) or could not be
/// placed: the chain stops without jumping.
pub const NEXT_IMAGE: u32 = 6;
