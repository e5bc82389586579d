#!/usr/bin/env python3
"""Linux's KHO and baton's handover side by side (`make bench-linux`; docs/performance.md,
"baton and Linux side by side").

Linux side, per preserved size: the Linux peer (scripts/linux-peer.sh) boots on QEMU virt
(cortex-a72, -smp 1, -icount shift=0) with test_kho.max_mem=<size>; test_kho preserves folios
of random orders, the peer init kexecs /kernel (the same Image) and boot 2 restores them.
tests/linux-peer/icount-plugin counts the instructions executed up to named kernel functions
(addresses from the peer's System.map; the peer has no KASLR). Measured in boot 2:
  reserve walk    entry of kho_memory_init -> entry of memblock_free_all
  restore_folio   the sum of every kho_restore_folio call, entry -> its ret
  kexec -> buddy  entry of kernel_kexec (boot 1) -> return of memblock_free_all (boot 2)
and, as Linux's empty baseline, boot 1's own kho_memory_init -> memblock_free_all.

baton side, per size: scripts/bench-handover.py's mixed<size> set and its default set at the
same RAM (generation n=2 of `baton.generations=4 baton.seed=1`, as `make bench-handover`
measures: a generation that both receives a handover and hands one over); the interval is
handover_us.

Prints one BENCH-LINUX / BENCH line per case, then one Markdown table: per side blocks,
pages, interval, per-block and per-page figures, and Linux/baton per page (the headline).

  scripts/bench-linux.py [--image build/Image] [--peer DIR] [--plugin SO] [--sizes 64M,512M,2G]
                         [--ram 4G] [--qemu qemu-system-aarch64] [--timeout 900] [--out FILE]
                         [--skip-baton] [--skip-linux] [--verbose]
  scripts/bench-linux.py --self-test

Exit status: 0 if every case passed, 1 if any failed (the others still run), 2 on bad options.
Python 3 standard library only; runs one QEMU at a time.
"""
import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def load_bench_handover():
    """scripts/bench-handover.py as a module (its file name is not an identifier)."""
    spec = importlib.util.spec_from_file_location("bench_handover",
                                                  os.path.join(HERE, "bench-handover.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bh = load_bench_handover()

PAGE = 4096
DEFAULT_SIZES = "64M,512M,2G"
DEFAULT_RAM = "4G"
# Linux's command lines: boot 1 preserves (test_kho.max_mem), boot 2 restores.
LINUX_ARGS = "console=ttyAMA0 kho=on panic=-1"
TEST_KHO_OK = "test_kho: KHO restore succeeded"
# The functions the plugin watches: name -> whether its `ret`s are watched too.
SYMBOLS = {"kho_memory_init": False, "memblock_free_all": True, "kho_restore_folio": True,
           "kernel_kexec": False}
PLUGIN_LINE = re.compile(r"^icount-plugin: (\S+) (\d+) (\d+)$")


# ---- the initramfs (newc cpio) ------------------------------------------------------------

def cpio_newc(files):
    """A newc archive of /dev/console plus files: a list of (name, bytes, executable)."""
    out = bytearray()
    entries = [("dev", 0o040755, b"", (0, 0)), ("dev/console", 0o020600, b"", (5, 1))]
    entries += [(n, (0o100755 if x else 0o100644), d, (0, 0)) for n, d, x in files]
    entries.append(("TRAILER!!!", 0, b"", (0, 0)))

    def pad():
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, 1):
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        out += b"070701" + "".join(f"{f:08X}" for f in fields).encode()
        out += name.encode() + b"\0"
        pad()
        out += data
        pad()
    return bytes(out)


# ---- System.map and the plugin's output ---------------------------------------------------

def text_symbols(system_map):
    """name -> (start, end) of every text symbol; end is the next higher text address."""
    syms = []
    for line in system_map.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            try:
                syms.append((int(parts[0], 16), parts[2]))
            except ValueError:
                continue
    addrs = sorted({a for a, _ in syms})
    nxt = {a: b for a, b in zip(addrs, addrs[1:])}
    return {name: (a, nxt.get(a, a + 4)) for a, name in syms}


def plugin_args(symbols):
    """The plugin's `at=` / `fn=` arguments for SYMBOLS; raises KeyError for a missing one."""
    args = []
    for name, rets in SYMBOLS.items():
        start, end = symbols[name]
        args.append(f"fn={name}:{start:x}:{end:x}" if rets else f"at={name}:{start:x}")
    return args


def plugin_events(lines):
    """name -> [count of hit 1, hit 2, ...] from the plugin's lines."""
    events = {}
    for line in lines:
        m = PLUGIN_LINE.match(line.strip())
        if m:
            events.setdefault(m.group(1), []).append(int(m.group(3)))
    return events


def linux_figures(events):
    """Boot 2's figures in instructions, or raises ValueError naming what is missing."""
    def hits(name, n):
        got = events.get(name, [])
        if len(got) != n:
            raise ValueError(f"{name}: {len(got)} hits, expected {n}")
        return got

    init, free, free_ret = (hits("kho_memory_init", 2), hits("memblock_free_all", 2),
                            hits("memblock_free_all.ret", 2))
    kexec = hits("kernel_kexec", 1)
    entries, rets = events.get("kho_restore_folio", []), events.get("kho_restore_folio.ret", [])
    if not entries or len(entries) != len(rets):
        raise ValueError(f"kho_restore_folio: {len(entries)} calls, {len(rets)} returns")
    calls = list(zip(entries, rets))
    for (e, r), nxt in zip(calls, entries[1:] + [None]):
        if not e < r or (nxt is not None and r > nxt):
            raise ValueError("kho_restore_folio calls nest or overlap")
    if not entries[0] > free[1]:
        raise ValueError("kho_restore_folio ran before boot 2's memblock_free_all")
    return {"walk": free[1] - init[1], "walk_empty": free[0] - init[0],
            "blocks": len(calls), "restore": sum(r - e for e, r in calls),
            "kexec_to_buddy": free_ret[1] - kexec[0]}


# ---- running ------------------------------------------------------------------------------

def linux_case(a, size, symbols, scratch):
    """Runs the Linux peer at one size. Returns (figures or None, reasons)."""
    max_mem = bh.ram_bytes(size)
    image = os.path.join(a.peer, "Image")
    with open(os.path.join(a.peer, "init"), "rb") as f:
        init = f.read()
    with open(image, "rb") as f:
        kernel = f.read()
    cpio = os.path.join(scratch, f"linux-linux-{size}.cpio")
    with open(cpio, "wb") as f:
        f.write(cpio_newc([("init", init, True), ("kernel", kernel, False),
                           ("next.cmdline", LINUX_ARGS.encode(), False)]))
    plugin = ",".join([a.plugin] + plugin_args(symbols))
    # sleep=off and -seed fix test_kho's random folio orders: idle time and the DT's rng-seed
    # would vary them from run to run. `-d plugin` lets the plugin's lines through.
    cmd = [a.qemu, "-M", "virt", "-cpu", "cortex-a72", "-smp", "1", "-m", a.ram,
           "-icount", "shift=0,sleep=off", "-seed", str(bh.SEED), "-display", "none",
           "-monitor", "none", "-serial", "stdio", "-no-reboot", "-kernel", image,
           "-initrd", cpio, "-plugin", plugin, "-d", "plugin",
           "-append", f"{LINUX_ARGS} test_kho.max_mem={max_mem}"]
    print(f"# linux {size}: test_kho.max_mem={max_mem}, -m {a.ram}", file=sys.stderr, flush=True)
    lines, rc, timed_out = bh.run_qemu(cmd, a.timeout, a.verbose)
    reasons = []
    if timed_out:
        reasons.append(f"timed out after {a.timeout:g} s")
    if not any(TEST_KHO_OK in line for line in lines):
        reasons.append(f"no {TEST_KHO_OK!r}")
    try:
        figures = linux_figures(plugin_events(lines))
    except ValueError as e:
        reasons.append(str(e))
        figures = None
    if reasons:
        print(f"FAILED linux size={size}: " + "; ".join(reasons))
        for line in lines[-bh.TAIL_LINES:]:
            print("    " + line)
        return None, reasons
    figures["pages"] = max_mem // PAGE
    print(f"BENCH-LINUX size={size} " + " ".join(f"{k}={v}" for k, v in figures.items()))
    return figures, []


def scaled_bytes(bootargs):
    """The bytes of `baton.preserve=` in bootargs (0 without it)."""
    m = re.search(r"\bbaton\.preserve=(\S+)", bootargs)
    return bh.ram_bytes(m.group(1)) if m else 0


# The baton chain: the same length as `make bench-handover`'s, so that the measured
# generation (bh.measured_generation) both receives a handover and hands one over.
GENERATIONS = 4


def baton_case(a, set_name):
    """Runs one bench-handover set at --ram. Returns figures (with `pages`) or None."""
    bootargs = f"baton.generations={GENERATIONS} baton.seed={bh.SEED} {bh.SETS[set_name][0]}".strip()
    print(f"# baton {set_name}: -append \"{bootargs}\"", file=sys.stderr, flush=True)
    lines, rc, timed_out = bh.run_qemu(bh.qemu_command(a.qemu, a.image, a.ram, bootargs),
                                       a.timeout, a.verbose)
    figures, reasons, _ = bh.evaluate(lines, rc, a.timeout if timed_out else None, GENERATIONS)
    gens = {}
    for line in lines:
        rec = bh.parse_record(line)
        if rec and rec[0] == "GEN":
            gens[rec[1].get("n")] = rec[1]
    # Pages handed into the measured generation: the scaled set (baton.preserve=, refilled
    # to its size every generation) plus the workload's own entries that the generation
    # before it preserved (preserved_pages).
    before = str(bh.measured_generation(GENERATIONS) - 1)
    pages = bh.as_int(gens.get(before, {}).get("preserved_pages"))
    if figures is not None and pages is None:
        reasons.append(f"no preserved_pages in GEN n={before}")
        figures = None
    elif pages is not None:
        pages += scaled_bytes(bh.SETS[set_name][0]) // PAGE
    if figures is None:
        print(f"FAILED baton set={set_name}: " + "; ".join(reasons))
        return None
    out = {"blocks": bh.as_int(figures["blocks"]), "pages": pages,
           "blackout": bh.as_int(figures["handover_us"]) * 1000}
    print(f"BENCH ram={a.ram} set={set_name} blocks={out['blocks']} pages={pages} "
          f"handover_us={figures['handover_us']}")
    return out


# ---- the report ---------------------------------------------------------------------------

def ns(instructions, n):
    return f"{instructions / n:.0f}" if n else "-"


def ratio(linux, baton):
    return f"{linux / baton:.2f}" if baton else "-"


def report(rows, baton_empty):
    """The Markdown table; rows: (size, linux figures or None, baton figures or None)."""
    out = ["| preserved | Linux blocks | Linux pages | Linux reserve walk µs | ns/block | "
           "ns/page | baton blocks | baton pages | baton blackout µs | ns/block | ns/page | "
           "**Linux/baton per page** | same, each over its empty handover |",
           "|---|" + "---:|" * 12]
    notes = []
    for size, lx, bt in rows:
        cells = [size]
        if lx:
            cells += [f"{lx['blocks']:,}", f"{lx['pages']:,}", f"{lx['walk'] / 1000:.1f}",
                      ns(lx["walk"], lx["blocks"]), ns(lx["walk"], lx["pages"])]
        else:
            cells += ["failed"] + ["-"] * 4
        if bt:
            cells += [f"{bt['blocks']:,}", f"{bt['pages']:,}", f"{bt['blackout'] / 1000:.0f}",
                      ns(bt["blackout"], bt["blocks"]), ns(bt["blackout"], bt["pages"])]
        else:
            cells += ["failed"] + ["-"] * 4
        if lx and bt:
            cells.append("**" + ratio(lx["walk"] / lx["pages"], bt["blackout"] / bt["pages"])
                         + "**")
            if baton_empty:
                lx_over = (lx["walk"] - lx["walk_empty"]) / lx["pages"]
                bt_over = ((bt["blackout"] - baton_empty["blackout"])
                           / (bt["pages"] - baton_empty["pages"]))
                cells.append(ratio(lx_over, bt_over))
            else:
                cells.append("-")
        else:
            cells += ["-", "-"]
        out.append("| " + " | ".join(cells) + " |")
        if lx:
            notes.append(f"- Linux {size}: kho_restore_folio {lx['blocks']:,} calls, "
                         f"{lx['restore'] / 1000:.1f} µs ({ns(lx['restore'], lx['blocks'])} "
                         f"ns/call); kexec -> buddy live {lx['kexec_to_buddy'] / 1e6:.2f} ms; "
                         f"empty reserve walk (boot 1) {lx['walk_empty'] / 1000:.1f} µs")
    if baton_empty:
        notes.append(f"- baton default set (the empty handover): {baton_empty['blocks']} "
                     f"blocks, {baton_empty['pages']} pages, blackout "
                     f"{baton_empty['blackout'] / 1000:.0f} µs")
    return out + [""] + notes


def main(argv):
    ap = argparse.ArgumentParser(description="Linux's KHO and baton's handover side by side "
                                             "under QEMU -icount shift=0 (docs/performance.md).")
    ap.add_argument("--image", default="build/Image", help="baton's Image (build/Image)")
    ap.add_argument("--peer", help="the Linux peer's directory (default: scripts/linux-peer.sh)")
    ap.add_argument("--plugin", default="target/icount-plugin/release/libicount_plugin.so",
                    help="the icount plugin (make bench-linux builds it)")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"preserved sizes ({DEFAULT_SIZES})")
    ap.add_argument("--ram", default=DEFAULT_RAM, help=f"guest RAM of every case ({DEFAULT_RAM})")
    ap.add_argument("--qemu", default="qemu-system-aarch64", help="the QEMU binary")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per QEMU run (900)")
    ap.add_argument("--out", help="also write the table as Markdown to this file")
    ap.add_argument("--skip-baton", action="store_true", help="Linux side only")
    ap.add_argument("--skip-linux", action="store_true", help="baton side only")
    ap.add_argument("--verbose", "-v", action="store_true", help="echo the consoles to stderr")
    ap.add_argument("--self-test", action="store_true", help="test the parsers, no QEMU")
    a = ap.parse_args(argv)
    if a.self_test:
        prog = unittest.main(argv=[sys.argv[0]], exit=False, verbosity=2)
        return 0 if prog.result.wasSuccessful() else 1
    sizes = [s for s in a.sizes.split(",") if s]
    for s in sizes + [a.ram]:
        try:
            bh.ram_bytes(s)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
    for s in sizes:
        if not a.skip_baton and f"mixed{s}" not in bh.SETS:
            ap.error(f"no baton set mixed{s} in scripts/bench-handover.py")
    symbols = None
    if not a.skip_linux:
        if a.peer is None:
            peer = subprocess.run([os.path.join(HERE, "linux-peer.sh")], stdout=subprocess.PIPE,
                                  text=True, check=False)
            if peer.returncode != 0 or not peer.stdout.strip():
                print("bench-linux: scripts/linux-peer.sh failed", file=sys.stderr)
                return 1
            a.peer = peer.stdout.strip().splitlines()[-1]
        for need in ("Image", "init", "System.map"):
            if not os.path.isfile(os.path.join(a.peer, need)):
                print(f"bench-linux: no {need} in {a.peer} (run scripts/linux-peer.sh)",
                      file=sys.stderr)
                return 1
        if not os.path.isfile(a.plugin):
            print(f"bench-linux: no plugin at {a.plugin} (make bench-linux builds it)",
                  file=sys.stderr)
            return 1
        with open(os.path.join(a.peer, "System.map"), encoding="utf-8") as f:
            symbols = text_symbols(f.read())
        missing = [s for s in SYMBOLS if s not in symbols]
        if missing:
            print(f"bench-linux: not in System.map: {', '.join(missing)}", file=sys.stderr)
            return 1
    if not a.skip_baton and not os.path.isfile(a.image):
        print(f"bench-linux: no Image at {a.image} (run make)", file=sys.stderr)
        return 1

    failed = False
    linux, baton = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-linux-") as scratch:
        for size in sizes if not a.skip_linux else []:
            linux[size], reasons = linux_case(a, size, symbols, scratch)
            failed |= bool(reasons)
            sys.stdout.flush()
    baton_empty = None
    if not a.skip_baton:
        baton_empty = baton_case(a, "default")
        failed |= baton_empty is None
        for size in sizes:
            baton[size] = baton_case(a, f"mixed{size}")
            failed |= baton[size] is None
            sys.stdout.flush()
    table = report([(s, linux.get(s), baton.get(s)) for s in sizes], baton_empty)
    header = (f"QEMU virt, cortex-a72, -smp 1, -m {a.ram}, -icount shift=0 (1 instruction = "
              "1 ns). Linux: boot 2's reserve walk, entry of kho_memory_init -> entry of "
              "memblock_free_all. baton: the blackout (handover_us of generation n=2), "
              "finalize -> every block restored with the allocator ready. Not the same work.")
    print()
    print("\n".join([header, ""] + table))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join([header, ""] + table) + "\n")
    return 1 if failed else 0


