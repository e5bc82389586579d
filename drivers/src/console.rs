//! The boot console: one PL011 driven through the `arm-pl011-uart` crate.
//!
//! Owns the single global UART handle. Writers take an `arch::EarlyMutex` (no exclusives
//! while the MMU is off: the console prints long before it); the fatal paths (panic,
//! exception) may steal it, since baton runs on one core without interrupts and a held lock
//! there means we faulted while printing. Before `init`, writes are dropped. While [`hold`]
//! is on, lines go to a RAM buffer instead of the UART (a handover's blackout: formatting
//! them is cheap, the UART is not); [`release`], [`flush`] and the fatal paths send what is
//! held first, so every line still reaches the console, in order.

use core::fmt;

/// Baud rate of every baton console: 115200 8N1.
pub const BAUD: u32 = 115_200;

/// Why the console could not be set up.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// The base address is zero or not 4-byte aligned.
    BadBase { base: u64 },
    /// The PL011 refused the divisor for this clock.
    BadClock { clock_hz: u32 },
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBase { base } => {
                write!(f, "PL011 base {base:#x} is not a usable MMIO address")
            }
            Self::BadClock { clock_hz } => {
                write!(f, "PL011 clock {clock_hz} Hz cannot give {BAUD} baud")
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::*;
    use arm_pl011_uart::{DataBits, LineConfig, Parity, StopBits, Uart, UniqueMmioPointer};
    use core::fmt::Write;
    use core::ptr::NonNull;

    /// Bytes [`hold`] keeps back before it has to send them (a warm boot's lines up to its
    /// restore are about 3 KiB).
    const HOLD_BYTES: usize = 8 * 1024;

    /// The UART and the lines held back from it.
    struct Console {
        uart: Option<Uart<'static>>,
        holding: bool,
        held: usize,
        buf: [u8; HOLD_BYTES],
    }

    impl Console {
        /// Sends the held bytes to the UART (CR LF as ever) and empties the buffer.
        fn send_held(&mut self) {
            if let Some(uart) = self.uart.as_mut() {
                CrLf(uart).put_bytes(&self.buf[..self.held]);
            }
            self.held = 0;
        }
    }

    impl Write for Console {
        /// Appends `s` to the held bytes, sending them first when `s` does not fit (and `s`
        /// itself straight away when it is longer than the buffer).
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let bytes = s.as_bytes();
            if bytes.len() > HOLD_BYTES - self.held {
                self.send_held();
            }
            if bytes.len() > HOLD_BYTES {
                if let Some(uart) = self.uart.as_mut() {
                    CrLf(uart).put_bytes(bytes);
                }
                return Ok(());
            }
            self.buf[self.held..self.held + bytes.len()].copy_from_slice(bytes);
            self.held += bytes.len();
            Ok(())
        }
    }

    static CONSOLE: arch::EarlyMutex<Console> = arch::EarlyMutex::new(Console {
        uart: None,
        holding: false,
        held: 0,
        buf: [0; HOLD_BYTES],
    });
    static BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    /// Bytes written per UARTFR.TXFE poll: [`TX_FIFO_DEPTH`] once `init` has enabled the
    /// FIFOs itself (UARTLCR_H.FEN), 1 when the firmware's settings (FIFO state unknown)
    /// are kept.
    static BURST: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);

    /// Takes over the PL011 at `base` and programs it for 115200 8N1 from `clock_hz`; with
    /// no clock, the firmware's divisors and line settings are kept.
    ///
    /// # Safety
    /// `base` must be the physical (identity-mapped or MMU-off) address of a PL011 that
    /// nothing else drives.
    pub unsafe fn init(base: u64, clock_hz: Option<u32>) -> Result<(), ConsoleError> {
        let ptr = NonNull::new(base as *mut arm_pl011_uart::PL011Registers)
            .filter(|_| base.is_multiple_of(4))
            .ok_or(ConsoleError::BadBase { base })?;
        // SAFETY: the caller guarantees a PL011 at `base`, device-mapped, used only by us.
        let mut uart = Uart::new(unsafe { UniqueMmioPointer::new(ptr) });
        if let Some(clock_hz) = clock_hz {
            // Let whatever firmware was still sending leave before reprogramming (the PL011
            // TRM's UARTCR note: wait for the end of the current character first).
            wait_tx_idle(&uart);
            let config = LineConfig {
                data_bits: DataBits::Bits8,
                parity: Parity::None,
                stop_bits: StopBits::One,
            };
            uart.enable(config, BAUD, clock_hz)
                .map_err(|_| ConsoleError::BadClock { clock_hz })?;
            // `enable` sets UARTLCR_H.FEN: the transmit FIFO is there to fill.
            BURST.store(TX_FIFO_DEPTH, core::sync::atomic::Ordering::Relaxed);
        }
        CONSOLE.lock().uart = Some(uart);
        BASE.store(base, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Base address of the console UART, 0 before `init`.
    pub fn base() -> u64 {
        BASE.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Writes `args` to the console (newlines become CR LF), or to the held bytes while
    /// [`hold`] is on.
    pub fn write_fmt(args: fmt::Arguments<'_>) {
        let mut guard = CONSOLE.lock();
        let c = &mut *guard;
        if c.uart.is_none() {
            return;
        }
        if c.holding {
            let _ = c.write_fmt(args);
        } else if let Some(uart) = c.uart.as_mut() {
            let _ = CrLf(uart).write_fmt(args);
        }
    }

    /// Writes `args` even if the lock is held (fatal paths only), after whatever was held,
    /// and stops holding: a fatal path's lines go out at once.
    pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
        if CONSOLE.is_locked() {
            // SAFETY: one core, no interrupts: the holder is the code that just faulted or
            // panicked and will never resume its write.
            unsafe { CONSOLE.force_unlock() };
        }
        release();
        write_fmt(args);
    }

    /// From now on, lines are held in RAM instead of written to the UART, until
    /// [`release`] or [`flush`] (a buffer's worth at most: a full buffer is sent).
    pub fn hold() {
        CONSOLE.lock().holding = true;
    }

    /// Sends the held lines and writes straight to the UART again.
    pub fn release() {
        let mut c = CONSOLE.lock();
        c.send_held();
        c.holding = false;
    }

    /// Sends the held lines, then waits until every queued byte has left the UART, stop
    /// bits included (before powering off, and before a handover reprograms or abandons
    /// the UART).
    pub fn flush() {
        let mut c = CONSOLE.lock();
        c.send_held();
        if let Some(uart) = c.uart.as_ref() {
            wait_tx_idle(uart);
        }
    }

    /// Spins until the transmitter is idle: TX FIFO empty (UARTFR.TXFE) and nothing in the
    /// shift register (UARTFR.BUSY clear). PL011 TRM, "Flag Register, UARTFR": TXFE sets
    /// as soon as the last byte moves to the shift register, while BUSY stays set until its
    /// stop bit has been sent; both are checked so neither reading is trusted alone.
    fn wait_tx_idle(uart: &Uart<'_>) {
        while uart.is_busy() || !uart.is_tx_fifo_empty() {}
    }

    /// Bytes the PL011's transmit FIFO holds (PL011 TRM, "FIFOs": 16 entries on r1p5; the
    /// BCM2711's PL011s have 32, so 16 is safe on both).
    const TX_FIFO_DEPTH: usize = 16;

    /// Writes `&str` chunks to the UART, `\n` as CR LF. The FIFO is polled once per burst:
    /// once UARTFR.TXFE says it is empty, up to [`BURST`] bytes go in without another flag
    /// read, instead of one UARTFR read (and two calls) per byte.
    struct CrLf<'a, 'b>(&'a mut Uart<'b>);

    impl CrLf<'_, '_> {
        /// Queues `byte`, first waiting for an empty transmit FIFO when the last burst has
        /// used up its `room`.
        #[inline(always)]
        fn put(&mut self, room: &mut usize, burst: usize, byte: u8) {
            if *room == 0 {
                while !self.0.is_tx_fifo_empty() {}
                *room = burst;
            }
            self.0.write_word(byte);
            *room -= 1;
        }

        /// Writes `bytes`, `\n` as CR LF, polling the FIFO once per burst.
        fn put_bytes(&mut self, bytes: &[u8]) {
            let burst = BURST.load(core::sync::atomic::Ordering::Relaxed).max(1);
            let mut room = 0;
            for &b in bytes {
                if b == b'\n' {
                    self.put(&mut room, burst, b'\r');
                }
                self.put(&mut room, burst, b);
            }
        }
    }

    impl Write for CrLf<'_, '_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.put_bytes(s.as_bytes());
            Ok(())
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub use imp::*;

/// Host build: the console is standard error, so board logic can be exercised in tests.
#[cfg(not(target_arch = "aarch64"))]
pub fn write_fmt(args: fmt::Arguments<'_>) {
    extern crate std;
    std::eprint!("{args}");
}

/// Host build: same as `write_fmt`.
#[cfg(not(target_arch = "aarch64"))]
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    write_fmt(args);
}

/// Host build: nothing is held (standard error is cheap).
#[cfg(not(target_arch = "aarch64"))]
pub fn hold() {}

/// Host build: nothing is held.
#[cfg(not(target_arch = "aarch64"))]
pub fn release() {}

/// Host build: standard error is unbuffered, so nothing is queued.
#[cfg(not(target_arch = "aarch64"))]
pub fn flush() {}
