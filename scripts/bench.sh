#!/usr/bin/env bash
# Rerunnable benchmark: starts an OpenBao dev server and the release plugin
# on loopback, then compares Encrypt+Decrypt round trips through the plugin's
# socket with the same transit calls made directly, at concurrency 1 and 16.
# usage: scripts/bench.sh [ROUND_TRIPS_PER_ROW]   (default 2000)
# BIN=path/to/trousseau benchmarks that plugin binary (e.g. the static one
# from scripts/build-static.sh) instead of building target/release/trousseau.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_bao
n="${1:-2000}"

bench_workdir bench

start_dev_openbao "$work" bench-root

bench_build
echo "==> plugin: $plugin ($(stat -c %s "$plugin") bytes)"
RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" \
    "$plugin" serve --socket "$work/kms.sock" --transit-key kube --http-addr "" >"$work/plugin.log" 2>&1 &
plugin_pid=$!
wait_for_socket "$work/kms.sock" "$work/plugin.log"
sleep 1 # let the start-up health probe finish
rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$plugin_pid/status"; }
idle_rss="$(rss_kib VmRSS)"

VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --socket "$work/kms.sock" --vault-addr "$BAO_ADDR" --key kube --round-trips "$n"

# The plugin's own CPU time (user + system) over everything it served: the
# 50 warm-up and 2 x N measured round trips. Less noisy than throughput on a
# shared machine, and what an allocator or profile change moves.
read -r utime stime < <(awk '{ print $14, $15 }' "/proc/$plugin_pid/stat")
awk -v u="$utime" -v s="$stime" -v hz="$(getconf CLK_TCK)" -v n="$((2 * n + 50))" \
    'BEGIN { t = (u + s) / hz; printf "plugin CPU: %.2f s (user %.2f, sys %.2f) for %d round trips = %.0f us each\n", t, u / hz, s / hz, n, t * 1e6 / n }'
echo "plugin memory: idle RSS $idle_rss KiB after start-up; after the load RSS $(rss_kib VmRSS) KiB, peak (VmHWM) $(rss_kib VmHWM) KiB"
