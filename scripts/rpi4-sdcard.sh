#!/bin/sh
# Lays out what a Raspberry Pi 4 boot partition needs from baton: kernel8.img (the Image),
# config.txt and a README.txt naming the firmware files that go beside them.
#   scripts/rpi4-sdcard.sh [IMAGE] [OUTDIR]     (defaults: build/Image build/rpi4-sdcard)
# Only writes those three files into OUTDIR; anything else there (firmware files the user
# copied in) is left alone.
set -eu

IMAGE=${1:-build/Image}
OUTDIR=${2:-build/rpi4-sdcard}

die() {
    echo "rpi4-sdcard: $*" >&2
    exit 1
}

[ -f "$IMAGE" ] || die "no Image at $IMAGE (run make first)"
[ -r "$IMAGE" ] || die "$IMAGE is not readable"
size=$(wc -c <"$IMAGE" | tr -d ' ')
[ "$size" -ge 64 ] || die "$IMAGE is $size bytes, shorter than the 64-byte arm64 Image header"
# arm64 Image header (Linux Documentation/arch/arm64/booting.rst): magic "ARM\x64" at
# offset 56. Anything else (an ELF, a 32-bit zImage, a truncated copy) would not boot.
magic=$(od -An -tx1 -j56 -N4 "$IMAGE" | tr -d ' \n')
[ "$magic" = "41524d64" ] || die "$IMAGE is not an arm64 Image (bytes 56..59 are $magic, want 41524d64 = \"ARM\\x64\")"

if [ -e "$OUTDIR" ] && [ ! -d "$OUTDIR" ]; then
    die "$OUTDIR exists and is not a directory"
fi
mkdir -p "$OUTDIR"

cp "$IMAGE" "$OUTDIR/kernel8.img"

cat >"$OUTDIR/config.txt" <<'EOF'
# baton on a Raspberry Pi 4 Model B (written by scripts/rpi4-sdcard.sh).
# The firmware (start4.elf) reads this file; every line says why it is here.

# Start the ARM cores in AArch64 state and load a 64-bit kernel. The firmware's stub
# enters it on core 0 at EL2 with x0 = the device tree it loaded and filled in; cores 1-3
# wait in the firmware's spin table in page 0, which baton never releases.
arm_64bit=1

# Turn the serial console on: the firmware enables its primary UART on GPIO14/15 and keeps
# the clock that UART depends on fixed. baton then puts GPIO14/15 on the PL011 itself
# (ALT0, pulls off) and programs it for 115200 8N1 from its 48 MHz clock.
enable_uart=1

# The file to load. kernel8.img is already the default with arm_64bit=1; naming it keeps
# the choice explicit.
kernel=kernel8.img

# Keep the VideoCore's share of the low GiB at 64 MiB, so the ARM owns 0..0x3c000000: the
# same split as QEMU raspi4b, and exactly the RAM baton assumes when it boots without a
# device tree. (With bcm2711-rpi-4-b.dtb present baton follows the firmware's /memory,
# whatever the split. The Pi 4 default of 76 MiB would put VideoCore memory at
# 0x3b400000, inside the no-device-tree default.)
gpu_mem=64

# Not set, on purpose:
# - kernel_address: the firmware loads 64-bit kernels at 0x200000 by default, and the
#   Image is position independent (text_offset 0, "anywhere" flag): it relocates itself
#   wherever it lands on a 2 MiB boundary. Firmware old enough to load at 0x80000 (not
#   2 MiB aligned) should be updated; failing that, uncomment:
#kernel_address=0x200000
# - disable_commandline_tags: it stops the firmware writing ATAGs at 0x100. That is in
#   page 0, which baton keeps reserved (spin table) and never allocates.
# - os_check=0: the compatible-device-tree check it turns off is a Raspberry Pi 5
#   firmware feature.
# - dtoverlay=disable-bt: baton does not use Bluetooth and takes GPIO14/15 for the PL011
#   itself; the overlay matters to Linux (and needs overlays/disable-bt.dtbo).
EOF

# cmdline.txt: the firmware puts it into /chosen/bootargs (after words of its own, which
# baton ignores). baton.generations= turns on the handover chain: each generation restores
# and verifies what the previous one preserved, then enters the next image.
GENERATIONS=${GENERATIONS:-20}
echo "baton.generations=$GENERATIONS baton.seed=1 loglevel=info" >"$OUTDIR/cmdline.txt"

cat >"$OUTDIR/README.txt" <<'EOF'
baton on a Raspberry Pi 4 Model B: what goes on the SD card
============================================================

