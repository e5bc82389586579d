//! The relocation self-check: statics whose initial values are addresses, so the linker must emit
//! R_AARCH64_RELATIVE relocations for them. After the entry code has applied `.rela.dyn`,
//! each stored pointer must equal the PC-relative address of its target at the run address.

use core::ptr::{addr_of, read_volatile};

static TARGET_A: u32 = 0x6261_746f;
static TARGET_B: [u8; 8] = *b"baton\0\0\0";
static mut TARGET_C: u64 = 7;

fn target_fn() -> u32 {
    0x5a5a
}

/// Pointers the linker cannot know: they must be fixed up at run time.
struct PointerTable([*const u8; 3]);
// SAFETY: the pointers are never written after relocation and only compared, not followed.
unsafe impl Sync for PointerTable {}
static POINTERS: PointerTable = PointerTable([
    addr_of!(TARGET_A).cast(),
    addr_of!(TARGET_B).cast(),
    addr_of!(TARGET_C).cast(),
]);
static POINTER_FN: fn() -> u32 = target_fn;

/// What the self-check found.
pub struct RelocCheck {
    pub pointers: usize,
    pub bad: usize,
    /// Sum of (pointer - image base) over the checked pointers: the same at every load address.
    pub link_checksum: u64,
}

/// Compares every stored pointer with the address computed PC-relative now.
pub fn check(image_base: u64) -> RelocCheck {
    let expect = [
        addr_of!(TARGET_A) as usize,
        addr_of!(TARGET_B) as usize,
        addr_of!(TARGET_C) as usize,
    ];
    let mut bad = 0;
    let mut sum = 0u64;
    for (i, want) in expect.iter().enumerate() {
        // SAFETY: POINTERS is an initialised static; volatile keeps the compiler from folding
        // the load into the constant it already knows.
        let got = unsafe { read_volatile(addr_of!(POINTERS.0[i])) } as usize;
        if got != *want {
            bad += 1;
        }
        sum = sum.wrapping_add((got as u64).wrapping_sub(image_base));
    }
    // SAFETY: as above; a relocated function pointer must still be callable.
    let f = unsafe { read_volatile(addr_of!(POINTER_FN)) };
    if f as usize != target_fn as *const () as usize || f() != 0x5a5a {
        bad += 1;
    }
    sum = sum.wrapping_add((f as usize as u64).wrapping_sub(image_base));
    RelocCheck {
        pointers: expect.len() + 1,
        bad,
        link_checksum: sum,
    }
}
