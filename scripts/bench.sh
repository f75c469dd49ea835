#!/usr/bin/env bash
# Rerunnable benchmark: starts an OpenBao dev server and three release
# plugins on loopback (coalescing on, --coalesce=false, and --local-kek),
# then drives KMS v2 and v1 Encrypt and Decrypt through each plugin's
# socket and the same calls straight at transit, at concurrency 1, 16 and
# 64, side by side in one run, and a v1 cold start (N sequential Decrypts
# of distinct ciphertexts, also of local-KEK ones). Prints req/s, p50,
# p99, the ratio to direct transit, the plugin's CPU per request, its RSS
# and its Vault calls per 1,000 requests (and per 10,000 Encrypts).
# usage: scripts/bench.sh [SECONDS_PER_ROW] [COLD_START_DECRYPTS]   (default 5 10000)
# BIN=path/to/trousseau benchmarks that plugin binary instead of building
# target/release/trousseau; BEFORE=path/to/old/trousseau adds another
# plugin, run as it is (for before/after figures). CONC=1,16,64 picks the
# concurrency levels; LOCAL_KEK=0 leaves the --local-kek plugin out.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_bao
secs="${1:-5}"
cold="${2:-10000}"

bench_workdir bench
start_dev_openbao "$work" bench-root
bench_build
echo "==> plugin: $plugin ($(stat -c %s "$plugin") bytes)"

pids=()
specs=()
# usage: start_one LABEL BINARY [FLAGS...]
start_one() {
    local label="$1" bin="$2" port
    shift 2
    port="$(free_port)"
    RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" \
        "$bin" serve --socket "$work/$label.sock" --transit-key kube --http-addr "127.0.0.1:$port" \
        "$@" >"$work/$label.log" 2>&1 &
    pids+=("$!")
    plugin_pid="${pids[*]}" # bench_cleanup stops them all
    wait_for_socket "$work/$label.sock" "$work/$label.log"
    specs+=(--plugin "$label=$work/$label.sock,$!,127.0.0.1:$port")
}
start_one coalesce-on "$plugin"
start_one coalesce-off "$plugin" --coalesce=false
if [ "${LOCAL_KEK:-1}" != 0 ]; then
    start_one local-kek "$plugin" --local-kek
fi
if [ -n "${BEFORE:-}" ]; then
    start_one before "$BEFORE"
fi
sleep 1 # let the start-up health checks finish
for i in "${!pids[@]}"; do
    echo "${specs[$((2 * i + 1))]%%=*}: idle RSS $(awk '$1 == "VmRSS:" { print $2 }' "/proc/${pids[$i]}/status") KiB after start-up"
done

VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --vault-addr "$BAO_ADDR" --key kube --seconds "$secs" --conc "${CONC:-1,16,64}" --cold-start "$cold" "${specs[@]}"
