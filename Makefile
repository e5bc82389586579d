# baton — the front door. `make help` lists the targets.
#
# The Image is built once (cargo + objcopy) into build/Image; every run/test target uses that
# file, so what is tested is exactly what boots.

CARGO    ?= cargo
QEMU     ?= qemu-system-aarch64
GDB      ?= gdb-multiarch
TARGET   := aarch64-unknown-none
PROFILE  ?= release
FEATURES ?=
ELF      := target/$(TARGET)/$(PROFILE)/baton
ELF_B    := target/image-b/$(TARGET)/$(PROFILE)/baton
IMAGE    := build/Image
IMAGE_B  := build/Image-max-order-8
# The previous release, whose handover format (`baton,kho-typed-v1`, docs/abi.md §9) this one
# must still read: the last commit before the format became v2, built from git (sources by
# `git archive`, its own target directory; built once per commit, then reused).
V1_COMMIT := c53e50319ea612fedb14a08474459d6028b52b95
V1_DIR   := target/image-v1
IMAGE_V1 := build/Image-v1-$(shell echo $(V1_COMMIT) | cut -c1-12)
# The build stamp: a small host tool that shares the stamp format with the kernel's check.
STAMP    := $(CARGO) run -q -p baton-image --bin stamp-image --
RPI4_DTB ?= ../shared/fixtures/dtb/bcm2711-rpi-4-b.dtb
APPEND   ?=
# The handover demo of `make run`: a short chain with its summary.
RUN_GENERATIONS ?= 5
# `make soak`: one QEMU process, the whole chain inside it, checked by the host runner.
GENERATIONS ?= 1000
SEED     ?=
BOARD    ?= virt
# `make soak` guest RAM (virt) and the scaled preserved set: PRESERVE=1G SHAPE=scatter|dense|mixed.
MEM      ?= 1G
PRESERVE ?=
SHAPE    ?=
SOAK_BOOTARGS = $(strip $(if $(PRESERVE),baton.preserve=$(PRESERVE)) $(if $(SHAPE),baton.shape=$(SHAPE)) $(APPEND))
# `make dump-handover GEN=1`: generation GEN's handover dumped as it jumps, in target/dump/.
GEN      ?= 1
# `make inspect DUMP=path [FDT=addr] [BASE=addr] [JSON=1]`: kho-inspect on a memory dump; FDT
# defaults to the address `make dump-handover` wrote next to the dump (<dump>.fdt).
DUMP     ?=
FDT      ?= $(if $(DUMP),$(shell cat $(DUMP).fdt 2>/dev/null))
BASE     ?=
JSON     ?=
# `make bench-handover`: runner options, e.g. BENCH_ARGS='--ram 1G --sets default'.
BENCH_ARGS ?=
# `make bench-linux`: scripts/bench-linux.py options, e.g. BENCH_LINUX_ARGS='--sizes 64M'.
BENCH_LINUX_ARGS ?=
# The QEMU TCG plugin bench-linux counts Linux's instructions with (its own crate, not in
# the workspace: tests/linux-peer/icount-plugin).
ICOUNT_PLUGIN_DIR := tests/linux-peer/icount-plugin
ICOUNT_PLUGIN := target/icount-plugin/release/libicount_plugin.so
HOST      = $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
OBJCOPY  ?= $(shell rustc --print sysroot 2>/dev/null)/lib/rustlib/$(HOST)/bin/llvm-objcopy
OBJDUMP  ?= $(dir $(OBJCOPY))llvm-objdump

QEMU_VIRT  := $(QEMU) -M virt -cpu cortex-a72 -m 128M
QEMU_EL2   := $(QEMU) -M virt,virtualization=on -cpu cortex-a72 -m 128M
QEMU_RPI4  := $(QEMU) -M raspi4b
QEMU_IO    := -display none -monitor none -serial stdio -semihosting
# A run never hangs forever: the image exits through semihosting; this is the backstop.
RUN_TIMEOUT ?= 60
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
APPEND_ARG := $(if $(APPEND),-append "$(APPEND)",)

