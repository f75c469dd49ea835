#!/usr/bin/env bash
# The air-gapped image: builds the static musl binary from vendored sources
# with no network, then the image FROM scratch around it with buildah (no
# registry, no base image), and writes the bundle an air-gapped site carries,
# in target/image/:
#   trousseau-image.tar  OCI archive tagged as deploy/'s manifests name the
#                        image (`ctr -n k8s.io images import`, `podman load -i`)
#   trousseau            the same static binary, on its own
#   trousseau.cdx.json   CycloneDX SBOM of every crate compiled into it
#   image-digests.txt    the image's name, manifest and config digests, size
#   SHA256SUMS           over the four files above (`sha256sum -c SHA256SUMS`)
#
# How:
#   - tools first, with the network if something is missing: cmake, g++,
#     rustup's musl target, zig (pip), cargo-zigbuild, cargo-cyclonedx,
#     buildah, podman, runc, binutils, ca-certificates (scripts/lib.sh);
#   - the source: the work tree's files git tracks or would add, copied to a
#     fresh directory; every crate vendored beside it (scripts/vendor.sh, the
#     one step that may use the network or the registry cache);
#   - the build: `cargo zigbuild --locked --offline --release --target
#     x86_64-unknown-linux-musl` with a fresh CARGO_HOME holding only the
#     source replacement, CARGO_NET_OFFLINE, a fresh target directory and,
#     when root, `unshare --net` (no network at all); build paths remapped
#     (--remap-path-prefix for Rust, -ffile-prefix-map for gRPC core's
#     C/C++) so the binary does not depend on where it was built; readelf
#     refuses a PT_INTERP or a NEEDED library;
#   - the SBOM: cargo-cyclonedx, offline, musl target, no build or dev
#     dependencies; its crates must be exactly `cargo tree -e normal`'s;
#   - the image: the Containerfile is derived from the text of the
#     Dockerfile's final stage (each COPY --from mapped to a file of the
#     build's context; anything unexpected fails), built with buildah
#     --timestamp SOURCE_DATE_EPOCH (the commit's time) into a storage of its
#     own (containers.conf, storage.conf and registries.conf of its own, via
#     CONTAINERS_CONF and friends: nothing under /etc or /var/lib/containers
#     is read or written), pushed uncompressed to an OCI layout and tarred
#     with fixed names, owners, modes and times; its files, user, entrypoint,
#     command and labels are checked, its size (the uncompressed layer) must
#     be at most 7 MiB, and `podman load` of the archive into another fresh
#     storage must give the same image under the same name.
#
# usage: scripts/build-image.sh [--check-reproducible]
#   --check-reproducible: after the build, a second, independent one (own
#   source copy, vendor/, CARGO_HOME, target dir, zig cache, image storage,
#   under another path); fails unless the binary's sha256 and the image's
#   manifest digest (and with them every file of the bundle) are the same.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
. scripts/lib.sh

MUSL=x86_64-unknown-linux-musl
MAX_IMAGE_BYTES=$((7 * 1024 * 1024))
out="$repo/target/image"
check=""
case "${1:-}" in
"") ;;
--check-reproducible) check=1 ;;
*)
    echo "usage: scripts/build-image.sh [--check-reproducible]" >&2
    exit 2
    ;;
esac

# ---- tools (the network may be used here, and only here and in vendor.sh)
ensure_build_deps
ensure_musl_zig
ensure_image_tools

# ---- what the image is called and stamped with
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
image_ref="$(sed -n 's/^ *image: *\(ghcr\.io\/[^ ]*\) *$/\1/p' deploy/kubeadm/trousseau.yaml | head -1)"
if [ -z "$version" ] || [ -z "$image_ref" ]; then
    echo "no version in Cargo.toml or no image in deploy/kubeadm/trousseau.yaml" >&2
    exit 1
fi
if [ "${image_ref##*:}" != "$version" ]; then
    echo "deploy/kubeadm/trousseau.yaml names $image_ref but Cargo.toml's version is $version" >&2
    exit 1
fi
revision="$(git rev-parse HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "==> WARNING: the work tree has uncommitted changes; the image is labelled $revision-dirty" >&2
    revision="$revision-dirty"
fi
sde="$(git log -1 --format=%ct)"
created="$(date -u -d "@$sde" +%Y-%m-%dT%H:%M:%SZ)"
export SOURCE_DATE_EPOCH="$sde"

top="$(mktemp -d /tmp/trousseau-image.XXXXXX)"
cleanup() {
    # vfs storage written by a rootless buildah is owned by sub-uids.
    rm -rf "$top" 2>/dev/null || buildah unshare rm -rf "$top" 2>/dev/null || rm -rf "$top"
}
trap cleanup EXIT

