//! Writing a device tree with `baton-fdt` and reading it back: the two halves another kernel
//! uses to describe state for its successor and to parse what it was given.
//!
//! Builds a small tree (root cells, a memory node, `/chosen` with a string and a 64-bit
//! property), then parses the bytes with the strict reader and looks the nodes up by path.
//! Run with `cargo run -p baton-fdt --example tree`.

use baton_fdt::{check_header, Fdt, FdtWriter};

/// Big-endian cells, the way FDT properties store integers.
fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn write_tree() -> Result<Vec<u8>, baton_fdt::FdtWriteError> {
    let mut w = FdtWriter::new();
    // Memory the next kernel must not touch goes in the reservation block.
    w.mem_reserve(0x4800_0000, 0x1000);
    w.begin_node("")?;
    w.prop("#address-cells", &cells(&[2]))?;
    w.prop("#size-cells", &cells(&[2]))?;
    w.begin_node("memory@40000000")?;
    w.prop_str("device_type", "memory")?;
    w.prop("reg", &cells(&[0, 0x4000_0000, 0, 0x0800_0000]))?;
    w.end_node()?;
    w.begin_node("chosen")?;
    w.prop_str("bootargs", "console=ttyAMA0 loglevel=info")?;
    w.prop_u64_le("example,generation", 7)?;
    w.end_node()?;
    w.end_node()?;
    w.finish()
}

/// A typed error as the line `main` prints.
fn text(e: impl core::fmt::Display) -> String {
    e.to_string()
}

fn main() -> Result<(), String> {
    let bytes = write_tree().map_err(text)?;
    // The header alone: what a loader checks before it copies the blob anywhere.
    let header = check_header(&bytes, bytes.len()).map_err(text)?;
    println!(
        "wrote {} bytes (header says {})",
        bytes.len(),
        header.totalsize
    );

    let fdt = Fdt::parse(&bytes).map_err(text)?;
    let node = |path: &str| {
        fdt.find(path)
            .map(|i| &fdt.nodes[i])
            .ok_or(format!("no {path}"))
    };
    let chosen = node("/chosen")?;
    assert_eq!(
        chosen.prop("bootargs"),
        Some(&b"console=ttyAMA0 loglevel=info\0"[..])
    );
    let generation = chosen.prop("example,generation").ok_or("no generation")?;
    assert_eq!(generation, 7u64.to_le_bytes());
    let memory = node("/memory@40000000")?;
    assert_eq!(
        memory.prop("reg"),
        Some(&cells(&[0, 0x4000_0000, 0, 0x0800_0000])[..])
    );
    assert_eq!(fdt.mem_reserve, vec![(0x4800_0000, 0x1000)]);
    println!("read back /chosen bootargs and generation, /memory reg, one reservation");
    Ok(())
}
