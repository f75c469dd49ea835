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

start_dev_openbao "$work" bench-root tls

bench_build
echo "==> plugin: $plugin ($(stat -c %s "$plugin") bytes), OpenBao over TLS at $BAO_ADDR"
# In-flight cap above the burst, so every round trip is served (a client
# thread may send its next call before the last one's permit is released).
bench_start_plugin "$((conc + conc / 4))"
rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$plugin_pid/status"; }
idle_rss="$(rss_kib VmRSS)"
threads_idle="$(awk '$1 == "Threads:" { print $2 }' "/proc/$plugin_pid/status")"

VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --socket "$work/kms.sock" --vault-addr "$BAO_ADDR" --key kube --round-trips "$n" --burst "$conc"

echo "plugin memory: idle RSS $idle_rss KiB ($threads_idle threads) after start-up; after the burst RSS $(rss_kib VmRSS) KiB, peak (VmHWM) $(rss_kib VmHWM) KiB"
