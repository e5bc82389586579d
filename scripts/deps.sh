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

# The mirror this machine's apt already uses for Debian bookworm, as "URI KEYRING" (KEYRING
# empty when the source names none): the first enabled `deb` source serving the `bookworm`
# suite in $1/sources.list.d/*.sources (deb822), then in $1/sources.list and
# $1/sources.list.d/*.list (one-line form). Prints nothing when there is none: deps never
# invents a mirror address.
configured_mirror() {
    for f in "$1"/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
        {
            uri = ""; key = ""; suites = ""; types = ""; off = 0
            for (i = 1; i <= NF; i++) {
                v = $i
                if (v ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", v); split(v, u, /[ \t]+/); uri = u[1] }
                else if (v ~ /^Suites:/) { suites = " " v " " }
                else if (v ~ /^Types:/) { types = " " v " " }
                else if (v ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", v); key = v }
                else if (v ~ /^Enabled:[ \t]*no/) { off = 1 }
            }
            if (!off && uri != "" && types ~ /[ \t]deb[ \t]/ && suites ~ /[ \t]bookworm[ \t]/) {
                print uri, key; found = 1; exit
            }
        }
        END { exit !found }' "$f" && return 0
    done
    for f in "$1"/sources.list "$1"/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 == "deb" {
            i = 2; opts = ""
            if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) { opts = opts " " $i; i++ }; opts = opts " " $i; i++ }
            if ($(i + 1) != "bookworm") next
            key = ""
            if (match(opts, /signed-by=[^] ]+/)) key = substr(opts, RSTART + 10, RLENGTH - 10)
            print $i, key; found = 1; exit
        }
        END { exit !found }' "$f" && return 0
    done
    return 1
}

is_debian=0
[ -r /etc/os-release ] && grep -qi '^ID=debian' /etc/os-release && is_debian=1

if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && [ $is_debian = 1 ]; then
        echo "deps: installing:$missing"
        if [ $need_qemu = 1 ]; then
            . /etc/os-release
            src=/etc/apt/sources.list.d/${VERSION_CODENAME}-backports.sources
            if [ "${VERSION_CODENAME:-}" = bookworm ] && [ ! -f "$src" ]; then
                # bookworm's own QEMU is too old: add bookworm-backports from the same mirror
                # and keyring as the machine's configured Debian source, and only from it.
                if ! mirror=$(configured_mirror /etc/apt); then
                    echo "deps: no apt source for Debian bookworm is configured on this machine"
                    echo "  (looked in /etc/apt/sources.list and /etc/apt/sources.list.d/)."
                    echo "  deps only reuses the machine's own mirror: configure your Debian"
                    echo "  source, then run 'make deps' again."
                    exit 1
                fi
                uri=${mirror%% *}
                key=${mirror#* }
                echo "deps: adding bookworm-backports from the configured mirror $uri"
                {
                    echo "Types: deb"
                    echo "URIs: $uri"
                    echo "Suites: bookworm-backports"
                    echo "Components: main"
                    [ -n "$key" ] && echo "Signed-By: $key"
                } > "$src"
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
        echo "  On Debian bookworm (as root): 'make deps' adds bookworm-backports from the mirror"
        echo "  your apt sources already use. By hand: copy the URIs and Signed-By lines of your"
        echo "  Debian source (/etc/apt/sources.list.d/debian.sources) into"
        echo "  /etc/apt/sources.list.d/bookworm-backports.sources with 'Suites: bookworm-backports'"
        echo "  and 'Components: main', then:"
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
