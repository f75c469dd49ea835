# syntax=docker/dockerfile:1
#
# Trousseau image: a fully static musl binary, FROM scratch, with only
# /etc/passwd and /etc/group (`nonroot`, 65532) and Debian's CA bundle
# beside it. No shell, no libc, no package manager.
#
#   docker build -t ghcr.io/trousseau-io/trousseau:0.1.0 \
#       --build-arg REVISION="$(git rev-parse HEAD)" \
#       --build-arg CREATED="$(date -u -d @"$(git log -1 --format=%ct)" +%Y-%m-%dT%H:%M:%SZ)" .
#
# Without a registry: scripts/build-image.sh builds the same final stage
# (it derives its Containerfile from the text of the stage below, so the two
# cannot drift) around a binary it builds from vendored sources with no
# network. See docs/building.md, "Air-gapped image".
#
# Air-gapped: run scripts/vendor.sh first (on a machine with crates.io); the
# build context then carries vendor/ and the build runs `cargo --offline`
# from it, with no registry access. Without vendor/ it fetches from
# crates.io. See README.md, "Building".

# ---- builder: native musl toolchain (Alpine's gcc/g++ target musl, so gRPC
# core's C++ and libstdc++ link statically; no zig or cross compiler needed).
FROM rust:1.95-alpine AS builder
# build-base: gcc, g++, make, musl-dev, binutils; cmake for gRPC core;
# linux-headers for gRPC's and c-ares' <linux/...> includes. No perl, Go or
# protoc: gRPC is built without BoringSSL and the protos are compiled by a
# pure-Rust build.rs.
# hadolint ignore=DL3018
RUN apk add --no-cache build-base cmake linux-headers

WORKDIR /src
COPY . .

# The same release profile as any other build (Cargo.toml). Explicit
# --target keeps +crt-static off build scripts and proc macros (a static
# musl host cannot load a proc-macro); rustup's musl target links statically
# by default, the flag only makes sure. abseil needs off64_t, which musl
# >= 1.2.4 declares only with _LARGEFILE64_SOURCE. With vendor/ in the
# context (scripts/vendor.sh), sources come from it and cargo runs
# --offline. The readelf check refuses a binary that would need a loader
# or a shared library.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    target="$(uname -m)-unknown-linux-musl"; \
    set --; \
    if [ -d vendor ]; then \
        mkdir -p .cargo; \
        [ -f .cargo/config.toml ] || printf '%s\n' \
            '[source.crates-io]' 'replace-with = "vendored-sources"' \
            '[source.vendored-sources]' 'directory = "vendor"' > .cargo/config.toml; \
        set -- --offline; \
    fi; \
    CFLAGS="-D_LARGEFILE64_SOURCE" CXXFLAGS="-D_LARGEFILE64_SOURCE" \
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --locked "$@" --release --target "$target" --bin trousseau; \
    cp "target/$target/release/trousseau" /trousseau; \
    case "$(readelf -lW -dW /trousseau)" in \
        *INTERP* | *NEEDED*) echo "trousseau is not static" >&2; exit 1 ;; \
    esac; \
    /trousseau --version

# ---- CA bundle: Debian's ca-certificates, as update-ca-certificates writes it.
FROM debian:12-slim AS certs
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- runtime: FROM scratch. No shell, no libc, no package manager.
# scripts/build-image.sh builds this stage, from this text, without a
# registry: keep it to ARG, COPY, LABEL, USER, ENTRYPOINT and CMD, and keep
# each COPY --from's source where that script maps it (it fails otherwise).
FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# /usr/local/bin, where deploy/'s manifests and docs call it. The binary
# verifies Vault with its bundled Mozilla roots or --vault-cacert; the CA
# bundle (/etc/ssl/certs) is there for tools and mounts.
COPY --from=builder --chmod=0755 /trousseau /usr/local/bin/trousseau
COPY --from=certs --chmod=0644 /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chmod=0644 deploy/image/passwd deploy/image/group /etc/
LABEL org.opencontainers.image.title="trousseau" \
      org.opencontainers.image.description="Kubernetes KMS plugin backed by Vault/OpenBao transit" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/trousseau-io/trousseau" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid/gid 65532 (`nonroot`), numeric so that a pod's runAsNonRoot can be
# checked by the kubelet. The socket's directory must be writable by that uid: a
# Deployment can use an emptyDir or a hostPath chowned to 65532 (or
# fsGroup). A static pod that shares the host's /var/run/kmsplugin with
# kube-apiserver usually runs as root instead (securityContext.runAsUser: 0);
# the socket is created mode 0600, which root can always reach.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/trousseau"]
CMD ["serve", "--config", "/etc/trousseau/config.json"]
