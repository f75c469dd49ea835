#!/usr/bin/env bash
# What the first call after a quiet spell costs: starts an OpenBao dev server
# over TLS (its own dev CA, verified by the plugin) and the release plugin,
# then, ROUNDS times, leaves it idle GAP seconds and times the first KMS v2
# Encrypt after the gap and 5 more right after it (their median), and counts
# the sockets the plugin opened meanwhile. The apiserver's Status comes every
# 60 s when healthy; a plugin that did not keep its Vault connection opens a
# new one (a TCP connect and a TLS handshake) for the first call.
# usage: scripts/bench-idle.sh [GAP_SECONDS] [ROUNDS]   (default 90 3)
# BIN=path/to/trousseau measures that binary instead of target/release/trousseau;
# BEFORE=path/to/old/trousseau runs an older build beside it, idle at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_bao
gap="${1:-90}"
rounds="${2:-3}"

bench_workdir bench-idle
start_dev_openbao "$work" bench-root tls
bench_build
echo "==> plugin: $plugin, OpenBao over TLS at $BAO_ADDR"

pids=()
specs=()
# usage: start_one LABEL BINARY
start_one() {
    local port
    port="$(free_port)"
    RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" VAULT_CACERT="$VAULT_CACERT" \
        "$2" serve --socket "$work/$1.sock" --transit-key kube --http-addr "127.0.0.1:$port" \
        >"$work/$1.log" 2>&1 &
    pids+=("$!")
    plugin_pid="${pids[*]}" # bench_cleanup stops them all
    wait_for_socket "$work/$1.sock" "$work/$1.log"
    specs+=(--plugin "$1=$work/$1.sock,$!,127.0.0.1:$port")
}
start_one plugin "$plugin"
if [ -n "${BEFORE:-}" ]; then
    start_one before "$BEFORE"
fi

target/release/examples/bench --idle-gap "$gap" --rounds "$rounds" "${specs[@]}"
