#!/bin/sh
# Checks for what `make run` / `make test` need; installs it when run as root on Debian,
# otherwise prints exactly what to install. Exit status 1 if something is still missing.
set -u

missing=""
need_qemu=0
if command -v qemu-system-aarch64 >/dev/null 2>&1; then
    # raspi4b exists from QEMU 9.0 on; bookworm's own QEMU (7.2) lacks it.
    if ! qemu-system-aarch64 -M help 2>/dev/null | grep -q '^raspi4b'; then
        need_qemu=1
    fi
else
    need_qemu=1
fi
command -v dtc >/dev/null 2>&1 || missing="$missing device-tree-compiler"
# make dump-handover and its QEMU test drive QEMU's gdbstub with it.
command -v gdb-multiarch >/dev/null 2>&1 || missing="$missing gdb-multiarch"
[ $need_qemu = 1 ] && missing="$missing qemu-system-arm(>=9.0)"

is_debian=0
[ -r /etc/os-release ] && grep -qi '^ID=debian' /etc/os-release && is_debian=1

if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && [ $is_debian = 1 ]; then
        echo "deps: installing:$missing"
        if [ $need_qemu = 1 ]; then
            . /etc/os-release
            src=/etc/apt/sources.list.d/${VERSION_CODENAME}-backports.sources
            if [ "${VERSION_CODENAME:-}" = bookworm ] && [ ! -f "$src" ]; then
                # Same mirror and keyring as the machine's own Debian source (a CI machine
                # may use a mirror), falling back to Debian's defaults.
                main=/etc/apt/sources.list.d/debian.sources
                uri=$(sed -n 's/^URIs:[[:space:]]*//p' "$main" 2>/dev/null | head -n 1)
                key=$(sed -n 's/^Signed-By:[[:space:]]*//p' "$main" 2>/dev/null | head -n 1)
                cat > "$src" <<SRC
Types: deb
URIs: ${uri:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: ${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
SRC
            fi
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q || exit 1
        if [ $need_qemu = 1 ]; then
            if grep -q bookworm-backports /etc/apt/sources.list.d/*.sources 2>/dev/null; then
                apt-get install -y -q -t bookworm-backports qemu-system-arm || exit 1
            else
                apt-get install -y -q qemu-system-arm || exit 1
            fi
        fi
        apt-get install -y -q device-tree-compiler python3-libfdt gdb-multiarch || exit 1
    else
        echo "deps: missing:$missing"
        echo "  On Debian bookworm (as root):"
        echo "    printf 'Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: bookworm-backports\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > /etc/apt/sources.list.d/bookworm-backports.sources"
        echo "    apt-get update && apt-get install -y -t bookworm-backports qemu-system-arm"
        echo "    apt-get install -y device-tree-compiler python3-libfdt gdb-multiarch"
        echo "  Elsewhere: QEMU >= 9.0 with qemu-system-aarch64 (machine raspi4b), dtc and gdb-multiarch."
        exit 1
    fi
fi

# Rust: the toolchain, target and components that rust-toolchain.toml pins, installed
# explicitly (rustup >= 1.28 installs nothing on its own) and checked down to the target's core.
"$(dirname "$0")/toolchain.sh" || exit 1
exit 0
