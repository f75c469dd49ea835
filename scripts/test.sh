#!/usr/bin/env bash
# Installs what the tests need (cmake and a C++ compiler for grpcio-sys,
# OpenBao's `bao` server) and runs every test: unit tests, and integration
# tests that start real OpenBao servers on loopback ports and drive the real
# plugin binary over its Unix socket. CI runs exactly this (.ci/run).
# In CI (CI=true), or with OFFLINE_BUILD=1, it also proves the air-gapped
# build: scripts/offline-build.sh builds from vendored sources with a fresh
# CARGO_HOME and no network (a cold debug build: several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_deps
ensure_bao
BAO_BIN="$(find_bao)"
export BAO_BIN
echo "==> OpenBao: $("$BAO_BIN" version)"

cargo fmt --check

# cargo prints one "test result" line per target, the last of them for a
# target without tests; close with the total over all targets.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "${CI:-}" = true ] || [ -n "${OFFLINE_BUILD:-}" ]; then
    echo "==> air-gapped build (scripts/offline-build.sh)"
    scripts/offline-build.sh || { echo "offline build FAILED"; [ "$status" != 0 ] || status=1; }
fi
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
