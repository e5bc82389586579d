//! Locks that are correct before and after the MMU is on: `EarlyRawMutex`, `EarlyMutex<T>`.
//!
//! With SCTLR_EL1.M or .C clear, the lock word is Device or Non-cacheable memory, where a
//! load/store-exclusive needs a global monitor the BCM2711 does not have: a compare-and-swap
//! may never succeed (docs/hardware.md, "Exclusives (locks) before the MMU is on"). Owns the
//! one choice of how a lock word is taken: a plain load and store while the caches are off
//! (one core, interrupts masked), compare-and-swap once they are on. Never spins with the
//! caches off: a held lock there can only be a re-entrant use, and it is reported.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

/// Tells a lock whether load/store-exclusive on its lock word works right now.
pub trait ExclusiveMonitor {
    /// True when data accesses are Normal cacheable memory, served by the core's own
    /// (local) exclusive monitor.
    fn exclusives_work() -> bool;
}

/// The real answer: SCTLR_EL1.M and SCTLR_EL1.C both set. On the host, always true.
pub struct Sctlr;

impl ExclusiveMonitor for Sctlr {
    #[inline]
    fn exclusives_work() -> bool {
        #[cfg(target_arch = "aarch64")]
        {
            use aarch64_cpu::registers::{Readable, SCTLR_EL1};
            // `mmu::enable` sets M and C in one write; either alone is not enough (M without
            // C makes every access Non-cacheable, which needs the global monitor too). The
            // `mrs` is not a `pure` asm: every lock reads the register afresh, never a value
            // the compiler kept from before `mmu::enable`.
            SCTLR_EL1.matches_all(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable)
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            true
        }
    }
}

/// A spin lock whose lock word is taken without exclusives while `M` says they do not work.
///
/// Caches off (boot, before `mmu::enable`): only the boot CPU runs and interrupts are
/// masked, so nothing can take the lock between a load and a store: `lock` reads the word
/// (`ldarb`) and, if free, writes it (`strb`). Finding it held means the holder is the code
/// that called `lock` again (re-entry, e.g. a log line inside a console write), which would
/// never release it: `lock` panics instead of hanging. The panic handler steals the console
/// lock (its emergency writer), waits for no other lock and never allocates, so the report
/// gets out whichever lock was re-entered. Caches on: compare-and-swap, spinning while held,
/// as `spin::Mutex` does. `unlock` is a store-release (`stlrb`) either way, so a lock taken
/// before the MMU is on may be released after it.
pub struct EarlyRawMutex<M: ExclusiveMonitor = Sctlr> {
    locked: AtomicBool,
    monitor: PhantomData<fn() -> M>,
}

/// A mutex usable from the first Rust instruction on (see [`EarlyRawMutex`]).
pub type EarlyMutex<T> = lock_api::Mutex<EarlyRawMutex, T>;
/// The guard of an [`EarlyMutex`].
pub type EarlyMutexGuard<'a, T> = lock_api::MutexGuard<'a, EarlyRawMutex, T>;

impl<M: ExclusiveMonitor> EarlyRawMutex<M> {
    /// Takes a free lock word with a load and a store. Sound only while nothing else can run
    /// between the two: one core, interrupts masked (every caller checks `M` first).
    #[inline]
    fn try_lock_plain(&self) -> bool {
        if self.locked.load(Ordering::Acquire) {
            return false;
        }
        self.locked.store(true, Ordering::Relaxed);
        true
    }

    /// The compare-and-swap path, out of line so that the binary's only exclusives sit in
    /// these two functions, each called only after the SCTLR check (docs/hardware.md shows
    /// how to check that with llvm-objdump).
    #[inline(never)]
    fn lock_exclusive(&self) {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    /// See [`Self::lock_exclusive`].
    #[inline(never)]
    fn try_lock_exclusive(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cold]
    #[inline(never)]
    fn reentered(&self) -> ! {
        panic!(
            "lock at {:#x} taken again by its holder before the MMU is on (re-entrant use; \
             find the static with llvm-nm)",
            &self.locked as *const AtomicBool as usize
        )
    }
}

// SAFETY: mutual exclusion holds on both paths. Caches on: the compare-and-swap admits one
// holder. Caches off: only the boot CPU runs, with interrupts masked, so no other agent can
// write the word between `try_lock_plain`'s load and store; a second `lock` by the holder
// panics, a second `try_lock` fails. The word is only cleared by `unlock`, called by the
// holder (lock_api's contract), with Release ordering publishing the critical section.
unsafe impl<M: ExclusiveMonitor> lock_api::RawMutex for EarlyRawMutex<M> {
    const INIT: Self = Self {
        locked: AtomicBool::new(false),
        monitor: PhantomData,
    };

    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        if M::exclusives_work() {
            self.lock_exclusive();
        } else if !self.try_lock_plain() {
            self.reentered();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        if M::exclusives_work() {
            self.try_lock_exclusive()
        } else {
            self.try_lock_plain()
        }
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    /// The MMU and caches are off for good.
    struct CachesOff;
    impl ExclusiveMonitor for CachesOff {
        fn exclusives_work() -> bool {
            false
        }
    }

    std::thread_local! {
        static CACHES_ON: Cell<bool> = const { Cell::new(false) };
    }

    /// The MMU comes on when the test says so (per test thread).
    struct Switch;
    impl ExclusiveMonitor for Switch {
        fn exclusives_work() -> bool {
            CACHES_ON.with(Cell::get)
        }
    }

    type Mutex<M, T> = lock_api::Mutex<EarlyRawMutex<M>, T>;

    #[test]
    fn caches_off_lock_excludes_and_releases() {
        let m: Mutex<CachesOff, u32> = Mutex::new(7);
        {
            let mut g = m.lock();
            *g += 1;
            assert!(m.is_locked());
            assert!(m.try_lock().is_none());
        }
        assert!(!m.is_locked());
        assert_eq!(*m.lock(), 8);
        assert_eq!(*m.try_lock().expect("free after the guard dropped"), 8);
    }

    #[test]
    #[should_panic(expected = "taken again by its holder before the MMU is on")]
    fn caches_off_relock_by_the_holder_panics_instead_of_spinning() {
        let m: Mutex<CachesOff, ()> = Mutex::new(());
        let _held = m.lock();
        let _again = m.lock();
    }

    #[test]
    fn lock_taken_before_the_mmu_is_released_after_it() {
        CACHES_ON.with(|c| c.set(false));
        let m: Mutex<Switch, u32> = Mutex::new(0);
        let mut g = m.lock();
        *g = 1;
        CACHES_ON.with(|c| c.set(true));
        assert!(
            m.try_lock().is_none(),
            "the compare-and-swap sees the plain store"
        );
        drop(g);
        assert!(!m.is_locked());
        *m.lock() += 1;
        assert_eq!(*m.try_lock().expect("free"), 2);
    }

    #[test]
    fn caches_on_lock_excludes_other_threads() {
        const PER_THREAD: u32 = 20_000;
        let m: Arc<Mutex<Sctlr, u32>> = Arc::new(Mutex::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..PER_THREAD {
                        let mut g = m.lock();
                        // A split read-modify-write: lost updates show if two threads hold it.
                        let v = *g;
                        if v.is_multiple_of(1000) {
                            std::thread::yield_now();
                        }
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread panicked");
        }
        assert_eq!(*m.lock(), 4 * PER_THREAD);
    }
}
