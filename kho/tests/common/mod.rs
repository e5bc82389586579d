//! Helpers shared by the integration tests.
#![allow(dead_code)]
pub mod fdt_tools;
pub mod sim;

use std::sync::Mutex;

/// A pointer kept reachable from a static, so that Miri does not report it as a leak.
struct Kept(*mut u8);
// SAFETY: the pointer is never dereferenced through `Kept`; it only keeps memory reachable.
unsafe impl Send for Kept {}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

/// Leaks `b` for the rest of the test process (simulated RAM and descriptor storage must
/// outlive the images that borrow them), keeping it reachable for Miri's leak check.
pub fn keep<T: ?Sized>(b: Box<T>) -> &'static mut T {
    let p = Box::into_raw(b);
    KEPT.lock().unwrap().push(Kept(p as *mut u8));
    // SAFETY: p comes from Box::into_raw and is never freed, so it is valid for 'static;
    // this is the only reference created from it.
    unsafe { &mut *p }
}