.PHONY: linux-peer inspect dump-handover all image image-b image-v1 run run-boot soak rpi4-sdcard check-exclusives run-el2 run-rpi4 run-rpi4-nodtb test test-host test-qemu gdb clippy fmt \
        fmt-check deps boot-time bench-handover bench-linux clean help

all: image

help:
	@echo "make            build $(IMAGE) (arm64 Image, boots on virt and raspi4b)"
	@echo "make run        boot on QEMU virt (EL1) and run a $(RUN_GENERATIONS)-generation handover chain"
	@echo "make run-boot   boot on QEMU virt, print the banner, exit 0 (no chain)"
	@echo "make soak       GENERATIONS=1000 SEED= BOARD=virt|rpi4 MEM=1G PRESERVE=1G SHAPE=scatter|dense|mixed: long chain, report in target/soak/"
	@echo "make image-b    build $(IMAGE_B) (MAX_ORDER 8, the cross-version image)"
	@echo "make image-v1   build $(IMAGE_V1) (the previous release, from git: writes kho-typed-v1)"
	@echo "make rpi4-sdcard  build/rpi4-sdcard: kernel8.img + config.txt for a real Pi 4"
	@echo "make run-el2    boot on QEMU virt with virtualization=on (EL2 entry)"
	@echo "make run-rpi4   boot on QEMU raspi4b with the Pi 4 device tree"
	@echo "make run-rpi4-nodtb  boot on QEMU raspi4b without a device tree"
	@echo "make test       host unit tests, then the QEMU boot tests"
	@echo "make gdb        QEMU virt halted with a gdb stub on :1234, and the gdb command"
	@echo "make check-exclusives  no load/store-exclusive before the MMU is on (part of make test)"
	@echo "make clippy     clippy, host and target, -D warnings"
	@echo "make fmt        cargo fmt"
	@echo "make boot-time  median time from QEMU start to the banner (5 runs)"
	@echo "make bench-handover  handover blackout under -icount shift=0, RAM x preserved set (BENCH_ARGS=...)"
	@echo "make bench-linux  Linux's KHO (test_kho) and baton's mixed set side by side, 64M/512M/2G (BENCH_LINUX_ARGS=...)"
	@echo "make inspect    DUMP=path [FDT=addr] [BASE=addr] [JSON=1]: what the next image makes of a dumped handover"
	@echo "make dump-handover  GEN=1: generation GEN's handover dumped as it jumps (target/dump/, virt)"
	@echo "make deps       install (root on Debian) or name what is missing"
	@echo "make linux-peer build the Linux 7.2 KHO peer (cached in ~/.cache/baton; make test uses it)"
	@echo "variables: APPEND='loglevel=debug' PROFILE=release|debug QEMU=... RPI4_DTB=..."

image: $(IMAGE)

image-b: $(IMAGE_B)

image-v1: $(IMAGE_V1)

# Always ask cargo (it knows what changed); objcopy only when the ELF did.
# objcopy, then the build stamp (CRC-32 in the header) that lets a running image prove its
# copy of an Image unchanged.
$(IMAGE): FORCE
	$(CARGO) build -p kernel --bin baton --target $(TARGET) $(CARGO_PROFILE_FLAG) $(if $(FEATURES),--features $(FEATURES),)
	@mkdir -p $(dir $(IMAGE))
	@if [ ! -f $@ ] || [ $(ELF) -nt $@ ]; then \
		"$(OBJCOPY)" -O binary $(ELF) $@ && $(STAMP) $@ && echo "  IMAGE  $@ ($$(stat -c %s $@) bytes)"; fi

# The cross-version image B: the same sources with the buddy allocator stopping at order 8.
# Its own target directory, so that switching features never rebuilds image A.
$(IMAGE_B): FORCE
	$(CARGO) build -p kernel --bin baton --target $(TARGET) $(CARGO_PROFILE_FLAG) --features max-order-8 --target-dir target/image-b
	@mkdir -p $(dir $(IMAGE_B))
	@if [ ! -f $@ ] || [ $(ELF_B) -nt $@ ]; then \
		"$(OBJCOPY)" -O binary $(ELF_B) $@ && $(STAMP) $@ && echo "  IMAGE  $@ ($$(stat -c %s $@) bytes, MAX_ORDER 8)"; fi

