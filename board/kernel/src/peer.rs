//! baton as a KHO peer: what the kernel does with preserved memory its workload does not own,
//! and how it hands over to a next image that is not baton.
//!
//! Incoming: a Linux handover (`kho-v4`) is logged client by client, its `kho_test` client
//! verified as Linux's test module would, its KHO FDT page and `kexec-metadata` consumed, and
//! every other block and client carried (kept allocated and preserved again, unchanged); a
//! baton handover's `baton-carry` list names what an earlier image carried. Outgoing: the
//! carry list for a baton next image, `kexec-metadata` and Linux's format for a Linux one,
//! and the `kho-test-v1` client `baton.kho-test=` asks for. Never hands the workload a block
//! it does not own.

extern crate alloc;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};

use board::cmdline::{Arg, HandoverFormat};
use kho::linux::{self, KexecMetadata, KHO_TEST_NODE};
use kho::{AbiVersion, CarryList, Handover, Incoming, Kho, CARRY_CLIENT, KEXEC_METADATA};
use log::{error, info, warn};
use mm::{FrameAllocator, PAGE_SIZE};

use super::physmem::IdentityMem;

/// Largest `baton-carry` blob this image reads (16 Mi entries of 8 bytes).
const MAX_CARRY_BLOB: u64 = 128 << 20;

/// The handover format this image writes for the next one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// `baton,kho-typed-v2` (a baton next image).
    Baton,
    /// Linux's `kho-v4` (any other arm64 Image).
    Linux,
}

/// What this generation carries for others, and where it stands in the kexec chain.
pub struct Peer {
    /// Blocks and clients carried into the next handover.
    pub carry: CarryList,
    /// Handovers since the last cold boot, this boot's included.
    pub kexec_count: u32,
}

/// `baton.handover-format=auto|baton|linux` (parsed by `board::cmdline`): the format for
/// the next image, `None` for auto (baton's if the next image carries baton's build stamp,
/// Linux's otherwise); a refused value names itself.
pub fn format_asked(arg: &Arg<'_, HandoverFormat>) -> Result<Option<OutFormat>, String> {
    match arg.get().map_err(|e| e.to_string())? {
        None | Some(HandoverFormat::Auto) => Ok(None),
        Some(HandoverFormat::Baton) => Ok(Some(OutFormat::Baton)),
        Some(HandoverFormat::Linux) => Ok(Some(OutFormat::Linux)),
    }
}

/// `baton.kho-test=<size>` (parsed by `board::cmdline`, non-zero): author a `kho-test-v1`
/// client of that many bytes.
pub fn kho_test_asked(arg: &Arg<'_, u64>) -> Result<Option<u64>, String> {
    arg.get().map_err(|e| e.to_string())
}

/// The format for the next image: asked, or following its stamp.
pub fn out_format(asked: Option<OutFormat>, next_is_baton: bool) -> OutFormat {
    asked.unwrap_or(if next_is_baton {
        OutFormat::Baton
    } else {
        OutFormat::Linux
    })
}

/// The release string this image writes into `kexec-metadata`.
fn release() -> String {
    format!("baton-{}", env!("CARGO_PKG_VERSION"))
}

/// Takes what the workload must not see out of the incoming handover: for a Linux handover,
/// everything (the workload starts cold); for a baton one, what its `baton-carry` list
/// names. Carried blocks and clients go into `out` unchanged. `generation` is the chain's.
/// `own_names` are the client names this image's workload writes: a Linux-format handover
/// from an earlier baton image holds them too, and they are not carried (their blocks are).
pub fn receive(
    inc: Option<Incoming>,
    fa: &mut FrameAllocator<'_>,
    mem: &IdentityMem,
    out: &mut Kho<&IdentityMem>,
    generation: u32,
    own_names: &[&str],
) -> Result<(Option<Incoming>, Peer), String> {
    let mut peer = Peer {
        carry: CarryList::default(),
        kexec_count: generation,
    };
    let Some(mut inc) = inc else {
        return Ok((None, peer));
    };
    match inc.format() {
        AbiVersion::LinuxV4 => {
            receive_linux(&mut inc, fa, mem, out, &mut peer, own_names)?;
            let pages = inc
                .finish(fa)
                .map_err(|e| format!("releasing Linux's tree pages: {e}"))?;
            info!("peer: Linux's handover carried; {pages} tree pages released; the workload starts cold");
            Ok((None, peer))
        }
        AbiVersion::V1 | AbiVersion::V2 => {
            if inc.client(CARRY_CLIENT).is_some() {
                receive_carry_list(&mut inc, fa, mem, out, &mut peer)?;
            }
            Ok((Some(inc), peer))
        }
    }
}

