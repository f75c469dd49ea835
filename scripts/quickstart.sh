#!/usr/bin/env bash
# Quickstart: starts a real OpenBao dev server with transit on a free
# loopback port (installing OpenBao if missing), builds and starts the plugin
# on a local socket, and runs an Encrypt/Decrypt round trip (KMS v2 and v1)
# through that socket with `trousseau probe`. Stops everything it started,
# unless run with --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

keep=""
[ "${1:-}" = "--keep" ] && keep=1

ensure_build_deps
ensure_bao

work="$(mktemp -d /tmp/trousseau-quickstart.XXXXXX)"
bao_pid=""
plugin_pid=""
cleanup() {
    [ -n "$keep" ] && return
    [ -n "$plugin_pid" ] && kill "$plugin_pid" 2>/dev/null && wait "$plugin_pid" 2>/dev/null || true
    [ -n "$bao_pid" ] && kill "$bao_pid" 2>/dev/null && wait "$bao_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> starting OpenBao dev server (log: $work/bao.log)"
start_dev_openbao "$work" quickstart-root
echo "==> OpenBao dev server on $BAO_ADDR"
echo "==> transit engine enabled, key 'kube' created"

echo "==> building trousseau (the first build compiles gRPC core: several minutes)"
cargo build --locked
socket="$work/kms.sock"
http_addr="127.0.0.1:$(free_port)"
echo "==> starting trousseau serve on unix://$socket, health and metrics on http://$http_addr (log: $work/plugin.log)"
VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" \
    target/debug/trousseau serve --socket "$socket" --transit-key kube --http-addr "$http_addr" \
    >"$work/plugin.log" 2>&1 &
plugin_pid=$!
wait_for_socket "$socket" "$work/plugin.log"

echo "==> round trip through the socket, as kube-apiserver would call it"
target/debug/trousseau probe --socket "$socket"
echo "==> quickstart OK"
if [ -n "$keep" ]; then
    echo "left running: OpenBao pid $bao_pid, trousseau pid $plugin_pid, socket $socket"
    echo "health: http://$http_addr/readyz, metrics: http://$http_addr/metrics"
    echo "stop with: kill $plugin_pid $bao_pid"
fi
