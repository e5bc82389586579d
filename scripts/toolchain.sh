#!/bin/sh
# Installs the Rust toolchain that rust-toolchain.toml pins (channel, targets, components)
# and proves it usable: the target's `core` must exist in the toolchain's sysroot.
#
# Why explicit: since rustup 1.28 `rustup show` installs nothing, and with
# RUSTUP_AUTO_INSTALL=0 a missing toolchain, target or component is never fetched on
# demand. A machine may also carry `<channel>-<host>` as a symlink to another toolchain
# without the target; `rustup toolchain install` then completes it in place.
#
# Exit status 0: everything is there. 1: something is missing; the last line names it and
# the command that installs it.
set -u
cd "$(dirname "$0")/.."

file=rust-toolchain.toml
# One value of the [toolchain] table: `channel = "x"` or `key = ["a", "b"]` → space-separated.
value() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$file" | head -n 1 |
        tr -d '[]",' | tr -s ' ' | sed 's/^ //; s/ $//'
}
channel=$(value channel)
targets=$(value targets)
components=$(value components)
if [ -z "$channel" ]; then
    echo "toolchain: no channel in $file"
    exit 1
fi

install_cmd="rustup toolchain install $channel --profile minimal"
for t in $targets; do install_cmd="$install_cmd --target $t"; done
[ -n "$components" ] && install_cmd="$install_cmd --component $(echo "$components" | tr ' ' ',')"

if ! command -v rustup >/dev/null 2>&1; then
    echo "toolchain: rustup is missing. Install rustup (Debian: apt-get install rustup), then: $install_cmd"
    exit 1
fi

# What the pinned toolchain must hold: `core` for every target, and one file per component.
check() {
    sysroot=$(rustc "+$channel" --print sysroot 2>/dev/null) || { echo "toolchain $channel"; return 1; }
    host=$(rustc "+$channel" -vV 2>/dev/null | sed -n 's/^host: //p')
    for t in $targets; do
        ls "$sysroot/lib/rustlib/$t/lib/"libcore-*.rlib >/dev/null 2>&1 ||
            { echo "target $t (no core in $sysroot/lib/rustlib/$t/lib)"; return 1; }
    done
    for c in $components; do
        case $c in
        llvm-tools*) f="$sysroot/lib/rustlib/$host/bin/llvm-objcopy" ;;
        clippy*) f="$sysroot/bin/cargo-clippy" ;;
        rustfmt*) f="$sysroot/bin/rustfmt" ;;
        *) f="$sysroot/lib/rustlib/manifest-$c-$host" ;;
        esac
        [ -e "$f" ] || { echo "component $c (no $f)"; return 1; }
    done
    return 0
}

if missing=$(check); then
    exit 0
fi
echo "toolchain: $missing is missing; running: $install_cmd"
$install_cmd || true
if missing=$(check); then
    echo "toolchain: $channel ready ($(rustc "+$channel" --version))"
    exit 0
fi
# rustup can answer "unchanged" while files are gone (a toolchain whose recorded component
# list disagrees with its directory): reinstall each target and component by name.
echo "toolchain: $missing still missing; reinstalling the targets and components one by one"
for t in $targets; do
    rustup target remove --toolchain "$channel" "$t" >/dev/null 2>&1
    rustup target add --toolchain "$channel" "$t" || true
done
for c in $components; do
    rustup component add --toolchain "$channel" "$c" || true
done
if missing=$(check); then
    echo "toolchain: $channel ready ($(rustc "+$channel" --version))"
    exit 0
fi
echo "toolchain: still missing: $missing. Install it with: $install_cmd"
exit 1
