#!/usr/bin/env bash
# Soak: REQUESTS KMS v2 requests (Encrypt+Decrypt round trips, so half as
# many round trips) through the release plugin to an OpenBao dev server over
# TLS, CONCURRENCY at once. Every INTERVAL seconds it samples the plugin's
# resident memory, threads and open file descriptors into a CSV and prints
# each sample; at the end, the first, last and largest of each. Any failed
# request ends the run with status 1. A benchmark, not part of CI: 1,000,000
# requests take about 6 minutes on 2 cores (docs/performance.md#soak).
# usage: scripts/soak.sh [REQUESTS] [CONCURRENCY] [INTERVAL]   (default 1000000 16 10)
# BIN=path/to/trousseau soaks that binary; SOAK_CSV=path keeps the samples.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_bao
requests="${1:-1000000}"
conc="${2:-16}"
interval="${3:-10}"

bench_workdir soak
start_dev_openbao "$work" soak-root tls
bench_build
csv="${SOAK_CSV:-$work/soak.csv}"
echo "==> plugin: $plugin, OpenBao over TLS at $BAO_ADDR; $requests requests, $conc at once"
bench_start_plugin "$((conc * 2))"

sample() {
    local rss threads fds
    rss="$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$plugin_pid/status")"
    threads="$(awk '$1 == "Threads:" { print $2 }' "/proc/$plugin_pid/status")"
    fds="$(find "/proc/$plugin_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
    echo "$(($(date +%s) - start)),$rss,$threads,$fds" | tee -a "$csv"
}
start="$(date +%s)"
echo "seconds,rss_kib,threads,fds" >"$csv"
sample
VAULT_TOKEN="$BAO_TOKEN" target/release/examples/bench \
    --socket "$work/kms.sock" --vault-addr "$BAO_ADDR" --key kube \
    --round-trips "$((requests / 2))" --burst "$conc" &
load_pid=$!
while kill -0 "$load_pid" 2>/dev/null; do
    sleep "$interval"
    kill -0 "$load_pid" 2>/dev/null && sample
done
wait "$load_pid" || { echo "soak FAILED: a request failed (see above)"; tail -20 "$work/plugin.log"; exit 1; }
sleep 2 # the last requests' threads end
sample
kill -0 "$plugin_pid" || { echo "soak FAILED: the plugin exited"; cat "$work/plugin.log"; exit 1; }
awk -F, 'NR == 2 { f = $0 } NR > 1 { l = $0; for (i = 2; i <= 4; i++) if ($i > m[i]) m[i] = $i }
    END { print "first (s,rss_kib,threads,fds): " f; print "last:  " l;
          printf "max rss %d KiB, threads %d, fds %d\n", m[2], m[3], m[4] }' "$csv"
if grep -E " (WARN|ERROR) " "$work/plugin.log" | grep -v "is not below the apiserver" | head -5 | grep .; then
    echo "soak: the plugin logged warnings or errors (above)"
fi
