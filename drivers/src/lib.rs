//! Device drivers for baton: the PL011 console, the BCM2711 GPIO pin setup for the UART and
//! the BCM2711 power-management watchdog used to power off a Pi 4.
//!
//! Drivers take their MMIO base addresses from the caller (the board crate, which got them
//! from the FDT or its board facts); none hard-codes an address. MMIO is target-only.
#![cfg_attr(not(test), no_std)]

pub mod bcm2711_gpio; // GPIO14/15 to ALT0 (PL011 TXD0/RXD0), pulls off
pub mod bcm2711_pm; // PM watchdog: power off / reset a BCM2711
pub mod console; // the global PL011 console behind `core::fmt::Write`