/// Logs each client of a handover: name, sub-FDT compatible, blob blocks and bytes.
fn log_clients(inc: &Incoming, mem: &IdentityMem) {
    for c in inc.clients() {
        let compat = kho::read_bytes(mem, c.phys, c.size.min(4096) as usize)
            .and_then(|b| sub_fdt_compatible(&b))
            .map_or(String::from("(not an FDT)"), |s| {
                format!("compatible \"{s}\"")
            });
        let blocks = inc.blocks_covering(c.phys, c.size).unwrap_or(0);
        info!(
            "peer: client {} at {:#x}, {} bytes in {blocks} blocks, {}",
            c.name, c.phys, c.size, compat
        );
    }
}

/// The first `compatible` of a blob that starts like an FDT.
fn sub_fdt_compatible(b: &[u8]) -> Option<String> {
    let total = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    let fdt = kho::Fdt::parse(b.get(..total)?).ok()?;
    let c = fdt.root().prop("compatible")?;
    let first = c.split(|&x| x == 0).next()?;
    core::str::from_utf8(first).ok().map(String::from)
}

/// Verifies a `kho_test` client in the incoming handover, if there is one, and says so.
fn verify_kho_test(inc: &Incoming, mem: &IdentityMem) {
    let Some((phys, size)) = inc.client(KHO_TEST_NODE) else {
        return;
    };
    match linux::verify_kho_test(mem, phys, size, &|p, o| inc.has_block(p, o)) {
        Ok(s) => info!(
            "kho-test: {} folios, {} bytes, csum {:#010x} ok",
            s.folios, s.bytes, s.csum
        ),
        Err(e) => error!("kho-test: verification FAILED: {e}"),
    }
}

fn receive_linux(
    inc: &mut Incoming,
    fa: &mut FrameAllocator<'_>,
    mem: &IdentityMem,
    out: &mut Kho<&IdentityMem>,
    peer: &mut Peer,
    own_names: &[&str],
) -> Result<(), String> {
    log_clients(inc, mem);
    verify_kho_test(inc, mem);
    let f = inc.kho_fdt();
    inc.release_range(fa, f.start.0, f.size())
        .map_err(|e| format!("releasing Linux's KHO FDT page: {e}"))?;
    peer.kexec_count = 1;
    if let Some((phys, size)) = inc.client(KEXEC_METADATA) {
        match kho::read_bytes(mem, phys, size.min(4096) as usize)
            .ok_or_else(|| String::from("unreadable"))
            .and_then(|b| KexecMetadata::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => {
                info!("peer: kexec from {} (count {})", m.release, m.count);
                peer.kexec_count = m.count;
            }
            Err(e) => warn!("peer: kexec-metadata at {phys:#x} ignored: {e}"),
        }
        inc.release_range(fa, phys, size)
            .map_err(|e| format!("releasing kexec-metadata: {e}"))?;
    }
    let (blocks, pages) = inc
        .carry_unclaimed(fa, out)
        .map_err(|e| format!("carrying Linux's blocks: {e}"))?;
    for c in inc.clients().to_vec() {
        if c.name == KEXEC_METADATA {
            continue;
        }
        if own_names.contains(&c.name.as_str()) || c.name == CARRY_CLIENT {
            warn!(
                "peer: client {} not carried (this image writes that name); its blocks are",
                c.name
            );
            continue;
        }
        out.add_client(&c.name, c.phys, c.size)
            .map_err(|e| format!("carrying client {}: {e}", c.name))?;
        peer.carry.clients.push(c.name.clone());
    }
    out.blocks()
        .map_err(|e| format!("listing carried blocks: {e}"))?
        .into_iter()
        .for_each(|b| peer.carry.blocks.push(b));
    info!(
        "peer: carrying {blocks} blocks ({pages} pages) and {} clients of Linux's handover",
        peer.carry.clients.len()
    );
    Ok(())
}