# No FORCE: the file name carries the commit, so it is built once and reused. The old tree's
# own Makefile builds and stamps it (same toolchain file, same Cargo.lock, crates from the
# local cargo cache when present).
$(IMAGE_V1):
	rm -rf $(V1_DIR)/src && mkdir -p $(V1_DIR)/src $(dir $@)
	git archive $(V1_COMMIT) | tar -x -C $(V1_DIR)/src
	CARGO_TARGET_DIR=$(CURDIR)/$(V1_DIR)/target $(MAKE) -C $(V1_DIR)/src image \
		ELF=$(CURDIR)/$(V1_DIR)/target/$(TARGET)/$(PROFILE)/baton
	cp $(V1_DIR)/src/build/Image $@.tmp && mv $@.tmp $@
	@echo "  IMAGE  $@ (previous release $(V1_COMMIT))"

FORCE:

deps:
	@scripts/deps.sh

run: deps image
	timeout $(RUN_TIMEOUT) $(QEMU_VIRT) $(QEMU_IO) -kernel $(IMAGE) \
		-append "baton.generations=$(RUN_GENERATIONS) $(APPEND)"

# Boot only: the banner and a clean exit, no chain.
run-boot: deps image
	timeout $(RUN_TIMEOUT) $(QEMU_VIRT) $(QEMU_IO) -kernel $(IMAGE) $(APPEND_ARG)

# A chain of GENERATIONS handovers in one QEMU process; report in target/soak/.
soak: deps image
	$(CARGO) run --release -q -p tests --bin soak -- --image $(IMAGE) --board $(BOARD) \
		--generations $(GENERATIONS) $(if $(SEED),--seed $(SEED),) --mem $(MEM) \
		$(if $(SOAK_BOOTARGS),--extra-bootargs "$(SOAK_BOOTARGS)",)

# A folder for the FAT boot partition of a real Raspberry Pi 4 (see README).
rpi4-sdcard: image
	scripts/rpi4-sdcard.sh $(IMAGE) build/rpi4-sdcard

run-el2: deps image
	timeout $(RUN_TIMEOUT) $(QEMU_EL2) $(QEMU_IO) -kernel $(IMAGE) $(APPEND_ARG)

run-rpi4: deps image
	@test -f $(RPI4_DTB) || { echo "no Pi 4 device tree at $(RPI4_DTB) (set RPI4_DTB=...)"; exit 1; }
	timeout $(RUN_TIMEOUT) $(QEMU_RPI4) $(QEMU_IO) -kernel $(IMAGE) -dtb $(RPI4_DTB)

run-rpi4-nodtb: deps image
	timeout $(RUN_TIMEOUT) $(QEMU_RPI4) $(QEMU_IO) -kernel $(IMAGE)

test: deps image test-host check-exclusives test-qemu

# No load/store-exclusive before the MMU is on (a real Pi 4 would hang; QEMU cannot show
# it): only EarlyRawMutex's CAS path may hold one, and every way into it reads SCTLR_EL1.
check-exclusives: image
	"$(OBJDUMP)" -d --demangle --no-show-raw-insn $(ELF) > build/baton.dis
	python3 scripts/check-exclusives.py build/baton.dis

# Host unit tests of every crate (mm, kho, board logic, arch table builder, drivers, harness),
# then the library examples of baton-fdt, mm and kho (what another kernel copies from).
test-host:
	$(CARGO) test --workspace --exclude tests
	$(CARGO) test -p tests --lib --bins
	$(CARGO) run -q -p baton-fdt --example tree
	$(CARGO) run -q -p mm --example frames
	$(CARGO) run -q -p kho --features test-helpers --example handover

