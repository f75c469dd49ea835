#!/usr/bin/env bash
# Rerunnable benchmark: starts an OpenBao dev server and the release plugin
# on loopback, then compares Encrypt+Decrypt round trips through the plugin's
# socket with the same transit calls made directly, at concurrency 1 and 16.
# usage: scripts/bench.sh [ROUND_TRIPS_PER_ROW]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_bao
n="${1:-2000}"

work="$(mktemp -d /tmp/trousseau-bench.XXXXXX)"
bao_pid=""
plugin_pid=""
cleanup() {
    for p in $plugin_pid $bao_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

start_dev_openbao "$work" bench-root

cargo build --locked --release --bin trousseau --example bench
RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" \
    target/release/trousseau serve --socket "$work/kms.sock" --transit-key kube --http-addr "" >"$work/plugin.log" 2>&1 &
plugin_pid=$!
wait_for_socket "$work/kms.sock" "$work/plugin.log"

VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --socket "$work/kms.sock" --vault-addr "$BAO_ADDR" --key kube --round-trips "$n"
