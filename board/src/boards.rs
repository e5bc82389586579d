//! Board facts as data, and board detection from the root `compatible`.
//!
//! Addresses here are used only where the FDT does not say (UART clocks, the BCM2711 GPIO
//! and PM blocks) or when there is no FDT at all (the default board).

use mm::{PhysAddr, PhysRange};

/// The boards baton knows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BoardKind {
    /// QEMU `-M virt` (root compatible `linux,dummy-virt`).
    QemuVirt,
    /// Raspberry Pi 4 Model B, real or QEMU `-M raspi4b` (`raspberrypi,4-model-b`,
    /// `brcm,bcm2711`).
    Rpi4,
    /// Any other FDT: console and power-off come only from the FDT.
    Generic,
}

/// How the board was decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BoardSource {
    /// From the FDT's root `compatible`.
    Compatible,
    /// No FDT magic at x0: the documented default board (rpi4).
    DefaultNoFdt,
}

/// How a board powers off when semihosting is not there.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// PSCI SYSTEM_OFF through the FDT's method.
    Psci,
    /// The BCM2711 PM watchdog with the "halt" partition.
    Bcm2711Watchdog { pm_base: u64 },
}

/// What code needs to know about a board beyond its FDT.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BoardFacts {
    pub name: &'static str,
    /// PL011 reference clock (`None`: keep the firmware's divisors).
    pub uart_clock_hz: Option<u32>,
    /// BCM2711 GPIO block, for routing GPIO14/15 to the PL011.
    pub gpio_base: Option<u64>,
    /// The PL011 to report on when the FDT cannot be read (a malformed tree, or none).
    pub fallback_uart: Option<u64>,
    pub power_off: PowerOff,
}

/// QEMU virt: PL011 on the 24 MHz `apb-pclk`, PSCI.
pub const QEMU_VIRT: BoardFacts = BoardFacts {
    name: "qemu-virt",
    uart_clock_hz: Some(24_000_000),
    gpio_base: None,
    fallback_uart: Some(QEMU_VIRT_UART0),
    power_off: PowerOff::Psci,
};

/// Raspberry Pi 4: PL011 clock set to 48 MHz by the firmware, GPIO at 0xfe200000, PM at
/// 0xfe100000 (CPU addresses; the FDT shows them as bus addresses 0x7e......).
pub const RPI4: BoardFacts = BoardFacts {
    name: "rpi4",
    uart_clock_hz: Some(48_000_000),
    gpio_base: Some(0xfe20_0000),
    fallback_uart: Some(RPI4_UART0),
    power_off: PowerOff::Bcm2711Watchdog {
        pm_base: 0xfe10_0000,
    },
};

/// Anything else.
pub const GENERIC: BoardFacts = BoardFacts {
    name: "generic",
    uart_clock_hz: None,
    gpio_base: None,
    fallback_uart: None,
    power_off: PowerOff::Psci,
};

/// QEMU virt's PL011 (`-M virt` puts it at 0x0900_0000).
pub const QEMU_VIRT_UART0: u64 = 0x0900_0000;
/// Pi 4 PL011 (uart0) at its CPU address.
pub const RPI4_UART0: u64 = 0xfe20_1000;
/// RAM the default board assumes: the low 1 GiB minus the firmware's GPU split on every Pi 4
/// model (0x3c000000 is below the smallest `total_mem - gpu_mem` the firmware reports).
pub const RPI4_DEFAULT_RAM: PhysRange = PhysRange::new(PhysAddr(0), 0x3c00_0000);
/// The spin-table page: secondaries wait on 0xd8..0xf0; never allocate it.
pub const RPI4_SPIN_TABLE_PAGE: PhysRange = PhysRange::new(PhysAddr(0), 0x1000);
/// The peripheral window of the BCM2711 (main peripherals + ARM local), CPU addresses.
pub const RPI4_PERIPHERALS: PhysRange = PhysRange::new(PhysAddr(0xfc00_0000), 0x0400_0000);

impl BoardKind {
    /// Decides the board from the root `compatible` strings.
    pub fn from_compatible<'a>(mut compatible: impl Iterator<Item = &'a str>) -> Self {
        compatible
            .find_map(|c| match c {
                "linux,dummy-virt" => Some(Self::QemuVirt),
                "raspberrypi,4-model-b" | "brcm,bcm2711" => Some(Self::Rpi4),
                _ => None,
            })
            .unwrap_or(Self::Generic)
    }

    pub fn facts(self) -> &'static BoardFacts {
        match self {
            Self::QemuVirt => &QEMU_VIRT,
            Self::Rpi4 => &RPI4,
            Self::Generic => &GENERIC,
        }
    }

    pub fn name(self) -> &'static str {
        self.facts().name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_are_detected_from_any_compatible_entry() {
        assert_eq!(
            BoardKind::from_compatible(["linux,dummy-virt"].into_iter()),
            BoardKind::QemuVirt
        );
        assert_eq!(
            BoardKind::from_compatible(["raspberrypi,4-model-b", "brcm,bcm2711"].into_iter()),
            BoardKind::Rpi4
        );
        assert_eq!(
            BoardKind::from_compatible(["brcm,bcm2711"].into_iter()),
            BoardKind::Rpi4
        );
        assert_eq!(
            BoardKind::from_compatible(["acme,board"].into_iter()),
            BoardKind::Generic
        );
    }
}