# QEMU tests against build/Image (and image B for the cross-version chain): boots on every
# board and EL, then the handover chains (the upgrade chain from the previous release
# too), damaged handovers and refused next images, and kho-inspect on a real dumped
# handover (tests/dump.rs, through scripts/dump-handover.sh).
# The Linux peer (tests/linux.rs) is built on first use and cached outside the clone.
test-qemu: image $(IMAGE_B) $(IMAGE_V1)
	out=$$(scripts/linux-peer.sh) && peer=$$(printf '%s\n' "$$out" | tail -n 1) && \
	BATON_IMAGE=$(CURDIR)/$(IMAGE) BATON_IMAGE_B=$(CURDIR)/$(IMAGE_B) BATON_IMAGE_V1=$(CURDIR)/$(IMAGE_V1) \
		BATON_ELF=$(CURDIR)/$(ELF) BATON_RPI4_DTB=$(abspath $(RPI4_DTB)) QEMU=$(QEMU) GDB=$(GDB) \
		BATON_LINUX_PEER=$$peer \
		$(CARGO) test -p tests --test boot --test handover --test dump --test linux

# Linux 7.2 with KHO and test_kho, and its init: built once into ~/.cache/baton (BATON_CACHE).
linux-peer: deps
	scripts/linux-peer.sh

gdb: image
	@echo "QEMU is waiting for gdb on localhost:1234. In another shell:"
	@echo "  $(GDB) -ex 'add-symbol-file $(ELF) -o 0x40200000' -ex 'target remote localhost:1234'"
	@echo "(the ELF is linked at 0; QEMU virt loads the Image at 0x40200000)"
	$(QEMU_VIRT) $(QEMU_IO) -kernel $(IMAGE) $(APPEND_ARG) -s -S

# kho-inspect: kho's own validation over a QEMU dump-guest-memory core or a raw pmemsave file.
inspect:
	@test -n "$(DUMP)" || { echo "usage: make inspect DUMP=path [FDT=addr] [BASE=addr] [JSON=1]"; exit 1; }
	$(CARGO) run --release -q -p kho-inspect -- $(DUMP) $(if $(FDT),--fdt $(FDT),) \
		$(if $(BASE),--base $(BASE),) $(if $(JSON),--json,)

# QEMU virt halted on its gdbstub (loopback); gdb-multiarch breaks on the trampoline of
# generation GEN and has QEMU's monitor write dump-guest-memory (scripts/dump-handover.sh).
dump-handover: deps image
	GDB=$(GDB) QEMU=$(QEMU) scripts/dump-handover.sh $(IMAGE) $(ELF) $(GEN) target/dump $(APPEND)

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p kernel -p board -p workload -p arch -p drivers -p mm -p kho --target $(TARGET) --release -- -D warnings

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

boot-time: deps image
	@scripts/boot-time.sh $(IMAGE)

# The handover blackout in guest µs under -icount shift=0 (deterministic), one QEMU at a time
# over RAM 1G/4G/16G x preserved sets; BENCH line per case, Markdown table, targets.
bench-handover: deps image
	python3 scripts/bench-handover.py --image $(IMAGE) --qemu $(QEMU) $(BENCH_ARGS)

# Linux's KHO beside baton's: the Linux peer's test_kho (Linux -> Linux) and baton's mixed
# set at 64M/512M/2G preserved, RAM 4G, -icount shift=0; Linux timed by the icount plugin
# at System.map addresses. One table, Linux/baton per page (docs/performance.md).
bench-linux: deps image
	$(CARGO) build --release --manifest-path $(ICOUNT_PLUGIN_DIR)/Cargo.toml \
		--target-dir target/icount-plugin
	out=$$(scripts/linux-peer.sh) && peer=$$(printf '%s\n' "$$out" | tail -n 1) && \
	python3 scripts/bench-linux.py --image $(IMAGE) --qemu $(QEMU) --peer "$$peer" \
		--plugin $(ICOUNT_PLUGIN) $(BENCH_LINUX_ARGS)

clean:
	$(CARGO) clean
	rm -rf build