fn receive_carry_list(
    inc: &mut Incoming,
    fa: &mut FrameAllocator<'_>,
    mem: &IdentityMem,
    out: &mut Kho<&IdentityMem>,
    peer: &mut Peer,
) -> Result<(), String> {
    let Some((phys, size)) = inc.client(CARRY_CLIENT) else {
        return Ok(());
    };
    if size > MAX_CARRY_BLOB {
        return Err(format!("{CARRY_CLIENT} blob at {phys:#x} is {size} bytes"));
    }
    let bytes = kho::read_bytes(mem, phys, size as usize)
        .ok_or_else(|| format!("{CARRY_CLIENT} blob at {phys:#x} unreadable"))?;
    let (list, count) = CarryList::decode(&bytes).map_err(|e| e.to_string())?;
    inc.release_range(fa, phys, size)
        .map_err(|e| format!("releasing the {CARRY_CLIENT} blob: {e}"))?;
    verify_kho_test(inc, mem);
    for &(p, o, t) in &list.blocks {
        let b = inc
            .carry_block(fa, out, p)
            .map_err(|e| format!("carrying {p:#x}: {e}"))?;
        if (b.order, b.kind) != (o, t) {
            return Err(format!(
                "carried block {p:#x} is order {} {} in the handover, order {o} {t} in the list",
                b.order, b.kind
            ));
        }
    }
    for name in &list.clients {
        let (cp, cs) = inc
            .client(name)
            .ok_or_else(|| format!("carried client {name} missing from the handover"))?;
        out.add_client(name, cp, cs)
            .map_err(|e| format!("carrying client {name}: {e}"))?;
    }
    info!(
        "peer: carrying {} blocks and {} clients for an earlier image (kexec count {count})",
        list.blocks.len(),
        list.clients.len()
    );
    peer.kexec_count = count;
    peer.carry = list;
    Ok(())
}

/// Before finalize: authors the `kho-test-v1` client if asked (and none is carried yet),
/// and for a baton next image writes the carry list into a preserved blob of its own.
pub fn before_finalize(
    peer: &mut Peer,
    fa: &mut FrameAllocator<'_>,
    mem: &IdentityMem,
    out: &mut Kho<&IdentityMem>,
    format: OutFormat,
    kho_test: Option<u64>,
    seed: u64,
) -> Result<(), String> {
    if let Some(size) = kho_test {
        if !peer.carry.clients.iter().any(|c| c == KHO_TEST_NODE) {
            let mut state = seed ^ 0x6b68_6f2d_7465_7374;
            let mut rand = || {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            };
            let before: BTreeSet<_> = out
                .blocks()
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
            let s = linux::author_kho_test(out, fa, mem, size, &mut rand)
                .map_err(|e| format!("authoring kho-test: {e}"))?;
            let after = out.blocks().map_err(|e| e.to_string())?;
            for b in after {
                if !before.contains(&b) {
                    peer.carry.blocks.push(b);
                }
            }
            peer.carry.clients.push(String::from(KHO_TEST_NODE));
            info!(
                "kho-test: authored {} folios, {} bytes, csum {:#010x}",
                s.folios, s.bytes, s.csum
            );
        }
    }
    if format == OutFormat::Baton && !peer.carry.is_empty() {
        let blob = peer.carry.encode(peer.kexec_count.saturating_add(1));
        let order = (blob.len() as u64)
            .div_ceil(PAGE_SIZE)
            .next_power_of_two()
            .trailing_zeros();
        let pfn = fa
            .alloc_pages(order)
            .map_err(|e| format!("{CARRY_CLIENT} blob: {e}"))?;
        let at = pfn.phys().0;
        if !kho::write_bytes(mem, at, &blob) {
            return Err(format!("{CARRY_CLIENT} blob at {at:#x} not writable"));
        }
        out.preserve_pages(fa, pfn, 1 << order)
            .map_err(|e| format!("{CARRY_CLIENT} blob: {e}"))?;
        out.add_client(CARRY_CLIENT, at, blob.len() as u64)
            .map_err(|e| format!("{CARRY_CLIENT} client: {e}"))?;
    }
    Ok(())
}

/// Finalizes in the next image's format.
pub fn finalize(
    peer: &Peer,
    fa: &mut FrameAllocator<'_>,
    out: &mut Kho<&IdentityMem>,
    format: OutFormat,
) -> Result<Handover, kho::KhoError> {
    match format {
        OutFormat::Baton => out.finalize(fa),
        OutFormat::Linux => out.finalize_linux(
            fa,
            &KexecMetadata {
                release: release(),
                count: peer.kexec_count.saturating_add(1),
            },
        ),
    }
}
