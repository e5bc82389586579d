//! The tree nodes kho's validation walked, taken from its own trace records.
//!
//! kho's walk logs `kho: <tree> tree level-<n> node <phys>` at trace level for each node it
//! has checked (`kho/src/validate.rs`). The inspector installs a `log` backend that keeps
//! those records for the current thread while `kho::probe` runs, so the node list is the
//! walk's, not a second decoder's. Owns that backend and nothing else; other records are
//! dropped (kho's own messages come back as its returned values).

use std::cell::RefCell;

use log::{LevelFilter, Log, Metadata, Record};

/// One node page: which tree, which level (5 = root, 0 = leaf), where.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NodeRec {
    /// `"main"` or `"split"`.
    pub tree: &'static str,
    pub level: u32,
    pub phys: u64,
}

thread_local! {
    static CAPTURE: RefCell<Option<Vec<NodeRec>>> = const { RefCell::new(None) };
}

struct Capture;

static LOGGER: Capture = Capture;

impl Log for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target().starts_with("kho")
    }

    fn log(&self, r: &Record<'_>) {
        if r.level() != log::Level::Trace || !self.enabled(r.metadata()) {
            return;
        }
        CAPTURE.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                if let Some(n) = parse(&r.args().to_string()) {
                    v.push(n);
                }
            }
        });
    }

    fn flush(&self) {}
}

/// Parses `kho: main tree level-3 node 0x4567000`.
fn parse(msg: &str) -> Option<NodeRec> {
    let rest = msg.strip_prefix("kho: ")?;
    let (tree, rest) = rest.split_once(" tree level-")?;
    let tree = match tree {
        "main" => "main",
        "split" => "split",
        _ => return None,
    };
    let (level, phys) = rest.split_once(" node 0x")?;
    Some(NodeRec {
        tree,
        level: level.parse().ok()?,
        phys: u64::from_str_radix(phys, 16).ok()?,
    })
}

/// Runs `f` with kho's node records captured; returns its result and the nodes, in walk
/// order (also when `f` fails: the nodes checked before the failure).
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<NodeRec>) {
    // Another logger may be installed already (a test binary); then no node is captured.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Trace);
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let nodes = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kho_node_record() {
        assert_eq!(
            parse("kho: split tree level-0 node 0x4123000"),
            Some(NodeRec {
                tree: "split",
                level: 0,
                phys: 0x412_3000
            })
        );
        assert_eq!(parse("kho: validated 3 preserved blocks"), None);
    }
}
