//! Helpers shared by the integration tests.
#![allow(dead_code)]
pub mod fdt_tools;
pub mod sim;
