//! `stamp-image <Image>`: writes baton's build stamp (tag + CRC-32 of the file) into the
//! header's `res3` word, after checking the file is a valid arm64 Image.
//!
//! The running image uses the stamp to prove that its pristine copy (the next image of a
//! self-handover) and an Image passed as initrd are byte for byte what was built. The
//! Makefile runs this right after `objcopy`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: stamp-image <Image>");
        return ExitCode::from(2);
    };
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("stamp-image: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Check the header first (a stale stamp is fine: it is about to be replaced).
    let mut unstamped = bytes.clone();
    if unstamped.len() >= baton_image::HEADER_SIZE {
        let at = baton_image::OFF_STAMP;
        unstamped[at..at + 8].fill(0);
    }
    if let Err(e) = baton_image::parse(&unstamped) {
        eprintln!("stamp-image: {path}: not a valid arm64 Image: {e}");
        return ExitCode::FAILURE;
    }
    let crc = match baton_image::stamp(&mut bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stamp-image: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(path, &bytes) {
        eprintln!("stamp-image: {path}: {e}");
        return ExitCode::FAILURE;
    }
    println!("  STAMP  {path} (crc32 {crc:#010x}, {} bytes)", bytes.len());
    ExitCode::SUCCESS
}
