//! BCM2711 GPIO: route GPIO14/15 to the PL011 (ALT0) with pull resistors off.
//!
//! Only touches GPFSEL1 and GPIO_PUP_PDN_CNTRL_REG0, and within them only the bits of pins
//! 14 and 15. QEMU ignores this; a real Pi 4 prints nothing without it.

use tock_registers::interfaces::ReadWriteable;
use tock_registers::register_bitfields;
use tock_registers::registers::ReadWrite;

register_bitfields![u32,
    /// GPFSEL1: function select for GPIO10..19, 3 bits per pin.
    GPFSEL1 [
        /// GPIO14 function (TXD0 of the PL011 in ALT0).
        FSEL14 OFFSET(12) NUMBITS(3) [Input = 0b000, Output = 0b001, Alt0 = 0b100],
        /// GPIO15 function (RXD0 of the PL011 in ALT0).
        FSEL15 OFFSET(15) NUMBITS(3) [Input = 0b000, Output = 0b001, Alt0 = 0b100]
    ],
    /// GPIO_PUP_PDN_CNTRL_REG0: pull control for GPIO0..15, 2 bits per pin (BCM2711 only;
    /// the BCM2835 GPPUD/GPPUDCLK sequence does not exist on this chip).
    PUP_PDN0 [
        /// GPIO14 pull: none / up / down.
        PULL14 OFFSET(28) NUMBITS(2) [None = 0b00, Up = 0b01, Down = 0b10],
        /// GPIO15 pull: none / up / down.
        PULL15 OFFSET(30) NUMBITS(2) [None = 0b00, Up = 0b01, Down = 0b10]
    ]
];

/// Offset of GPFSEL1 from the GPIO block base.
pub const GPFSEL1_OFFSET: usize = 0x04;
/// Offset of GPIO_PUP_PDN_CNTRL_REG0 from the GPIO block base.
pub const PUP_PDN0_OFFSET: usize = 0xe4;

/// Puts GPIO14/15 on ALT0 (PL011 TXD0/RXD0) with no pull resistors.
///
/// # Safety
/// `base` must be the BCM2711 GPIO block (CPU address 0xfe200000 on a Pi 4), device mapped.
pub unsafe fn uart0_pins_alt0(base: u64) {
    // SAFETY: the caller guarantees the GPIO block at `base`; the offsets are from the manual.
    let fsel =
        unsafe { &*((base as usize + GPFSEL1_OFFSET) as *const ReadWrite<u32, GPFSEL1::Register>) };
    // SAFETY: as above.
    let pull = unsafe {
        &*((base as usize + PUP_PDN0_OFFSET) as *const ReadWrite<u32, PUP_PDN0::Register>)
    };
    fsel.modify(GPFSEL1::FSEL14::Alt0 + GPFSEL1::FSEL15::Alt0);
    pull.modify(PUP_PDN0::PULL14::None + PUP_PDN0::PULL15::None);
}
