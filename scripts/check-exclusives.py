#!/usr/bin/env python3
"""Usage: check-exclusives.py <disassembly>   (`make check-exclusives` runs it)

No load/store-exclusive may run before the MMU is on (docs/hardware.md, "Exclusives").
Checks `llvm-objdump -d --demangle --no-show-raw-insn baton`: (1) the only exclusives or
atomic read-modify-writes in the image are in EarlyRawMutex's CAS path, and (2) every branch
into it is preceded, on every path within its function, by a read of SCTLR_EL1 with no
call in between (the inlined M/C test of `EarlyRawMutex::lock`/`try_lock`). Exit status 1 if either fails."""
import re, sys
EXCL = re.compile(r'^(ld[a]?xr[bh]?|st[l]?xr[bh]?|ld[a]?xp|st[l]?xp|cas\w*|ld(add|clr|set|eor|smax|smin|umax|umin)\w*|swp\w*)$')
FN = re.compile(r'^([0-9a-f]+) <(.*)>:$')
INS = re.compile(r'^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$')
# LLVM may give a local copy a `.llvm.<n>` suffix, which the demangler prints as ` (.llvm.<n>)`.
CAS = re.compile(r'<arch::sync::EarlyRawMutex\$LT\$M\$GT\$::(try_)?lock_exclusive::h[0-9a-f]+'
                 r'( \(\.llvm\.\d+\))?>')
TGT = re.compile(r'\b0x([0-9a-f]+) <')
funcs, fn = {}, None
for line in open(sys.argv[1]):
    line = line.rstrip('\n')
    m = FN.match(line)
    if m:
        fn = f'{m.group(2)} @{m.group(1)[-6:]}'; funcs[fn] = []
        continue
    m = INS.match(line)
    if fn and m:
        funcs[fn].append((int(m.group(1), 16), m.group(2), m.group(3)))
bad = 0
with_excl = sorted(f for f, b in funcs.items() if any(EXCL.match(op) for _, op, _ in b))
print(f'functions holding an exclusive or atomic RMW: {len(with_excl)}')
for f in with_excl:
    print('   ', f)
    bad += not CAS.search('<' + f.rsplit(' @', 1)[0] + '>')
calls = callers = 0
for f, body in funcs.items():
    sites = [a for a, op, arg in body if op in ('bl', 'b') and CAS.search(arg)]
    if not sites or CAS.search('<' + f.rsplit(' @', 1)[0] + '>'):
        continue
    calls += len(sites); callers += 1
    idx = {a: i for i, (a, _, _) in enumerate(body)}
    preds = {i: [] for i in range(len(body))}
    for i, (a, op, arg) in enumerate(body):
        t = TGT.search(arg)
        if op == 'b' or op.startswith('b.') or op in ('cbz', 'cbnz', 'tbz', 'tbnz'):
            if t and int(t.group(1), 16) in idx:
                preds[idx[int(t.group(1), 16)]].append(i)
        if op not in ('b', 'ret', 'eret', 'br') and i + 1 < len(body):
            preds[i + 1].append(i)
    for site in sites:
        # Walk back from the branch: every path must meet an SCTLR_EL1 read before it meets
        # the function's entry, a call (a read before it may belong to another lock), or an
        # instruction with no known predecessor (a jump-table target).
        seen, todo = set(), list(preds[idx[site]])
        if not todo:
            todo = [None]
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            if i is None or i == 0:
                bad += 1; print(f'UNGUARDED: {f} at {site:#x} (reached from the entry)'); break
            a, op, arg = body[i]
            if op == 'mrs' and 'SCTLR_EL1' in arg:
                continue
            if op in ('bl', 'blr'):
                bad += 1; print(f'UNGUARDED: {f} at {site:#x} (call at {a:#x} since the last SCTLR read)'); break
            todo.extend(preds[i] or [None])
print(f'branches into the CAS path: {calls} in {callers} functions; '
      f'failures (unguarded or unknown): {bad}')
sys.exit(1 if bad else 0)
