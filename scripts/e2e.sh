#!/usr/bin/env bash
# The end-to-end suite against the real thing: builds kube-apiserver and
# kubectl (k8s.io/kubernetes), etcd and etcdctl (go.etcd.io/etcd) and helm
# (helm.sh/helm) from their published Go modules, pinned by our own
# go.mod/go.sum under tests/e2e/go/, into target/e2e/bin/ (cached by
# version: a second run builds nothing), builds the release plugin, then
# runs tests/e2e/ (cargo test --test e2e): every check starts OpenBao, etcd,
# the plugin and kube-apiserver on loopback ports, configured from deploy/.
#
# The image checks (tests/e2e/podman.rs, tests/e2e/static_pod.rs) run the
# image of the air-gapped bundle (scripts/build-image.sh) under podman, and
# under containerd with a real kubelet, with a pause image built here from
# tests/e2e/pause/pause.c (no registry is reachable).
#
# usage: scripts/e2e.sh [--build-only] [CARGO_TEST_FILTER]
#   --build-only   build (or find cached) the Go binaries, print versions, stop
# environment:
#   TROUSSEAU_BIN    the plugin binary to test (default: the bundle's, else
#                    cargo build --release)
#   TROUSSEAU_IMAGE  the image archive to test (default:
#                    target/image/trousseau-image.tar, built by
#                    scripts/build-image.sh when missing)
#   E2E_THREADS    checks run at once (default 3; each is one control plane)
# Ends with "e2e: N passed, N failed"; exits 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BIN="$PWD/target/e2e/bin"
GO_MODS="$PWD/tests/e2e/go"
CACHE="${E2E_GO_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trousseau/e2e-bin}"
mkdir -p "$BIN" "$CACHE"

command -v go >/dev/null || { echo "e2e: Go is required (go not on PATH)" >&2; exit 1; }
# The modules name go 1.26.0; never fetch another toolchain behind our back.
export GOTOOLCHAIN=local
command -v openssl >/dev/null || apt_install openssl

