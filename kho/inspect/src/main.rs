//! `kho-inspect DUMP [--fdt ADDR] [--base ADDR] [--json]`: what the next image would make of
//! the handover in a guest memory dump. Everything is in the library (`report::run`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = kho_inspect::run(&args, &mut std::io::stdout().lock(), &mut std::io::stderr());
    std::process::exit(code);
}
