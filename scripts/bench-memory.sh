#!/usr/bin/env bash
# Memory benchmark: the release plugin's resident memory while a 256-wide
# burst of KMS v2 Encrypt+Decrypt round trips goes through it to an OpenBao
# dev server over TLS (OpenBao's own dev CA, verified by the plugin).
# Prints idle RSS after start-up, RSS after the burst and the peak (VmHWM).
# usage: scripts/bench-memory.sh [ROUND_TRIPS] [CONCURRENCY]   (default 20000 256)
# BIN=path/to/trousseau measures that binary instead of target/release/trousseau.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_bao
n="${1:-20000}"
conc="${2:-256}"

bench_workdir bench-mem

bao="$(find_bao)"
port="$(free_port)"
export BAO_ADDR="https://127.0.0.1:$port" BAO_TOKEN=bench-root VAULT_CACERT="$work/tls/vault-ca.pem"
mkdir -p "$work/tls"
HOME="$work" "$bao" server -dev -dev-tls -dev-tls-cert-dir="$work/tls" -dev-root-token-id="$BAO_TOKEN" \
    -dev-listen-address="127.0.0.1:$port" >"$work/bao.log" 2>&1 &
bao_pid=$!
for _ in $(seq 1 100); do VAULT_ADDR="$BAO_ADDR" "$bao" status >/dev/null 2>&1 && break; sleep 0.2; done
VAULT_ADDR="$BAO_ADDR" "$bao" status >/dev/null || { cat "$work/bao.log"; exit 1; }
VAULT_ADDR="$BAO_ADDR" "$bao" secrets enable transit >/dev/null
VAULT_ADDR="$BAO_ADDR" "$bao" write -f transit/keys/kube >/dev/null

bench_build
echo "==> plugin: $plugin ($(stat -c %s "$plugin") bytes), OpenBao over TLS at $BAO_ADDR"
# In-flight cap above the burst, so every round trip is served (a client
# thread may send its next call before the last one's permit is released).
RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" VAULT_CACERT="$VAULT_CACERT" \
    "$plugin" serve --socket "$work/kms.sock" --transit-key kube --http-addr "" \
    --max-in-flight "$((conc + conc / 4))" >"$work/plugin.log" 2>&1 &
plugin_pid=$!
wait_for_socket "$work/kms.sock" "$work/plugin.log"
sleep 1 # let the start-up health check finish
rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$plugin_pid/status"; }
idle_rss="$(rss_kib VmRSS)"
threads_idle="$(awk '$1 == "Threads:" { print $2 }' "/proc/$plugin_pid/status")"

VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --socket "$work/kms.sock" --vault-addr "$BAO_ADDR" --key kube --round-trips "$n" --burst "$conc"

echo "plugin memory: idle RSS $idle_rss KiB ($threads_idle threads) after start-up; after the burst RSS $(rss_kib VmRSS) KiB, peak (VmHWM) $(rss_kib VmHWM) KiB"