# ---- self-test (--self-test) --------------------------------------------------------------

class SelfTest(unittest.TestCase):
    def test_cpio_is_newc_with_padding_and_trailer(self):
        c = cpio_newc([("init", b"abc", True)])
        self.assertTrue(c.startswith(b"07070100000001000041ED"))
        self.assertEqual(len(c) % 4, 0)
        self.assertIn(b"00000003", c)  # init's size
        self.assertIn(b"000081ED", c)  # init's mode, executable
        self.assertIn(b"init\0\0abc\0", c)
        self.assertTrue(c.rstrip(b"\0").endswith(b"TRAILER!!!"))

    def test_text_symbols_end_at_the_next_text_symbol(self):
        m = ("ffff800080010000 T _text\nffff800080020000 t a\nffff800080020000 T a_alias\n"
             "ffff800080020040 T b\nffff800080030000 D data\nnot a line\n")
        s = text_symbols(m)
        self.assertEqual(s["a"], (0xffff800080020000, 0xffff800080020040))
        self.assertEqual(s["a_alias"], s["a"])
        self.assertNotIn("data", s)
        self.assertEqual(s["b"][1], 0xffff800080020044)

    def test_plugin_args(self):
        syms = {n: (0x10 * i, 0x10 * i + 8) for i, n in enumerate(SYMBOLS, 1)}
        self.assertEqual(plugin_args(syms), ["at=kho_memory_init:10",
                                             "fn=memblock_free_all:20:28",
                                             "fn=kho_restore_folio:30:38", "at=kernel_kexec:40"])

    def test_linux_figures_from_two_boots(self):
        lines = ["icount-plugin: kho_memory_init 1 100", "icount-plugin: memblock_free_all 1 150",
                 "icount-plugin: memblock_free_all.ret 1 170", "noise",
                 "icount-plugin: kernel_kexec 1 1000", "icount-plugin: kho_memory_init 2 2000",
                 "icount-plugin: memblock_free_all 2 2300",
                 "icount-plugin: memblock_free_all.ret 2 2400",
                 "icount-plugin: kho_restore_folio 1 3000",
                 "icount-plugin: kho_restore_folio.ret 1 3010",
                 "icount-plugin: kho_restore_folio 2 3100",
                 "icount-plugin: kho_restore_folio.ret 2 3105"]
        self.assertEqual(linux_figures(plugin_events(lines)),
                         {"walk": 300, "walk_empty": 50, "blocks": 2, "restore": 15,
                          "kexec_to_buddy": 1400})
        with self.assertRaisesRegex(ValueError, "kho_memory_init: 1 hits, expected 2"):
            linux_figures(plugin_events(lines[:1]))
        with self.assertRaisesRegex(ValueError, "1 returns"):
            linux_figures(plugin_events(lines[:-1]))

    def test_scaled_bytes_of_a_set(self):
        self.assertEqual(scaled_bytes(bh.SETS["mixed512M"][0]), 512 << 20)
        self.assertEqual(scaled_bytes(bh.SETS["default"][0]), 0)

    def test_report_ratio_is_per_page(self):
        lx = {"blocks": 10, "pages": 1000, "walk": 80000, "walk_empty": 0, "restore": 10,
              "kexec_to_buddy": 1}
        bt = {"blocks": 20, "pages": 1010, "blackout": 40400}
        empty = {"blocks": 10, "pages": 10, "blackout": 20400}
        out = report([("4M", lx, bt)], empty)
        self.assertEqual(out[2], "| 4M | 10 | 1,000 | 80.0 | 8000 | 80 | 20 | 1,010 | 40 | "
                                 "2020 | 40 | **2.00** | 4.00 |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
