#!/usr/bin/env bash
# Air-gapped builds, proven: vendors every dependency (scripts/vendor.sh,
# the one step that may use the network or the registry cache), then builds
# trousseau from that copy alone, with
#   - a fresh, empty CARGO_HOME holding only the source replacement, so no
#     crate can come from ~/.cargo's registry cache,
#   - `--offline` and CARGO_NET_OFFLINE=true,
#   - a fresh target directory, so every crate (gRPC core included) is
#     compiled from vendor/,
#   - and, when run as root with util-linux's unshare, inside a new network
#     namespace (no interface but a down loopback): a build step that tried
#     the network would fail.
# usage: scripts/offline-build.sh [--release]   (default: a debug build)
# With OFFLINE_BUILD_OUT=PATH the binary built is copied there (scripts/test.sh
# hands the release one to the end-to-end suite, so CI builds it once).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps

profile=()
[ "${1:-}" = "--release" ] && profile=(--release)

work="$(mktemp -d /tmp/trousseau-offline.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cargo-home"
scripts/vendor.sh "$work/vendor" "$work/cargo-home/config.toml"

isolate=()
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
    isolate=(unshare --net)
    echo "==> building in a network namespace with no network" >&2
else
    echo "==> not root or no unshare: building without network isolation (--offline only)" >&2
fi

echo "==> cargo build --locked --offline${profile[*]:+ ${profile[*]}} (fresh CARGO_HOME and target dir)" >&2
start=$(date +%s)
"${isolate[@]}" env CARGO_HOME="$work/cargo-home" CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$work/target" \
    cargo build --locked --offline "${profile[@]}" --bin trousseau
secs=$(($(date +%s) - start))

dir=debug
[ ${#profile[@]} -gt 0 ] && dir=release
"$work/target/$dir/trousseau" --version
if [ -n "${OFFLINE_BUILD_OUT:-}" ]; then
    mkdir -p "$(dirname "$OFFLINE_BUILD_OUT")"
    cp "$work/target/$dir/trousseau" "$OFFLINE_BUILD_OUT"
fi
# Nothing was downloaded or unpacked: the fresh CARGO_HOME has no registry/.
[ ! -e "$work/cargo-home/registry" ] || { echo "CARGO_HOME gained a registry/ directory" >&2; exit 1; }
echo "==> offline build OK in ${secs}s ($dir build; CARGO_HOME still holds no registry/)"