isolate=()
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
    isolate=(unshare --net)
fi

# Prints the Containerfile of the Dockerfile's final stage (from its last
# FROM), with each COPY --from=STAGE SRC mapped to the context file the
# build provides; fails on any instruction or source it does not expect, and
# if ARG VERSION's default is not Cargo.toml's version.
# usage: derive_containerfile DOCKERFILE VERSION
derive_containerfile() {
    python3 - "$1" "$2" <<'PY'
import re, sys
path, version = sys.argv[1], sys.argv[2]
# Where each earlier stage's output comes from in build-image.sh's context.
FROM_STAGE = {
    ("builder", "/trousseau"): "trousseau",
    ("certs", "/etc/ssl/certs/ca-certificates.crt"): "ca-certificates.crt",
}
ARGS = {"VERSION", "REVISION", "CREATED"}
lines = open(path).read().split("\n")
last_from = max(i for i, l in enumerate(lines) if re.match(r"FROM\s", l))
# Instructions, continuation lines joined, comments and blank lines dropped.
instrs, cur = [], ""
for l in lines[last_from:]:
    if not cur and (not l.strip() or l.lstrip().startswith("#")):
        continue
    if l.endswith("\\"):
        cur += l[:-1] + " "
        continue
    instrs.append(re.sub(r"\s+", " ", (cur + l).strip()))
    cur = ""
def fail(msg):
    sys.exit(f"Dockerfile's final stage: {msg}; scripts/build-image.sh does not know how to build it")
if instrs[0] != "FROM scratch":
    fail(f"starts with {instrs[0]!r}, not 'FROM scratch'")
seen, out = set(), ["# Derived by scripts/build-image.sh from the Dockerfile's final stage."]
for ins in instrs:
    word = ins.split(" ", 1)[0]
    seen.add(word)
    if word == "ARG":
        m = re.fullmatch(r"ARG (\w+)(?:=(.*))?", ins)
        if not m or m.group(1) not in ARGS:
            fail(f"unexpected {ins!r}")
        if m.group(1) == "VERSION" and m.group(2) != version:
            fail(f"ARG VERSION defaults to {m.group(2)!r}, Cargo.toml says {version!r}")
    elif word == "COPY":
        opts = re.findall(r"--(\w+)=(\S+)", ins)
        rest = re.sub(r"--\w+=\S+ ", "", ins[5:]).split(" ")
        stage = dict(opts).pop("from", None)
        if set(k for k, _ in opts) - {"from", "chmod"} or len(rest) < 2:
            fail(f"unexpected {ins!r}")
        if stage is not None:
            if len(rest) != 2 or (stage, rest[0]) not in FROM_STAGE:
                fail(f"{ins!r} copies from a stage or path it does not map")
            rest[0] = FROM_STAGE[(stage, rest[0])]
        chmod = [f"--chmod={v}" for k, v in opts if k == "chmod"]
        ins = " ".join(["COPY"] + chmod + rest)
    elif word not in ("FROM", "LABEL", "USER", "ENTRYPOINT", "CMD"):
        fail(f"unexpected instruction {ins!r}")
    out.append(ins)
for word in ("USER", "ENTRYPOINT", "CMD", "LABEL", "COPY"):
    if word not in seen:
        fail(f"no {word}")
print("\n".join(out))
PY
}

