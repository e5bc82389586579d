//! BCM2711 GPIO: route GPIO14/15 to the PL011 (ALT0) with pull resistors off.
//!
//! Only touches GPFSEL1 and GPIO_PUP_PDN_CNTRL_REG0, and within them only the bits of pins
//! 14 and 15 (read-modify-write); never drives a pin as an output. QEMU ignores all of this;
//! a real Pi 4 prints nothing without it. Register facts: "BCM2711 ARM Peripherals",
//! chapter 5 "General Purpose I/O (GPIO)", sections 5.2 "Register View" and 5.3
//! "Alternative Function Assignments" (GPIO14 ALT0 = TXD0, GPIO15 ALT0 = RXD0).

use tock_registers::interfaces::ReadWriteable;
use tock_registers::registers::ReadWrite;
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    /// GPFSEL1: function select for GPIO10..19, 3 bits per pin (pin n at bit 3 * (n - 10)).
    /// Codes (5.2): 000 input, 001 output, 100 ALT0, 101 ALT1, 110 ALT2, 111 ALT3,
    /// 011 ALT4, 010 ALT5.
    pub GPFSEL1 [
        /// GPIO14 function; ALT0 is TXD0, the PL011's transmit line (header pin 8).
        FSEL14 OFFSET(12) NUMBITS(3) [Input = 0b000, Output = 0b001, Alt0 = 0b100],
        /// GPIO15 function; ALT0 is RXD0, the PL011's receive line (header pin 10).
        FSEL15 OFFSET(15) NUMBITS(3) [Input = 0b000, Output = 0b001, Alt0 = 0b100]
    ],
    /// GPIO_PUP_PDN_CNTRL_REG0: pull resistors of GPIO0..15, 2 bits per pin (pin n at bit
    /// 2n). 00 no resistor, 01 pull-up, 10 pull-down, 11 reserved. Takes effect on write;
    /// BCM2711 only: the BCM2835's GPPUD/GPPUDCLK clocking sequence does not exist here.
    pub PUP_PDN_CNTRL0 [
        /// GPIO14 pull resistor.
        PULL14 OFFSET(28) NUMBITS(2) [None = 0b00, Up = 0b01, Down = 0b10],
        /// GPIO15 pull resistor.
        PULL15 OFFSET(30) NUMBITS(2) [None = 0b00, Up = 0b01, Down = 0b10]
    ]
];

register_structs! {
    /// The start of the GPIO block, up to the last register baton uses. Base 0x7e20_0000 on
    /// the VideoCore bus, 0xfe20_0000 for the ARM cores (low-peripheral mode, the default).
    pub GpioRegisters {
        /// GPFSEL0 (GPIO0..9): not touched.
        (0x00 => _gpfsel0),
        (0x04 => gpfsel1: ReadWrite<u32, GPFSEL1::Register>),
        /// GPFSEL2..5, GPSET, GPCLR, GPLEV and the event-detect registers: not touched.
        (0x08 => _not_used),
        (0xe4 => pup_pdn_cntrl0: ReadWrite<u32, PUP_PDN_CNTRL0::Register>),
        (0xe8 => @END),
    }
}

/// Puts GPIO14/15 on ALT0 (PL011 TXD0/RXD0) with no pull resistors.
///
/// # Safety
/// `base` must be the BCM2711 GPIO block (CPU address 0xfe20_0000 on a Pi 4), device mapped
/// or reached with the MMU off, and nothing else may reprogram GPIO10..19 meanwhile.
pub unsafe fn uart0_pins_alt0(base: u64) {
    // SAFETY: the caller guarantees the GPIO block at `base`; `GpioRegisters` is its layout
    // from the manual (offsets checked by `register_structs!`).
    let regs = unsafe { &*(base as usize as *const GpioRegisters) };
    regs.gpfsel1
        .modify(GPFSEL1::FSEL14::Alt0 + GPFSEL1::FSEL15::Alt0);
    regs.pup_pdn_cntrl0
        .modify(PUP_PDN_CNTRL0::PULL14::None + PUP_PDN_CNTRL0::PULL15::None);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words from the block base to the end of GPIO_PUP_PDN_CNTRL_REG0.
    const WORDS: usize = 0xe8 / 4;
    /// GPFSEL1 at offset 0x04.
    const GPFSEL1_WORD: usize = 1;
    /// GPIO_PUP_PDN_CNTRL_REG0 at offset 0xe4.
    const PUP_PDN0_WORD: usize = 0xe4 / 4;

    /// A GPIO block in host memory with every register preset to `fill`, after the routing.
    fn route_on_block_filled_with(fill: u32) -> [u32; WORDS] {
        let mut block = [fill; WORDS];
        // SAFETY: `block` is a live, 4-aligned buffer as large as `GpioRegisters`, used by
        // nothing else during the call.
        unsafe { uart0_pins_alt0(block.as_mut_ptr() as u64) };
        block
    }

    #[test]
    fn register_offsets_match_the_bcm2711_manual() {
        assert_eq!(core::mem::offset_of!(GpioRegisters, gpfsel1), 0x04);
        assert_eq!(core::mem::offset_of!(GpioRegisters, pup_pdn_cntrl0), 0xe4);
        assert_eq!(core::mem::size_of::<GpioRegisters>(), 0xe8);
    }

    #[test]
    fn pins_14_and_15_become_alt0_from_input() {
        let block = route_on_block_filled_with(0);
        // FSEL14 = 0b100 at bit 12, FSEL15 = 0b100 at bit 15.
        assert_eq!(block[GPFSEL1_WORD], 0x0002_4000);
        assert_eq!(block[PUP_PDN0_WORD], 0);
    }

    #[test]
    fn other_pins_keep_their_function_and_pulls() {
        // Every pin ALT3 (0b111) and every pull "reserved" (0b11): only 14/15 may change.
        let block = route_on_block_filled_with(0xffff_ffff);
        assert_eq!(block[GPFSEL1_WORD], 0xfffe_4fff);
        assert_eq!(block[PUP_PDN0_WORD], 0x0fff_ffff);
    }

    #[test]
    fn pulls_of_pins_14_and_15_are_switched_off() {
        // Pull-up on every pin (0b01 each): pins 14/15 lose theirs, 0..13 keep it.
        let block = route_on_block_filled_with(0x5555_5555);
        assert_eq!(block[PUP_PDN0_WORD], 0x0555_5555);
        // Pull-down on every pin (0b10 each).
        let block = route_on_block_filled_with(0xaaaa_aaaa);
        assert_eq!(block[PUP_PDN0_WORD], 0x0aaa_aaaa);
    }

    #[test]
    fn no_other_register_is_written() {
        let fill = 0x1234_5678;
        let block = route_on_block_filled_with(fill);
        for (i, &word) in block.iter().enumerate() {
            if i != GPFSEL1_WORD && i != PUP_PDN0_WORD {
                assert_eq!(word, fill, "register at offset {:#x} changed", i * 4);
            }
        }
    }
}
