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
BAO="$(find_bao)"
n="${1:-2000}"

work="$(mktemp -d /tmp/trousseau-bench.XXXXXX)"
port="$(free_port)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN="bench-root"
# HOME: dev mode writes its root token to ~/.vault-token; leave the user's own alone.
HOME="$work" "$BAO" server -dev -dev-root-token-id="$BAO_TOKEN" -dev-listen-address="127.0.0.1:$port" >"$work/bao.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do "$BAO" status >/dev/null 2>&1 && break; sleep 0.2; done
"$BAO" secrets enable transit >/dev/null
"$BAO" write -f transit/keys/kube >/dev/null

cargo build --locked --release --bin trousseau --example bench
RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" \
    target/release/trousseau serve --socket "$work/kms.sock" --transit-key kube >"$work/plugin.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -S "$work/kms.sock" ] && break; sleep 0.1; done

VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --socket "$work/kms.sock" --vault-addr "$BAO_ADDR" --key kube --round-trips "$n"
