#!/bin/sh
# Builds baton's Linux KHO peer: Debian's linux-source-7.2 for arm64 from `tinyconfig` plus
# tests/linux-peer/peer.config, and the static peer init (tests/linux-peer/init.c, with the
# kernel tree's nolibc). Prints the peer's directory on its last line (Image, System.map,
# init, config; System.map gives `make bench-linux` the kernel's symbol addresses).
#
# Cached outside the clone in $BATON_CACHE (default ~/.cache/baton): the source package once
# per version, the build once per (version, fragment, init, this script). The package comes
# from the Debian mirror that the machine's own apt sources name (suite sid, a private apt
# state in the cache); no mirror address is written here. As root on Debian it installs the
# cross compiler and build tools; otherwise it names what is missing.
set -eu

SUITE=sid
PKG=linux-source-7.2
# Bump when the way the kernel is built changes (the cache key is this and the fragment).
BUILD_REV=2
here=$(cd "$(dirname "$0")/.." && pwd)
frag=$here/tests/linux-peer/peer.config
initc=$here/tests/linux-peer/init.c
cache=${BATON_CACHE:-$HOME/.cache/baton}
jobs=${JOBS:-$(nproc)}
step() { echo "linux-peer: $*" >&2; }
die() { echo "linux-peer: error: $*" >&2; exit 1; }

# 1. Build tools.
need=""
for t in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu bc:bc bison:bison flex:flex \
         xz:xz-utils make:make perl:perl rsync:rsync; do
    command -v "${t%%:*}" >/dev/null 2>&1 || need="$need ${t#*:}"
done
[ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
[ -f /usr/include/libelf.h ] || need="$need libelf-dev"
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing:$need"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q --no-install-recommends $need >&2; } \
            || die "could not install:$need"
    else
        die "missing:$need (as root on Debian: apt-get install$need)"
    fi
fi

# 2. The source package, from the mirror of the machine's own Debian sources.
aptdir=$cache/apt
mirror_line() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        u=$(sed -n 's/^URIs:[[:space:]]*//p' "$f" | head -n 1 | cut -d' ' -f1)
        k=$(sed -n 's/^Signed-By:[[:space:]]*//p' "$f" | head -n 1)
        case "$u" in *security*|"") continue ;; esac
        echo "$u|$k"; return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        u=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' "$f" \
            | grep -v security | head -n 1)
        [ -n "$u" ] && { echo "$u|"; return 0; }
    done
    return 1
}
srcroot=$cache/src
if ! ls -d "$srcroot"/linux-source-7.2/Makefile >/dev/null 2>&1; then
    ml=$(mirror_line) || die "no Debian mirror in the machine's apt sources (/etc/apt/sources.list*); cannot fetch $PKG"
    uri=${ml%%|*}; key=${ml#*|}
    mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial" "$aptdir/etc" "$srcroot"
    {
        echo "Types: deb"; echo "URIs: $uri"; echo "Suites: $SUITE"; echo "Components: main"
        [ -n "$key" ] && echo "Signed-By: $key"
    } > "$aptdir/etc/peer.sources"
    O="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$aptdir/etc
       -o Dir::State=$aptdir -o Dir::State::Lists=$aptdir/lists -o Dir::Cache=$aptdir
       -o Dir::Cache::Archives=$aptdir/archives -o Dir::State::status=/dev/null
       -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
    step "apt: $PKG from $uri ($SUITE), state in $aptdir"
    apt-get $O -q update >&2 || die "apt-get update of $SUITE from $uri failed"
    (cd "$aptdir/archives" && apt-get $O -q download "$PKG" >&2) || die "apt-get download $PKG failed"
    deb=$(ls -t "$aptdir"/archives/${PKG}_*.deb | head -n 1)
    step "unpacking $(basename "$deb")"
    rm -rf "$srcroot/pkg" && dpkg-deb -x "$deb" "$srcroot/pkg"
    tar -C "$srcroot" -xf "$srcroot"/pkg/usr/src/linux-source-7.2.tar.xz
    rm -rf "$srcroot/pkg"
fi
ksrc=$srcroot/linux-source-7.2
kver=$(make -s -C "$ksrc" kernelversion 2>/dev/null)
[ -n "$kver" ] || die "cannot read the kernel version of $ksrc"

# The peer init: rebuilt whenever its source changed (one compiler call).
build_init() {
    ihash=$(sha256sum < "$initc" | cut -c1-12)
    [ -f "$out/init" ] && [ "$(cat "$out/init.src" 2>/dev/null)" = "$ihash" ] && return 0
    step "building the peer init (nolibc)"
    aarch64-linux-gnu-gcc -s -static -Os -nostdinc -nostdlib -fno-asynchronous-unwind-tables \
        -fno-ident -I "$out/usr/include" -I "$ksrc/tools/include/nolibc" -include nolibc.h \
        -o "$out/init.tmp" "$initc" || die "the peer init does not build"
    mv "$out/init.tmp" "$out/init" && echo "$ihash" > "$out/init.src"
}

# 3. The kernel, keyed by what it is made from.
hash=$( (echo "$BUILD_REV"; cat "$frag") | sha256sum | cut -c1-12)
out=$cache/linux-$kver-$hash
if [ -f "$out/Image" ] && [ -f "$out/System.map" ] && [ -d "$out/usr/include" ]; then
    build_init
    step "cached: $out"
    echo "$out"; exit 0
fi
mkdir -p "$out/build"
K="make -s -C $ksrc O=$out/build ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -j$jobs"
step "configuring Linux $kver (tinyconfig + $(basename "$frag"))"
$K tinyconfig >&2
"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$out/build" "$out/build/.config" "$frag" >&2
$K olddefconfig >&2
for opt in $(grep '^CONFIG_.*=y' "$frag"); do
    grep -qx "$opt" "$out/build/.config" || die "$opt did not stick in the configuration"
done
step "building the Image ($jobs jobs; about 7 minutes on 2 cores)"
$K Image >&2
step "installing the UAPI headers"
$K headers_install INSTALL_HDR_PATH="$out/usr" >&2
build_init
cp "$out/build/.config" "$out/config"
cp "$out/build/System.map" "$out/System.map"
echo "$kver" > "$out/version"
cp "$out/build/arch/arm64/boot/Image" "$out/Image.tmp" && mv "$out/Image.tmp" "$out/Image"
rm -rf "$out/build"
step "built: $out"
echo "$out"
