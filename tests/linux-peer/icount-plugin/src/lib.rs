//! icount-plugin: a QEMU TCG plugin that counts the guest instructions executed since QEMU
//! started and prints that count each time a watched address executes.
//!
//! Owns one per-vCPU counter (an inline add of each translation block's length, emitted at
//! the block's start) and the hit counters of its watches. Never changes guest state, never
//! reads guest memory or registers; the only output is `icount-plugin: ...` lines on QEMU's
//! log (stderr unless `-D`).
//!
//! Arguments (`-plugin libicount_plugin.so,at=...,fn=...`, each repeatable):
//! - `at=<name>:<hex vaddr>`: on every execution of that instruction print
//!   `icount-plugin: <name> <hit> <count>` (`hit` from 1; `count` = instructions executed
//!   before it, so the difference of two counts is the instructions run between them).
//! - `fn=<name>:<hex start>:<hex end>`: `at=<name>:<start>`, plus every `ret` in
//!   [start, end) prints as `<name>.ret`; the difference to the entry's count is one call.
//!
//! The count is exact unless a block stops part-way (a synchronous exception inside it):
//! then that block's remaining instructions count too (a few per fault, none in early boot).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use qemu_plugin::sys::{qemu_plugin_scoreboard_new, qemu_plugin_u64};
use qemu_plugin::{
    Args, CallbackFlags, HasCallbacks, Info, PluginId, PluginOp, Register, TranslationBlock,
    VCPUIndex, qemu_plugin_outs, qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu,
    qemu_plugin_u64_get, register,
};

/// One watched address.
struct Watch {
    /// What the output line calls it (`<fn name>.ret` for a return).
    name: String,
    vaddr: u64,
    /// Executions so far.
    hits: AtomicU64,
}

/// A function whose `ret` instructions are watched as `<name>.ret`.
struct Span {
    name: String,
    start: u64,
    end: u64,
}

/// The per-vCPU instruction counter: one `u64` per vCPU in a QEMU scoreboard.
#[derive(Clone, Copy)]
struct Counter(qemu_plugin_u64);

// SAFETY: the scoreboard is allocated once in `register` and never freed (it lives as long
// as QEMU); QEMU resizes and reads it only under its own locks, and each vCPU touches only
// its own entry, so the handle may be shared by the callbacks of every vCPU thread.
unsafe impl Send for Counter {}
// SAFETY: as for `Send`: the handle is immutable, reads go through QEMU's accessor.
unsafe impl Sync for Counter {}

impl Counter {
    fn new() -> Self {
        // SAFETY: QEMU has installed the plugin (we are called from its install hook), so the
        // scoreboard API is live; the scoreboard is never freed (see `Send`).
        let score = unsafe { qemu_plugin_scoreboard_new(std::mem::size_of::<u64>()) };
        Counter(qemu_plugin_u64 { score, offset: 0 })
    }

    fn get(self, vcpu: VCPUIndex) -> u64 {
        qemu_plugin_u64_get(self.0, vcpu)
    }
}

#[derive(Default)]
struct IcountPlugin {
    counter: Option<Counter>,
    watches: Vec<Arc<Watch>>,
    spans: Vec<Span>,
    /// `ret` watches, created on first translation of each return address.
    rets: Vec<Arc<Watch>>,
}

/// Why an argument was refused (printed by QEMU as the plugin's install error).
#[derive(Debug)]
enum ArgError {
    Unknown(String),
    Malformed(String),
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgError::Unknown(a) => {
                write!(
                    f,
                    "unknown argument {a:?} (at=<name>:<hex> or fn=<name>:<hex>:<hex>)"
                )
            }
            ArgError::Malformed(a) => write!(f, "malformed argument {a:?}"),
        }
    }
}

impl std::error::Error for ArgError {}

fn hex(text: &str, arg: &str) -> Result<u64, ArgError> {
    let digits = text.trim_start_matches("0x");
    u64::from_str_radix(digits, 16).map_err(|_| ArgError::Malformed(arg.to_string()))
}

