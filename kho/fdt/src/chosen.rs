//! The `/chosen` handover properties as a reader found them: `linux,kho-fdt` and
//! `linux,kho-scratch` as raw bytes, and the root cells they are encoded in.
//!
//! One type for every reader: the board's allocation-free boot parse fills it in, kho's
//! strict reader and the inspector too, and `kho::bootfdt::decode_handover` is its only
//! decoder. Holds bytes only; never interprets them.

/// The `/chosen` handover properties, undecoded. `Default` is "no handover named".
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChosenHandover<'a> {
    /// Root `#address-cells` when `/chosen` was read.
    pub address_cells: u32,
    /// Root `#size-cells` when `/chosen` was read.
    pub size_cells: u32,
    /// `linux,kho-fdt`, if present.
    pub kho_fdt: Option<&'a [u8]>,
    /// `linux,kho-scratch`, if present.
    pub kho_scratch: Option<&'a [u8]>,
}
