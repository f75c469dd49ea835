#!/usr/bin/env bash
# Proves that a static trousseau serves from an empty root: starts a real
# OpenBao dev server on a free loopback port, then the binary in a chroot
# that holds only the binary, its config file, /dev/null and /dev/urandom
# (musl's libc++ reads /dev/urandom on the first RPC; container runtimes
# always provide /dev) and an empty /run for the socket. It runs as uid/gid
# 65532, like gcr.io/distroless/static:nonroot, with an empty environment
# but VAULT_TOKEN. `trousseau probe` from outside the chroot then makes the
# apiserver's calls (v2 and v1) through the socket. Stops both by pid.
# Needs root (chroot, mknod).
# usage: scripts/verify-static.sh [BINARY]   (default target/static/trousseau)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

bin="${1:-target/static/trousseau}"
[ -x "$bin" ] || { echo "no binary at $bin (run scripts/build-static.sh)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (chroot, mknod)" >&2; exit 2; }
command -v file >/dev/null || apt_install file
kind="$(file -b "$bin")"
case "$kind" in
*"statically linked"* | *"static-pie linked"*) ;;
*)
    echo "$bin is not static: $kind" >&2
    exit 1
    ;;
esac
echo "==> $bin: $(stat -c %s "$bin") bytes; $kind"
ensure_bao

work="$(mktemp -d /tmp/trousseau-verify-static.XXXXXX)"
root="$work/root"
bao_pid=""
plugin_pid=""
cleanup() {
    for p in $plugin_pid $bao_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

start_dev_openbao "$work" verify-static-root
echo "==> OpenBao dev server on $BAO_ADDR"

uid=65532
mkdir -p "$root/dev" "$root/run" "$root/etc/trousseau"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 444 "$root/dev/urandom" c 1 9
cp "$bin" "$root/trousseau"
# The same invocation as the image's CMD: serve --config <file>. A numeric
# address: the root has no /etc/hosts or resolv.conf.
cat >"$root/etc/trousseau/config.json" <<EOF
{"socket": "/run/kms.sock", "vault-addr": "$BAO_ADDR", "transit-key": "kube"}
EOF
chown "$uid:$uid" "$root/run"
echo "==> the chroot holds:"
(cd "$root" && find . -mindepth 1 | sort | sed 's/^/    /')

chroot_bin="$(command -v chroot)"
env -i VAULT_TOKEN="$BAO_TOKEN" RUST_LOG=info \
    "$chroot_bin" --userspec="$uid:$uid" "$root" /trousseau serve --config /etc/trousseau/config.json \
    >"$work/plugin.log" 2>&1 &
plugin_pid=$!
wait_for_socket "$root/run/kms.sock" "$work/plugin.log"
echo "==> serving as uid $(stat -c %u "$root/run/kms.sock") on $root/run/kms.sock; probing from outside"

if ! "$bin" probe --socket "$root/run/kms.sock"; then
    cat "$work/plugin.log"
    exit 1
fi

kill -TERM "$plugin_pid"
status=0
wait "$plugin_pid" || status=$?
plugin_pid=""
if [ "$status" != 0 ] || [ -e "$root/run/kms.sock" ]; then
    echo "plugin exited $status after SIGTERM (socket left: $([ -e "$root/run/kms.sock" ] && echo yes || echo no))" >&2
    cat "$work/plugin.log"
    exit 1
fi
echo "==> plugin stopped on SIGTERM (exit 0, socket removed)"
echo "==> static binary verified from an empty root"