# One complete build into directory D (which must not exist): source copy,
# vendor, offline static build, SBOM, image, bundle in D/out. With ZIG_CACHE,
# zig's global cache goes there instead of the user's (~/.cache/zig).
# usage: build_once D [ZIG_CACHE]
build_once() {
    local d="$1" zig_cache="${2:-}" t0 t1 secs_vendor secs_build
    mkdir -p "$d/src" "$d/cargo-home" "$d/out" "$d/context/deploy/image"
    t0=$(date +%s)

    # The source, as the work tree has it (tracked files and new ones not
    # ignored by git): target/ and vendor/ stay out.
    git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -x -C "$d/src"
    # Vendoring is the one step that may reach crates.io; 30 min bound (a
    # cold vendor of ~400 MB, usually seconds from the registry cache).
    timeout 1800 scripts/vendor.sh "$d/vendor" "$d/cargo-home/config.toml" 2>"$d/vendor.log" \
        || { cat "$d/vendor.log" >&2; return 1; }
    secs_vendor=$(($(date +%s) - t0))

    if [ ${#isolate[@]} -gt 0 ]; then
        echo "==> [$d] building in a network namespace with no network (unshare --net)" >&2
    else
        echo "==> [$d] not root or no unshare: building without network isolation (--offline only)" >&2
    fi
    # abseil needs off64_t (musl >= 1.2.4 declares it only with
    # _LARGEFILE64_SOURCE); zig's clang >= 19 rejects a `template` keyword use
    # in gRPC 1.56 unless that warning is off; a pip cmake >= 4 refuses
    # c-ares' old cmake_minimum_required. -ffile-prefix-map and
    # --remap-path-prefix replace D by /build in __FILE__ strings and panic
    # locations, so two builds in two directories give the same bytes.
    local cflags="-D_LARGEFILE64_SOURCE -ffile-prefix-map=$d=/build"
    local zig_env=()
    [ -n "$zig_cache" ] && zig_env=(ZIG_GLOBAL_CACHE_DIR="$zig_cache" ZIG_LOCAL_CACHE_DIR="$zig_cache")
    echo "==> [$d] cargo zigbuild --locked --offline --release --target $MUSL (fresh CARGO_HOME and target dir)" >&2
    t1=$(date +%s)
    # 60 min bound: a cold build takes 8 to 16 min on 2 shared cores.
    (cd "$d/src" && timeout 3600 "${isolate[@]}" env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
        CARGO_HOME="$d/cargo-home" CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$d/target" \
        RUSTFLAGS="--remap-path-prefix=$d=/build" \
        CFLAGS_x86_64_unknown_linux_musl="$cflags" \
        CXXFLAGS_x86_64_unknown_linux_musl="$cflags -Wno-missing-template-arg-list-after-template-kw" \
        CMAKE_POLICY_VERSION_MINIMUM=3.5 "${zig_env[@]}" \
        cargo zigbuild --locked --offline --release --target "$MUSL" --bin trousseau) \
        >"$d/build.log" 2>&1 || { tail -50 "$d/build.log" >&2; return 1; }
    secs_build=$(($(date +%s) - t1))
    [ ! -e "$d/cargo-home/registry" ] || { echo "CARGO_HOME gained a registry/ directory" >&2; return 1; }

    local bin="$d/target/$MUSL/release/trousseau"
    case "$(readelf -lW -dW "$bin")" in
    *INTERP* | *NEEDED*)
        echo "$bin is not static (readelf shows an interpreter or a NEEDED library)" >&2
        return 1
        ;;
    esac
    "$bin" --version >/dev/null
    install -m 0755 "$bin" "$d/out/trousseau"

    # ---- SBOM, offline, from the lock file and the vendored sources.
    (cd "$d/src" && timeout 600 "${isolate[@]}" env CARGO_HOME="$d/cargo-home" CARGO_NET_OFFLINE=true \
        cargo cyclonedx --target "$MUSL" --no-build-deps --describe binaries --format json \
        --spec-version 1.5 -q) >"$d/sbom.log" 2>&1 || { cat "$d/sbom.log" >&2; return 1; }
    # What cargo compiles for the target, without build or dev dependencies.
    (cd "$d/src" && timeout 600 env CARGO_HOME="$d/cargo-home" CARGO_NET_OFFLINE=true \
        cargo tree --locked --offline --target "$MUSL" -e normal --prefix none --format '{p}') \
        | sed 's/ (.*//; s/ v/@/' | grep -v '^trousseau@' | LC_ALL=C sort -u >"$d/tree.txt"
    # cargo-cyclonedx 0.5.9 reads `cargo metadata`, whose resolve keeps an
    # optional dependency's edge whenever that crate is in the graph at all:
    # env_filter -> regex (its `regex` feature is off) because build.rs's
    # protobuf-codegen uses regex. Components cargo does not compile for
    # the target are removed here (and listed); one that cargo compiles and
    # the SBOM lacks fails the build. The root component's bom-ref, which
    # names the build directory, becomes path+file:///build/src.
    python3 - "$d/src/trousseau_bin.cdx.json" "$d/tree.txt" "$d/src" >"$d/out/trousseau.cdx.json" <<'PY'
import json, sys
sbom_path, tree_path, src = sys.argv[1:]
bom = json.load(open(sbom_path))
tree = set(open(tree_path).read().split())
comps = bom["components"]
have = {f"{c['name']}@{c['version']}" for c in comps}
missing = sorted(tree - have)
if missing:
    sys.exit(f"the SBOM lacks crates cargo compiles for the target: {missing}")
gone = {c["bom-ref"] for c in comps if f"{c['name']}@{c['version']}" not in tree}
extra = sorted(f"{c['name']}@{c['version']}" for c in comps if c["bom-ref"] in gone)
if extra:
    print(f"==> SBOM: removed {len(extra)} crates cargo does not compile for the target: {' '.join(extra)}", file=sys.stderr)
bom["components"] = [c for c in comps if c["bom-ref"] not in gone]
bom["dependencies"] = [
    dict(d, dependsOn=[x for x in d.get("dependsOn", []) if x not in gone])
    for d in bom.get("dependencies", []) if d["ref"] not in gone
]
text = json.dumps(bom, indent=2, ensure_ascii=False) + "\n"
print(text.replace(f"path+file://{src}#", "path+file:///build/src#"), end="")
PY
    python3 - "$d/out/trousseau.cdx.json" <<'PY' | LC_ALL=C sort -u >"$d/sbom.txt"
import json, sys
for c in json.load(open(sys.argv[1]))["components"]:
    print(f"{c['name']}@{c['version']}")
PY
    if ! diff -u "$d/tree.txt" "$d/sbom.txt" >&2; then
        echo "the SBOM's crates are not cargo tree's (-e normal, $MUSL)" >&2
        return 1
    fi
    if grep -q "$d" "$d/out/trousseau.cdx.json"; then
        echo "the SBOM still names the build directory $d" >&2
        return 1
    fi

    # ---- the image
    install -m 0755 "$bin" "$d/context/trousseau"
    debian_ca_bundle "$d/context/ca-certificates.crt"
    chmod 0644 "$d/context/ca-certificates.crt"
    install -m 0644 "$d/src/deploy/image/passwd" "$d/src/deploy/image/group" "$d/context/deploy/image/"
    derive_containerfile "$d/src/Dockerfile" "$version" >"$d/Containerfile"
    containers_env "$d/containers"
    # 10 min bounds: each takes seconds (no pull, nothing run).
    containers_run timeout 600 buildah build --timestamp "$sde" --identity-label=false --format oci \
        --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
        -f "$d/Containerfile" -t "$image_ref" "$d/context" >"$d/buildah.log" 2>&1 \
        || { cat "$d/buildah.log" >&2; return 1; }
    containers_run timeout 600 buildah push -q --disable-compression --format oci "$image_ref" "oci:$d/oci:$image_ref" \
        >>"$d/buildah.log" 2>&1 || { cat "$d/buildah.log" >&2; return 1; }
    # The archive: fixed names, order, owners, modes and times.
    chmod -R u=rwX,go=rX "$d/oci"
    tar --sort=name --mtime="@$sde" --owner=0 --group=0 --numeric-owner --format=ustar \
        -C "$d/oci" -cf "$d/out/trousseau-image.tar" oci-layout index.json blobs

    # ---- what the image holds, and its digests
    python3 - "$d/oci" "$image_ref" "$d/src/Dockerfile" "$version" "$revision" "$created" \
        >"$d/out/image-digests.txt" <<'PY'
import gzip, hashlib, io, json, re, sys, tarfile
oci, ref, dockerfile, version, revision, created = sys.argv[1:]
def blob(digest):
    return f"{oci}/blobs/{digest.replace(':', '/')}"
index = json.load(open(f"{oci}/index.json"))
assert len(index["manifests"]) == 1, index
m = index["manifests"][0]
name = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
assert name == ref, f"OCI archive names {name!r}, not {ref!r}"
manifest = json.load(open(blob(m["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
assert len(manifest["layers"]) == 1, manifest["layers"]
layer = manifest["layers"][0]
assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", layer["mediaType"]
data = gzip.decompress(open(blob(layer["digest"]), "rb").read())
assert "sha256:" + hashlib.sha256(data).hexdigest() == config["rootfs"]["diff_ids"][0], "diff_id"
members = tarfile.open(fileobj=io.BytesIO(data)).getmembers()
files = sorted(t.name.removeprefix("./").rstrip("/") for t in members)
want = sorted(["etc", "etc/group", "etc/passwd", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt",
               "usr", "usr/local", "usr/local/bin", "usr/local/bin/trousseau"])
assert files == want, f"the image holds {files}, expected {want}"
modes = {"usr/local/bin/trousseau": 0o755, "etc/passwd": 0o644, "etc/group": 0o644,
         "etc/ssl/certs/ca-certificates.crt": 0o644}
for t in members:
    name = t.name.removeprefix("./").rstrip("/")
    assert t.uid == 0 and t.gid == 0, f"{name} is owned by {t.uid}:{t.gid}"
    assert t.isdir() or (t.isfile() and t.mode & 0o7777 == modes[name]), f"{name}: mode {oct(t.mode & 0o7777)} type {t.type}"
c = config["config"]
text = open(dockerfile).read()
entry = json.loads(re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)[-1])
cmd = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
assert c.get("User") == "65532:65532", c.get("User")
assert c.get("Entrypoint") == entry, (c.get("Entrypoint"), entry)
assert c.get("Cmd") == cmd, (c.get("Cmd"), cmd)
labels = c.get("Labels", {})
p = "org.opencontainers.image."
for k, v in {"version": version, "revision": revision, "created": created,
             "source": "https://github.com/trousseau-io/trousseau", "licenses": "Apache-2.0"}.items():
    assert labels.get(p + k) == v, (k, labels.get(p + k), v)
assert not [k for k in labels if not k.startswith(p)], labels
print(f"image {ref}")
print(f"manifest {m['digest']}")
print(f"config {manifest['config']['digest']}")
print(f"layer {layer['digest']}")
print(f"layer-bytes-uncompressed {len(data)}")
PY
    local size
    size="$(sed -n 's/^layer-bytes-uncompressed //p' "$d/out/image-digests.txt")"
    if [ "$size" -gt "$MAX_IMAGE_BYTES" ]; then
        echo "the image is $size bytes uncompressed, over the 7 MiB ($MAX_IMAGE_BYTES bytes) limit" >&2
        return 1
    fi

    # ---- the archive loads, under its name, as the same image
    containers_env "$d/load"
    containers_run timeout 300 podman load -q -i "$d/out/trousseau-image.tar" >"$d/load.log" 2>&1 \
        || { cat "$d/load.log" >&2; return 1; }
    local id want_id
    id="$(containers_run timeout 60 podman image inspect --format '{{.Id}}' "$image_ref")"
    want_id="$(sed -n 's/^config sha256://p' "$d/out/image-digests.txt")"
    [ "$id" = "$want_id" ] || { echo "podman load gave image $id, not $want_id" >&2; return 1; }

    (cd "$d/out" && sha256sum trousseau trousseau-image.tar trousseau.cdx.json image-digests.txt >SHA256SUMS)
    echo "vendor ${secs_vendor} build ${secs_build} total $(($(date +%s) - t0))" >"$d/times"
}

report() { # usage: report D LABEL
    local d="$1"
    read -r _ v _ b _ t <"$d/times"
    echo "==> $2: built in ${t}s (vendoring ${v}s, offline static build ${b}s)"
    echo "    binary $(sha256sum "$d/out/trousseau" | cut -d' ' -f1)  $(stat -c %s "$d/out/trousseau") bytes"
    sed 's/^/    /' "$d/out/image-digests.txt"
}

build_once "$top/a"
rm -rf "$out"
mkdir -p "$out"
cp -p "$top/a/out/"* "$out/"
(cd "$out" && sha256sum -c --quiet SHA256SUMS)
report "$top/a" "target/image"
size="$(sed -n 's/^layer-bytes-uncompressed //p' "$out/image-digests.txt")"
echo "    image size uncompressed: $size bytes ($(awk "BEGIN{printf \"%.2f\", $size/1048576}") MiB; limit 7 MiB); archive $(stat -c %s "$out/trousseau-image.tar") bytes"
echo "    SBOM: $(grep -c . "$top/a/sbom.txt") crates (target $MUSL, no build or dev dependencies)"
for f in "$out"/*; do printf '    %10s  %s\n' "$(stat -c %s "$f")" "${f#"$repo"/}"; done

if [ -n "$check" ]; then
    echo "==> --check-reproducible: a second, independent build (own source copy, vendor/, CARGO_HOME, target dir, zig cache, storage)" >&2
    build_once "$top/second-build" "$top/second-build/zig-cache"
    report "$top/second-build" "second build"
    a_bin="$(sha256sum "$top/a/out/trousseau" | cut -d' ' -f1)"
    b_bin="$(sha256sum "$top/second-build/out/trousseau" | cut -d' ' -f1)"
    a_img="$(sed -n 's/^manifest //p' "$top/a/out/image-digests.txt")"
    b_img="$(sed -n 's/^manifest //p' "$top/second-build/out/image-digests.txt")"
    echo "    binary sha256:   $a_bin / $b_bin"
    echo "    image manifest:  $a_img / $b_img"
    if [ "$a_bin" != "$b_bin" ] || [ "$a_img" != "$b_img" ]; then
        echo "NOT REPRODUCIBLE: the two builds differ" >&2
        exit 1
    fi
    if ! diff -u "$top/a/out/SHA256SUMS" "$top/second-build/out/SHA256SUMS" >&2; then
        echo "NOT REPRODUCIBLE: the binary and image digest agree but the bundle's files differ" >&2
        exit 1
    fi
    echo "==> reproducible: both builds gave the same binary, image digest and bundle (SHA256SUMS identical)"
fi
