#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (the plugin's parsers; see
# fuzz/README.md) for a bounded time each, on a temporary copy of the
# committed seed corpus (fuzz/corpus/ is never modified), and prints per
# target the executions and whether a crash was found. Exits non-zero on
# any crash, printing where its input was kept (fuzz/artifacts/, git-ignored).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 30)
#
# cargo-fuzz needs nightly flags (-Z sanitizer=address); RUSTC_BOOTSTRAP=1
# lets the stable toolchain take them. The fuzz package is its own
# workspace and builds into fuzz/target, never the main target/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
if ! [[ "$secs" =~ ^[1-9][0-9]{0,4}$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (1 to 99999, default 30)" >&2
    exit 2
fi
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> cargo-fuzz is not installed: installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked, about 1.5 min)"
    timeout 1800 cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi
if ! command -v c++ >/dev/null; then
    # libfuzzer-sys builds libFuzzer's C++ with the system compiler.
    . scripts/lib.sh
    echo "==> installing g++ with apt-get (libfuzzer-sys builds libFuzzer from C++)"
    apt_install g++
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="fuzz/target/$triple/release"
# The lock file is committed: refuse to build anything it does not pin.
timeout 900 cargo fetch --locked --quiet --manifest-path fuzz/Cargo.toml
echo "==> cargo fuzz build (address sanitizer, debug assertions; fuzz/target)"
timeout 1800 cargo fuzz build --fuzz-dir fuzz --target "$triple" --target-dir fuzz/target

work="$(mktemp -d "${TMPDIR:-/tmp}/trousseau-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets found in fuzz/" >&2; exit 1; }
failed=0
for t in "${targets[@]}"; do
    corpus="$work/$t/corpus"
    artifacts="$work/$t/artifacts"
    log="$work/$t/log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -R "fuzz/corpus/$t/." "$corpus/"
    fi
    seeds=$(find "$corpus" -type f | wc -l)
    set +e
    # -max_total_time bounds the run; timeout(1) bounds a hang beyond it,
    # -timeout a single slow input, -rss_limit_mb its memory.
    timeout --kill-after=10 $((secs + 120)) "$bin_dir/$t" "$corpus" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs="?"
    found=$(find "$artifacts" -type f | sort)
    inputs=$(find "$corpus" -type f | wc -l)
    if [ "$rc" = 0 ] && [ -z "$found" ]; then
        echo "$t: $execs executions in ${secs}s, no crash (corpus $seeds -> $inputs inputs)"
        continue
    fi
    failed=1
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "$t: FAILED: still running $((secs + 120))s after start (hang); $execs executions"
    else
        echo "$t: CRASH (exit $rc) after $execs executions"
    fi
    # What the target said (the panic message and libFuzzer's summary).
    { grep -E -A1 "panicked at" "$log" | grep -v '^--$' | head -n 10
      grep -E "^SUMMARY: |ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$log" | head -n 4; } | sed 's/^/    /' || true
    if [ -n "$found" ]; then
        mkdir -p "fuzz/artifacts/$t"
        while IFS= read -r f; do
            cp "$f" "fuzz/artifacts/$t/"
            kept="fuzz/artifacts/$t/$(basename "$f")"
            echo "    input kept at $kept (hex: $(head -c 256 "$kept" | od -An -tx1 | tr -d ' \n'))"
            echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t $kept"
        done <<<"$found"
    else
        echo "    full log (last lines):"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
done

if [ "$failed" != 0 ]; then
    echo "fuzz: FAILED (a target crashed or hung; inputs under fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no crash"
