#!/usr/bin/env bash
# Builds a fully static `trousseau` (release profile) on a plain Debian
# machine that has only the Rust toolchain, installing what it needs, and
# copies it to target/static/trousseau.
#
# Routes, best first (STATIC_ROUTE=musl|gnu forces one):
#   musl  x86_64-unknown-linux-musl, with zig (pip `ziglang`) as the C/C++
#         compiler through cargo-zigbuild. Truly static (no PT_INTERP, no
#         libc at run time), musl + libc++, the smallest binary. Needs the
#         musl target from rustup and zig from PyPI.
#   gnu   x86_64-unknown-linux-gnu with `-C target-feature=+crt-static`:
#         static-pie against glibc and libstdc++. Fallback when the musl
#         target or zig cannot be had. Larger, and glibc warns that
#         getaddrinfo in a static binary wants the same glibc's NSS modules
#         at run time (/etc/hosts and numeric addresses are fine).
# Not a route: Debian's musl-tools. grpcio-sys builds gRPC core's C++ with
# the host g++, which targets glibc; the link fails on glibc-only symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MUSL=x86_64-unknown-linux-musl
GNU=x86_64-unknown-linux-gnu
route="${STATIC_ROUTE:-}"
out=target/static
ensure_build_deps
command -v file >/dev/null || apt_install file

# zig from PyPI: into the current Python when pip allows it, else a venv
# (the same venv lib.sh uses for OpenBao).
ensure_zig() {
    if python3 -m ziglang version >/dev/null 2>&1 || command -v zig >/dev/null; then return 0; fi
    echo "==> installing zig (pip install ziglang)" >&2
    if python3 -m pip install -q ziglang 2>/dev/null && python3 -m ziglang version >/dev/null 2>&1; then
        return 0
    fi
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/trousseau/venv"
    [ -x "$venv/bin/python3" ] || python3 -m venv "$venv" 2>/dev/null \
        || { apt_install python3-venv && python3 -m venv "$venv"; } || return 1
    "$venv/bin/python3" -m pip install -q ziglang || return 1
    # cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH.
    export PATH="$venv/bin:$PATH"
}

musl_prereqs() {
    if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
        echo "==> rustup target add $MUSL" >&2
        rustup target add "$MUSL" || return 1
    fi
    ensure_zig || return 1
    if ! command -v cargo-zigbuild >/dev/null; then
        echo "==> cargo install --locked cargo-zigbuild" >&2
        cargo install --locked cargo-zigbuild || return 1
    fi
}

if [ -z "$route" ]; then
    if musl_prereqs; then route=musl; else
        echo "==> musl route unavailable (no musl target or no zig): falling back to gnu +crt-static" >&2
        route=gnu
    fi
elif [ "$route" = musl ]; then
    musl_prereqs
fi

start=$(date +%s)
case "$route" in
musl)
    # abseil uses off64_t, which musl >= 1.2.4 only declares with
    # _LARGEFILE64_SOURCE; clang >= 19 (zig's) rejects a `template` keyword
    # use in gRPC 1.56's basic_seq.h unless that warning is turned off.
    export CFLAGS_x86_64_unknown_linux_musl="-D_LARGEFILE64_SOURCE"
    export CXXFLAGS_x86_64_unknown_linux_musl="-D_LARGEFILE64_SOURCE -Wno-missing-template-arg-list-after-template-kw"
    # A pip cmake >= 4 refuses c-ares' old cmake_minimum_required.
    export CMAKE_POLICY_VERSION_MINIMUM=3.5
    echo "==> cargo zigbuild --release --target $MUSL" >&2
    cargo zigbuild --locked --release --target "$MUSL" --bin trousseau
    bin="target/$MUSL/release/trousseau"
    ;;
gnu)
    # --target keeps the flag off build scripts and proc macros.
    echo "==> cargo build --release --target $GNU with +crt-static" >&2
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --locked --release --target "$GNU" --bin trousseau
    bin="target/$GNU/release/trousseau"
    ;;
*)
    echo "STATIC_ROUTE must be musl or gnu" >&2
    exit 2
    ;;
esac
secs=$(($(date +%s) - start))

mkdir -p "$out"
cp "$bin" "$out/trousseau"
kind="$(file -b "$out/trousseau")"
echo "==> $out/trousseau ($route route, built in ${secs}s): $(stat -c %s "$out/trousseau") bytes"
echo "    file: $kind"
echo "    ldd:  $(ldd "$out/trousseau" 2>&1 | head -1 | sed 's/^[[:space:]]*//')"
case "$kind" in
*"statically linked"* | *"static-pie linked"*) ;;
*)
    echo "not a static binary" >&2
    exit 1
    ;;
esac