fn watch(name: &str, vaddr: u64) -> Arc<Watch> {
    Arc::new(Watch {
        name: name.to_string(),
        vaddr,
        hits: AtomicU64::new(0),
    })
}

impl IcountPlugin {
    fn parse(&mut self, arg: &str) -> Result<(), ArgError> {
        let malformed = || ArgError::Malformed(arg.to_string());
        let (key, value) = arg.split_once('=').ok_or_else(malformed)?;
        let parts: Vec<&str> = value.split(':').collect();
        match (key, parts.as_slice()) {
            ("at", [name, addr]) if !name.is_empty() => {
                self.watches.push(watch(name, hex(addr, arg)?));
            }
            ("fn", [name, start, end]) if !name.is_empty() => {
                let (start, end) = (hex(start, arg)?, hex(end, arg)?);
                if end <= start {
                    return Err(malformed());
                }
                self.watches.push(watch(name, start));
                self.spans.push(Span {
                    name: name.to_string(),
                    start,
                    end,
                });
            }
            ("at" | "fn", _) => return Err(malformed()),
            _ => return Err(ArgError::Unknown(arg.to_string())),
        }
        Ok(())
    }

    /// The watch for the `ret` at `vaddr`, if `vaddr` is a return inside a watched span.
    /// `disas` disassembles the instruction; it runs only for addresses inside a span.
    fn ret_watch(
        &mut self,
        vaddr: u64,
        disas: impl FnOnce() -> qemu_plugin::Result<String>,
    ) -> qemu_plugin::Result<Option<Arc<Watch>>> {
        let Some(span) = self
            .spans
            .iter()
            .find(|s| (s.start..s.end).contains(&vaddr))
        else {
            return Ok(None);
        };
        if disas()?.split_whitespace().next() != Some("ret") {
            return Ok(None);
        }
        if let Some(w) = self.rets.iter().find(|w| w.vaddr == vaddr) {
            return Ok(Some(w.clone()));
        }
        let w = watch(&format!("{}.ret", span.name), vaddr);
        self.rets.push(w.clone());
        Ok(Some(w))
    }
}

impl Register for IcountPlugin {
    fn register(&mut self, _id: PluginId, args: &Args, _info: &Info) -> qemu_plugin::Result<()> {
        for arg in &args.raw {
            if let Err(e) = self.parse(arg) {
                // QEMU reports only that the install failed: say why first.
                eprintln!("icount-plugin: {e}");
                return Err(qemu_plugin::Error::MissingArgValue {
                    argument: arg.clone(),
                });
            }
        }
        self.counter = Some(Counter::new());
        Ok(())
    }
}

impl HasCallbacks for IcountPlugin {
    fn on_translation_block_translate(
        &mut self,
        _id: PluginId,
        tb: TranslationBlock,
    ) -> qemu_plugin::Result<()> {
        let Some(counter) = self.counter else {
            return Ok(());
        };
        let n = tb.size();
        qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
            tb.clone(),
            PluginOp::QEMU_PLUGIN_INLINE_ADD_U64,
            counter.0,
            n as u64,
        );
        for (i, insn) in tb.instructions().enumerate() {
            let vaddr = insn.vaddr();
            let mut hit: Vec<Arc<Watch>> = self
                .watches
                .iter()
                .filter(|w| w.vaddr == vaddr)
                .cloned()
                .collect();
            hit.extend(self.ret_watch(vaddr, || insn.disas())?);
            // The block's add ran at its start: instructions after this one are already in
            // the counter and must come off.
            let ahead = (n - i) as u64;
            for w in hit {
                insn.register_execute_callback_flags(
                    move |vcpu| {
                        let count = counter.get(vcpu).saturating_sub(ahead);
                        let hit = w.hits.fetch_add(1, Ordering::Relaxed) + 1;
                        // Nothing to do if QEMU's log is gone.
                        let _ =
                            qemu_plugin_outs(format!("icount-plugin: {} {hit} {count}\n", w.name));
                    },
                    CallbackFlags::QEMU_PLUGIN_CB_NO_REGS,
                );
            }
        }
        Ok(())
    }
}

register!(IcountPlugin::default());