This folder holds kernel8.img (baton's arm64 Image), config.txt and cmdline.txt (the
bootargs: a 20-generation handover chain). Copy all three into the
FAT32 boot partition of a micro-SD card (its first partition), next to these firmware files from the boot/ folder of the Raspberry Pi firmware
repository, https://github.com/raspberrypi/firmware/tree/master/boot :

  start4.elf            the VideoCore firmware of the Pi 4: reads config.txt, loads the
                        device tree and kernel8.img, starts the ARM cores
  fixup4.dat            its memory-layout companion; take it from the same commit as
                        start4.elf (a mismatched pair does not boot)
  bcm2711-rpi-4-b.dtb   the Pi 4 Model B device tree; the firmware fills in /memory and
                        /chosen and hands it to baton in x0

A Raspberry Pi OS boot partition already has all three (then replace its config.txt with
this one, or merge the lines). bootcode.bin is not needed: a Pi 4 boots from its EEPROM.
Linux's own bcm2711-rpi-4-b.dtb works as well. Without any .dtb baton still boots, says
"no FDT at x0 ... using the default board (rpi4)" and uses only 0..0x3c000000 as RAM.

Serial console
--------------
Use a 3.3 V (TTL level) USB-serial adapter. Never RS-232 levels, never a 5 V adapter:
the Pi's GPIOs are 3.3 V only. Pins 6, 8 and 10 are the 3rd, 4th and 5th pins of the
40-pin header's outer row, counted from the end farthest from the USB ports:

  Pi pin 6    GND                         -> adapter GND
  Pi pin 8    GPIO14, TXD (Pi sends)      -> adapter RX
  Pi pin 10   GPIO15, RXD (Pi receives)   -> adapter TX

Leave the adapter's VCC/5V pin unconnected; power the Pi from its USB-C supply.
On the host: 115200 baud, 8 data bits, no parity, 1 stop bit, no flow control, e.g.
  picocom -b 115200 /dev/ttyUSB0        or        screen /dev/ttyUSB0 115200
Open the terminal first, then power the Pi.

What a good run prints
----------------------
Timestamps, sizes and addresses vary; the lines to look for (in this order):

  [ ... ] INFO  baton: baton <version> on rpi4 (<model from the device tree>), entered at EL2, running at EL1
  [ ... ] INFO  baton: loaded at 0x200000, image ... bytes (file + BSS + stacks), ... relocations applied
  [ ... ] INFO  baton: relocation probe ok: ...
  [ ... ] INFO  baton: BATON-BOOT board=rpi4 el=2 load=0x200000 reloc_ok=1 checksum=...
  [ ... ] INFO  baton: console: pl011 at 0xfe201000, 48000000 Hz clock, 115200 8N1
  [ ... ] INFO  baton: psci: none, timer: 54000000 Hz
  [ ... ] INFO  baton: memory: [...]        (one line per RAM range: below 1 GiB, and from
                                              0x40000000 up on boards with more than 1 GiB)
  [ ... ] INFO  baton: mmu on: identity map, ...
  [ ... ] INFO  baton: reserved: [0x000000000-0x000000fff]   (the spin-table page)
  [ ... ] INFO  baton: frames: ..., then heap: ... and free memory: ...
  [ ... ] INFO  baton: baton: ready (... s since the counter started)
  [ ... ] INFO  baton: chain: generation 0 of 20, next image: own pristine copy at ...
  [ ... ] INFO  baton: GEN n=0 cold=1 ... leaked=0 bad_pages=0 handover_us=0
  [ ... ] INFO  baton: handover: next image (own pristine copy) at 0x...; ... entering at EL2
  ... the same banner again, then GEN n=1 cold=0 restored=... leaked=0 ..., and so on to
  [ ... ] INFO  baton: SOAK generations=20 cold=1 verified_bytes=... leaked=0 status=ok
  A "FAIL gen=N check=... detail=..." line names the generation and the check that failed.

The timestamps count from when the ARM timer started, so they include the firmware's own
boot time. There is no semihosting on a real board, so at the end baton powers the SoC
off through the PM watchdog ("halt"): the board stays off until it is power-cycled.
Troubleshooting: README.md of the baton repository ("Raspberry Pi 4") and
docs/hardware.md.
EOF

echo "rpi4-sdcard: $OUTDIR/kernel8.img ($size bytes), $OUTDIR/config.txt, $OUTDIR/cmdline.txt, $OUTDIR/README.txt"
echo "rpi4-sdcard: copy them with start4.elf, fixup4.dat and bcm2711-rpi-4-b.dtb to the FAT boot partition (see $OUTDIR/README.txt)"
