#!/usr/bin/env bash
# Installs what the tests need (cmake and a C++ compiler for grpcio-sys,
# OpenBao's `bao` server) and runs every test: unit tests, and integration
# tests that start real OpenBao servers on loopback ports and drive the real
# plugin binary over its Unix socket. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_deps
ensure_bao
BAO_BIN="$(find_bao)"
export BAO_BIN
echo "==> OpenBao: $("$BAO_BIN" version)"

cargo fmt --check
cargo test --locked --all-targets
