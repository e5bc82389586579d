#!/bin/sh
# Dumps the guest memory of QEMU virt at the moment generation GEN of a handover chain
# enters arch::handover::jump_to_image (its handover is finalized, cleaned and complete):
# QEMU's gdbstub on loopback, halted at start; gdb-multiarch sets a breakpoint at the
# trampoline of the image that runs (gen 0 at 0x40200000; each next image where the
# previous one's x0 said), and at the GEN-th hit asks QEMU's monitor, through gdb, for
# `dump-guest-memory` (an ELF core with physical addresses). x1 there is the boot FDT.
#
# usage: scripts/dump-handover.sh IMAGE ELF GEN OUTDIR [extra bootargs]
# writes OUTDIR/handover-genGEN.elf, .elf.fdt (the boot FDT address, for make inspect),
# and console-genGEN.log (the guest's loglevel=debug console up to the jump).
set -eu
image=$1 elf=$2 gen=$3 out=$4
shift 4
extra="$*"
QEMU=${QEMU:-qemu-system-aarch64}
GDB=${GDB:-gdb-multiarch}
MEM=${MEM:-128M}
TIMEOUT=${DUMP_TIMEOUT:-120}
command -v "$GDB" >/dev/null || { echo "dump-handover: $GDB missing (make deps installs gdb-multiarch)"; exit 1; }
mkdir -p "$out"
dump=$out/handover-gen$gen.elf
log=$out/console-gen$gen.log
rm -f "$dump" "$dump.fdt" "$log"
# The trampoline's offset in the image: the ELF is linked at 0.
off=$(nm -C "$elf" | sed -n 's/^\([0-9a-f]*\) T arch::handover::jump_to_image$/0x\1/p')
[ -n "$off" ] || { echo "dump-handover: no arch::handover::jump_to_image in $elf"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

"$QEMU" -M virt -cpu cortex-a72 -m "$MEM" -display none -monitor none -serial "file:$log" \
    -semihosting -kernel "$image" -gdb "tcp:127.0.0.1:$port" -S \
    -append "baton.generations=$((gen + 2)) loglevel=debug $extra" &
qemu=$!
trap 'kill $qemu 2>/dev/null || true' EXIT INT TERM

cat > "$out/dump-gen$gen.gdb" <<GDB
set pagination off
set confirm off
set architecture aarch64
target remote 127.0.0.1:$port
python
load = 0x40200000
for g in range($gen + 1):
    gdb.Breakpoint("*%#x" % (load + $off), internal=True, temporary=True)
    gdb.execute("continue")
    entry = int(gdb.parse_and_eval("\$x0")) & (2**64 - 1)
    fdt = int(gdb.parse_and_eval("\$x1")) & (2**64 - 1)
    print("dump-handover: generation %d jumps to %#x with FDT %#x" % (g, entry, fdt))
    load = entry
open("$dump.fdt", "w").write("%#x\n" % fdt)
gdb.execute("monitor dump-guest-memory $dump")
end
kill
GDB
timeout "$TIMEOUT" "$GDB" -batch -nx -x "$out/dump-gen$gen.gdb" >"$out/gdb-gen$gen.log" 2>&1 || {
    echo "dump-handover: gdb failed, see $out/gdb-gen$gen.log and $log"; cat "$out/gdb-gen$gen.log"; exit 1; }
grep '^dump-handover:' "$out/gdb-gen$gen.log" || true
[ -s "$dump" ] || { echo "dump-handover: no dump written"; cat "$out/gdb-gen$gen.log"; exit 1; }
echo "dump-handover: $dump ($(stat -c %s "$dump") bytes), boot FDT $(cat "$dump.fdt")"
echo "  make inspect DUMP=$dump"
