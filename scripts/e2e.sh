#!/usr/bin/env bash
# The end-to-end suite against the real thing: builds kube-apiserver and
# kubectl (k8s.io/kubernetes), etcd and etcdctl (go.etcd.io/etcd) and helm
# (helm.sh/helm) from their published Go modules, pinned by our own
# go.mod/go.sum under tests/e2e/go/, into target/e2e/bin/ (cached by
# version: a second run builds nothing), builds the release plugin, then
# runs tests/e2e/ (cargo test --test e2e): every check starts OpenBao, etcd,
# the plugin and kube-apiserver on loopback ports, configured from deploy/.
#
# usage: scripts/e2e.sh [--build-only] [CARGO_TEST_FILTER]
#   --build-only   build (or find cached) the Go binaries, print versions, stop
# environment:
#   TROUSSEAU_BIN  the plugin binary to test (default: cargo build --release)
#   E2E_THREADS    checks run at once (default 3; each is one control plane)
# Ends with "e2e: N passed, N failed"; exits 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BIN="$PWD/target/e2e/bin"
GO_MODS="$PWD/tests/e2e/go"
mkdir -p "$BIN"

command -v go >/dev/null || { echo "e2e: Go is required (go not on PATH)" >&2; exit 1; }
# The modules name go 1.26.0; never fetch another toolchain behind our back.
export GOTOOLCHAIN=local
command -v openssl >/dev/null || apt_install openssl

# The version of module $2 that the go.mod in $1 pins.
mod_version() {
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# build_tool DIR NAME PKG [LDFLAGS]: builds PKG (a main package of a module
# pinned in DIR/go.mod) as $BIN/NAME, unless the binary there was built from
# the same go.mod, go.sum, Go version and flags.
build_tool() {
    local dir="$1" name="$2" pkg="$3" ldflags="-s -w ${4:-}"
    local stamp
    stamp="$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16) $(go env GOVERSION) $pkg $ldflags"
    if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "==> $name: cached" >&2
        return
    fi
    echo "==> building $name from $pkg" >&2
    local start=$SECONDS
    (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$BIN/$name" "$pkg")
    echo "$stamp" > "$BIN/.$name.stamp"
    echo "==> $name built in $((SECONDS - start))s" >&2
}

build_go_tools() {
    local kube etcd helm v
    kube="$(mod_version "$GO_MODS/kube" k8s.io/kubernetes)"
    etcd="$(mod_version "$GO_MODS/etcd" go.etcd.io/etcd/server/v3)"
    helm="$(mod_version "$GO_MODS/helm" helm.sh/helm/v3)"
    # Upstream's release builds stamp these; without them the binaries call
    # themselves v0.0.0-master.
    v="$(echo "$kube" | sed -E 's/^v([0-9]+)\.([0-9]+)\..*/\1 \2/')"
    local kv="-X k8s.io/component-base/version.gitVersion=$kube -X k8s.io/component-base/version.gitMajor=${v% *}"
    kv="$kv -X k8s.io/component-base/version.gitMinor=${v#* } -X k8s.io/component-base/version.gitTreeState=clean"
    kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=$kube -X k8s.io/client-go/pkg/version.gitMajor=${v% *}"
    kv="$kv -X k8s.io/client-go/pkg/version.gitMinor=${v#* } -X k8s.io/client-go/pkg/version.gitTreeState=clean"
    build_tool "$GO_MODS/kube" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kv"
    build_tool "$GO_MODS/kube" kubectl k8s.io/kubernetes/cmd/kubectl "$kv"
    build_tool "$GO_MODS/etcd" etcd go.etcd.io/etcd/server/v3
    build_tool "$GO_MODS/etcd" etcdctl go.etcd.io/etcd/etcdctl/v3
    # helm's own release build stamps its version, and the Kubernetes
    # version `helm template` assumes (else 1.20): make it the apiserver's.
    local hv="-X helm.sh/helm/v3/internal/version.version=$helm"
    for p in pkg/chartutil pkg/lint/rules; do
        hv="$hv -X helm.sh/helm/v3/$p.k8sVersionMajor=${v% *} -X helm.sh/helm/v3/$p.k8sVersionMinor=${v#* }"
    done
    build_tool "$GO_MODS/helm" helm helm.sh/helm/v3/cmd/helm "$hv"
    echo "==> e2e binaries ($(go env GOVERSION)):"
    echo "    $("$BIN/kube-apiserver" --version)"
    echo "    kubectl $("$BIN/kubectl" version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1)"
    echo "    etcd $("$BIN/etcd" --version | sed -n 's/^etcd Version: //p')"
    echo "    etcdctl $("$BIN/etcdctl" version | sed -n 's/^etcdctl version: //p')"
    echo "    helm $("$BIN/helm" version --template '{{.Version}}')"
}

build_only=""
filter=()
for a in "$@"; do
    case "$a" in
        --build-only) build_only=1 ;;
        -*) echo "usage: scripts/e2e.sh [--build-only] [CARGO_TEST_FILTER]" >&2; exit 2 ;;
        *) filter+=("$a") ;;
    esac
done

build_go_tools
[ -z "$build_only" ] || exit 0

ensure_build_deps
ensure_bao
BAO_BIN="$(find_bao)"
export BAO_BIN
if [ -z "${TROUSSEAU_BIN:-}" ]; then
    echo "==> cargo build --release (the plugin under test)" >&2
    cargo build --locked --release --bin trousseau
    TROUSSEAU_BIN="$PWD/target/release/trousseau"
fi
TROUSSEAU_BIN="$(realpath "$TROUSSEAU_BIN")"
echo "==> plugin under test: $TROUSSEAU_BIN ($("$TROUSSEAU_BIN" --version))"
export TROUSSEAU_BIN E2E_BIN_DIR="$BIN" E2E_FIGURES="$PWD/target/e2e/figures.txt"
: > "$E2E_FIGURES"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --test e2e -- --test-threads="${E2E_THREADS:-3}" "${filter[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "==> e2e figures (target/e2e/figures.txt):"
sed 's/^/    /' "$E2E_FIGURES"
passed=$(grep -cE '^test .* \.\.\. ok$' "$log" || true)
failed=$(grep -cE '^test .* \.\.\. FAILED$' "$log" || true)
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
    echo "e2e: the suite did not build or run (cargo test exited $status)"
    failed=1
fi
echo "e2e: $passed passed, $failed failed"
[ "$status" = 0 ] && [ "$failed" = 0 ]