# The version of module $2 that the go.mod in $1 pins.
mod_version() {
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# build_tool DIR MODULE NAME PKG [LDFLAGS]: builds PKG (a main package of
# MODULE, pinned in DIR/go.mod) into the cache directory of MODULE's
# version, unless the binary there was built with the same Go version and
# flags, and links it as $BIN/NAME. The cache is keyed by version, not by
# go.mod's hash: adding a tool to a go.mod (kubelet, kubeadm) must not
# rebuild the others, and a module version fixes its own dependencies.
build_tool() {
    local dir="$1" module="$2" name="$3" pkg="$4" ldflags="-s -w ${5:-}"
    local version stamp cached
    version="$(mod_version "$dir" "$module")"
    cached="$CACHE/${module//\//_}@$version"
    stamp="$(go env GOVERSION) $pkg $ldflags"
    mkdir -p "$cached"
    if [ -x "$cached/$name" ] && [ "$(cat "$cached/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "==> $name: cached ($cached)" >&2
    else
        echo "==> building $name from $pkg $version" >&2
        local start=$SECONDS
        (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$cached/$name.tmp" "$pkg")
        mv "$cached/$name.tmp" "$cached/$name"
        echo "$stamp" > "$cached/.$name.stamp"
        echo "==> $name built in $((SECONDS - start))s" >&2
    fi
    ln -sfn "$cached/$name" "$BIN/$name"
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
    local k=k8s.io/kubernetes e=go.etcd.io/etcd/server/v3
    build_tool "$GO_MODS/kube" $k kube-apiserver $k/cmd/kube-apiserver "$kv"
    build_tool "$GO_MODS/kube" $k kubectl $k/cmd/kubectl "$kv"
    # The node side of the static-pod checks (tests/e2e/static_pod.rs):
    # kubelet runs deploy/kubeadm/trousseau.yaml, kubeadm renders the
    # control-plane manifests from deploy/kubeadm/kubeadm-config.yaml.
    build_tool "$GO_MODS/kube" $k kubelet $k/cmd/kubelet "$kv"
    build_tool "$GO_MODS/kube" $k kubeadm $k/cmd/kubeadm "$kv"
    build_tool "$GO_MODS/etcd" $e etcd $e
    build_tool "$GO_MODS/etcd" $e etcdctl go.etcd.io/etcd/etcdctl/v3
    # helm's own release build stamps its version, and the Kubernetes
    # version `helm template` assumes (else 1.20): make it the apiserver's.
    local hv="-X helm.sh/helm/v3/internal/version.version=$helm"
    for p in pkg/chartutil pkg/lint/rules; do
        hv="$hv -X helm.sh/helm/v3/$p.k8sVersionMajor=${v% *} -X helm.sh/helm/v3/$p.k8sVersionMinor=${v#* }"
    done
    build_tool "$GO_MODS/helm" helm.sh/helm/v3 helm helm.sh/helm/v3/cmd/helm "$hv"
    echo "==> e2e binaries ($(go env GOVERSION)):"
    echo "    $("$BIN/kube-apiserver" --version)"
    echo "    kubectl $("$BIN/kubectl" version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1)"
    echo "    $("$BIN/kubelet" --version)"
    echo "    kubeadm $("$BIN/kubeadm" version -o short)"
    echo "    etcd $("$BIN/etcd" --version | sed -n 's/^etcd Version: //p')"
    echo "    etcdctl $("$BIN/etcdctl" version | sed -n 's/^etcdctl version: //p')"
    echo "    helm $("$BIN/helm" version --template '{{.Version}}')"
}

# podman, runc and containerd (with ctr) from Debian, and the CNI plugins
# (the loopback one) containerd's CRI needs: checked first, installed once.
ensure_container_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
    [ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
    command -v gcc >/dev/null || missing+=(gcc)
    [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} with apt-get" >&2
        apt_install "${missing[@]}"
    fi
}

# podman_scratch_image TAG OUT CONTEXT: builds CONTEXT (a FROM scratch
# Containerfile beside it, CONTEXT.Containerfile) into image TAG and saves it
# as the OCI archive OUT, for `ctr images import`. podman keeps its storage
# in a temporary directory of its own (removed at the end), reads
# tests/e2e/containers.conf, and writes nothing outside its flags'
# directories; what it makes whatever its flags say (tests/e2e/podman.rs) is
# removed afterwards if this made it.
podman_scratch_image() {
    local tag="$1" out="$2" ctx="$3" tmp p made=()
    for p in /run/containers /run/runc /var/lib/containers; do [ -e "$p" ] || made+=("$p"); done
    tmp="$(mktemp -d /tmp/tpz.XXXXXX)"
    mkdir -p "$tmp/tmp" "$tmp/net"
    local podman=(env CONTAINERS_CONF="$PWD/tests/e2e/containers.conf" TMPDIR="$tmp/tmp" podman
        --root "$tmp/root" --runroot "$tmp/run" --tmpdir "$tmp/tmp" --network-config-dir "$tmp/net"
        --runtime-flag "root=$tmp/runc")
    "${podman[@]}" build -q --timestamp 0 -t "$tag" -f "$ctx.Containerfile" "$ctx" >/dev/null
    rm -f "$out"
    "${podman[@]}" save -q --format oci-archive -o "$out" "$tag"
    "${podman[@]}" rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$tmp"
    for p in "${made[@]}"; do rm -rf "$p"; done
    echo "==> image $tag: $out" >&2
}

# The sandbox image kubeadm 1.37 names (registry.k8s.io/pause:3.10.2), built
# FROM scratch around tests/e2e/pause/pause.c compiled static.
build_pause_image() {
    local out="$PWD/target/e2e/pause-image.tar" ctx
    if [ -f "$out" ] && [ "$out" -nt tests/e2e/pause/pause.c ]; then return; fi
    ctx="$(mktemp -d /tmp/tpc.XXXXXX)"
    gcc -static -Os -o "$ctx/pause" tests/e2e/pause/pause.c
    strip "$ctx/pause"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' > "$ctx.Containerfile"
    podman_scratch_image registry.k8s.io/pause:3.10.2 "$out" "$ctx"
    rm -rf "$ctx" "$ctx.Containerfile"
}

# kube-apiserver and etcd as images, for the static pods kubeadm renders
# (tests/e2e/kubeadm.rs): FROM scratch around the binaries built above, with
# the shared libraries they link (glibc's libc and loader, copied from this
# machine), tagged as kubeadm names them: registry.k8s.io/kube-apiserver:
# <version>, and registry.k8s.io/etcd:<version> (ClusterConfiguration's
# etcd.local.imageTag, set by the test to the etcd built here). PATH is set
# since the manifests' `command:` names the bare binary.
build_control_plane_images() {
    local kube etcd name tag out ctx lib
    kube="$(mod_version "$GO_MODS/kube" k8s.io/kubernetes)"
    etcd="$(mod_version "$GO_MODS/etcd" go.etcd.io/etcd/server/v3)"
    for name in kube-apiserver etcd; do
        case "$name" in
        kube-apiserver) tag="registry.k8s.io/kube-apiserver:$kube" ;;
        etcd) tag="registry.k8s.io/etcd:${etcd#v}" ;;
        esac
        out="$PWD/target/e2e/$name-image.tar"
        if [ -f "$out" ] && [ "$out" -nt "$BIN/$name" ] && [ "$(cat "$out.tag" 2>/dev/null)" = "$tag" ]; then
            continue
        fi
        ctx="$(mktemp -d /tmp/tpc.XXXXXX)"
        mkdir -p "$ctx/usr/local/bin"
        cp "$(realpath "$BIN/$name")" "$ctx/usr/local/bin/$name"
        for lib in $(ldd "$BIN/$name" | grep -o '/[^ ]*' | sort -u); do
            mkdir -p "$ctx$(dirname "$lib")"
            cp -L "$lib" "$ctx$lib"
        done
        printf 'FROM scratch\nCOPY . /\nENV PATH=/usr/local/bin\n' > "$ctx.Containerfile"
        podman_scratch_image "$tag" "$out" "$ctx"
        echo "$tag" > "$out.tag"
        rm -rf "$ctx" "$ctx.Containerfile"
    done
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
ensure_container_tools
build_pause_image
build_control_plane_images
TROUSSEAU_IMAGE="${TROUSSEAU_IMAGE:-$PWD/target/image/trousseau-image.tar}"
if [ ! -f "$TROUSSEAU_IMAGE" ]; then
    echo "==> no image at $TROUSSEAU_IMAGE: scripts/build-image.sh" >&2
    scripts/build-image.sh
    TROUSSEAU_IMAGE="$PWD/target/image/trousseau-image.tar"
    TROUSSEAU_BIN="${TROUSSEAU_BIN:-$PWD/target/image/trousseau}"
fi
TROUSSEAU_IMAGE="$(realpath "$TROUSSEAU_IMAGE")"
echo "==> image under test: $TROUSSEAU_IMAGE" >&2
export TROUSSEAU_IMAGE E2E_PAUSE_IMAGE="$PWD/target/e2e/pause-image.tar"
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
