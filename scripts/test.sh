#!/usr/bin/env bash
# Installs what the tests need (cmake and a C++ compiler for grpcio-sys,
# OpenBao's `bao` server, Python parsers for /metrics and YAML) and runs every test: unit tests, and integration
# tests that start real OpenBao servers on loopback ports and drive the real
# plugin binary over its Unix socket. CI runs exactly this (.ci/run).
# The fuzz targets (fuzz/, outside the main build) run 10 s each.
# Then the air-gapped image (scripts/build-image.sh): the static musl
# binary built from vendored sources with no network, the image FROM
# scratch around it, and the bundle in target/image/ (about 8 minutes cold).
# In CI (CI=true), or with REPRODUCIBLE=1, a second independent build must
# give the same binary and image digest (as long again).
# Then the end-to-end suite (scripts/e2e.sh: real kube-apiserver, etcd,
# kubelet and kubeadm built from their Go modules, containerd and podman
# from Debian) runs on that binary and that image. Without Go it is skipped
# with one line saying so, except in CI, where that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_deps
ensure_bao
BAO_BIN="$(find_bao)"
export BAO_BIN
echo "==> OpenBao: $("$BAO_BIN" version)"
ensure_test_python
ensure_systemd_analyze
echo "==> Python for output parsers: $TEST_PYTHON"

if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --check
else
    echo "==> cargo fmt is not installed: formatting check skipped"
fi
if cargo clippy --version >/dev/null 2>&1; then
    # The end-to-end target is test = false, so --all-targets leaves it out.
    cargo clippy --locked --all-targets -- -D warnings
    cargo clippy --locked --test e2e -- -D warnings
else
    echo "==> cargo clippy is not installed: lint check skipped"
fi

# cargo prints one "test result" line per target, the last of them for a
# target without tests; close with the total over all targets.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The parsers under libFuzzer, 10 s per target (fuzz/README.md): a crash
# fails the run and names the input kept in fuzz/artifacts/.
echo "==> fuzzing (scripts/fuzz.sh 10)"
scripts/fuzz.sh 10 || { echo "fuzz FAILED"; [ "$status" != 0 ] || status=1; }
release=""
image=""
repro=()
if [ "${CI:-}" = true ] || [ -n "${REPRODUCIBLE:-}" ]; then repro=(--check-reproducible); fi
echo "==> air-gapped image (scripts/build-image.sh${repro[*]:+ ${repro[*]}})"
if scripts/build-image.sh "${repro[@]}"; then
    release="$PWD/target/image/trousseau"
    image="$PWD/target/image/trousseau-image.tar"
else
    echo "image build FAILED"; [ "$status" != 0 ] || status=1
fi
if command -v go >/dev/null; then
    echo "==> end-to-end suite (scripts/e2e.sh)"
    set +e
    TROUSSEAU_BIN="$release" TROUSSEAU_IMAGE="$image" scripts/e2e.sh 2>&1 | tee -a "$log"
    e2e_status=${PIPESTATUS[0]}
    set -e
    [ "$e2e_status" = 0 ] || { [ "$status" != 0 ] || status=$e2e_status; }
elif [ "${CI:-}" = true ]; then
    echo "e2e: FAILED: Go is not installed, and CI must run the end-to-end suite"
    [ "$status" != 0 ] || status=1
else
    echo "==> end-to-end suite skipped: Go is not installed (it builds kube-apiserver and etcd from their Go modules)"
fi
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
