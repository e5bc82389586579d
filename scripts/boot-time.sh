#!/bin/sh
# Time from starting QEMU (virt, EL1) to the banner line "baton: ready", measured on the
# host wall clock; prints each of N runs (default 5) and the median, in milliseconds.
#   scripts/boot-time.sh [IMAGE] [N]
set -eu
IMAGE=${1:-build/Image}
N=${2:-5}
QEMU=${QEMU:-qemu-system-aarch64}
[ -f "$IMAGE" ] || { echo "no Image at $IMAGE (run make)"; exit 1; }
times=""
i=0
while [ $i -lt "$N" ]; do
    t=$(python3 - "$QEMU" "$IMAGE" <<'PY'
import subprocess, sys, time
qemu, image = sys.argv[1], sys.argv[2]
start = time.monotonic()
p = subprocess.Popen([qemu, "-M", "virt", "-cpu", "cortex-a72", "-m", "128M", "-display", "none",
                      "-monitor", "none", "-serial", "stdio", "-semihosting", "-kernel", image],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
ms = None
for line in p.stdout:
    if b"baton: ready" in line:
        ms = (time.monotonic() - start) * 1000
        break
p.wait(timeout=30)
print(f"{ms:.1f}" if ms is not None else "nan")
PY
)
    echo "run $((i + 1)): ${t} ms"
    times="$times $t"
    i=$((i + 1))
done
echo "$times" | tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "median of %d: %.1f ms (QEMU start to \"baton: ready\")\n", NR, m}'
