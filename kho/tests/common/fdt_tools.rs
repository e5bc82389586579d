//! Checks an FDT with the external tools: `dtc` decompiles it, libfdt (python) lists it.
//!
//! Shared by the integration tests; prints a notice and returns `None` when a tool is absent.

use std::io::Write;
use std::process::Command;

use kho::Fdt;

fn temp_file(bytes: &[u8], tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("kho-test-{}-{tag}.dtb", std::process::id()));
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

/// Decompiles with `dtc -I dtb -O dts`; panics on an error. `None` if dtc is absent.
pub fn dtc_decompile(bytes: &[u8], tag: &str) -> Option<String> {
    if cfg!(miri) {
        return None; // Miri cannot run processes
    }
    let p = temp_file(bytes, tag);
    let out = match Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-q"])
        .arg(&p)
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            println!("NOTICE: dtc not found, skipping the dtc check");
            return None;
        }
    };
    let _ = std::fs::remove_file(&p);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("ERROR"),
        "dtc failed: {err}"
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Every node path and property (`path:name=hex`) as libfdt sees it, sorted the way it walks.
/// `None` (with a notice) if Debian's python3-libfdt is unavailable.
pub fn libfdt_listing(bytes: &[u8], tag: &str) -> Option<Vec<String>> {
    if cfg!(miri) {
        return None;
    }
    let p = temp_file(bytes, tag);
    let script = r#"
import sys, libfdt
fdt = libfdt.Fdt(open(sys.argv[1], 'rb').read())
def walk(off, path):
    o = fdt.first_property_offset(off, libfdt.QUIET_NOTFOUND)
    while o >= 0:
        p = fdt.get_property_by_offset(o)
        print("%s:%s=%s" % (path, p.name, bytes(p).hex()))
        o = fdt.next_property_offset(o, libfdt.QUIET_NOTFOUND)
    c = fdt.first_subnode(off, libfdt.QUIET_NOTFOUND)
    while c >= 0:
        walk(c, (path if path != "/" else "") + "/" + fdt.get_name(c))
        c = fdt.next_subnode(c, libfdt.QUIET_NOTFOUND)
walk(0, "/")
print("memreserve-count:%d" % fdt.num_mem_rsv())
"#;
    let out = match Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&p)
        .output()
    {
        Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("No module named") => o,
        _ => {
            println!("NOTICE: python3-libfdt not available, skipping the libfdt check");
            return None;
        }
    };
    let _ = std::fs::remove_file(&p);
    assert!(
        out.status.success(),
        "libfdt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect(),
    )
}

/// Lower-case hex of `bytes`, as Python's `bytes.hex()` (cheap under Miri, unlike `format!`
/// per byte).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    }
    String::from_utf8(s).unwrap()
}

/// The same listing from our own reader.
pub fn own_listing(bytes: &[u8]) -> Vec<String> {
    listing(&Fdt::parse(bytes).unwrap())
}

/// The listing of an already parsed tree (parsing is the slow part under Miri).
pub fn listing(f: &Fdt<'_>) -> Vec<String> {
    let mut out = Vec::new();
    fn path_of(f: &Fdt<'_>, n: usize) -> String {
        match f.nodes[n].parent {
            None => "/".into(),
            Some(p) => {
                let pp = path_of(f, p);
                format!("{}/{}", if pp == "/" { "" } else { &pp }, f.nodes[n].name)
            }
        }
    }
    fn walk(f: &Fdt<'_>, n: usize, out: &mut Vec<String>) {
        let path = path_of(f, n);
        for p in &f.nodes[n].props {
            out.push(format!("{path}:{}={}", p.name, hex(p.value)));
        }
        for &c in &f.nodes[n].children {
            walk(f, c, out);
        }
    }
    walk(f, 0, &mut out);
    // pylibfdt's get_mem_rsv binding loses the address; compare the count, dtc shows values.
    out.push(format!("memreserve-count:{}", f.mem_reserve.len()));
    out
}

/// Asserts that dtc accepts `bytes` and that libfdt sees exactly what our reader sees.
pub fn check_fdt_with_tools(bytes: &[u8], tag: &str) {
    dtc_decompile(bytes, tag);
    if let Some(l) = libfdt_listing(bytes, tag) {
        assert_eq!(l, own_listing(bytes), "libfdt and kho disagree on {tag}");
    }
}
