#!/usr/bin/env bash
# Air-gapped builds, step 1 (on a machine that reaches crates.io): copies the
# source of every dependency in Cargo.lock into VENDOR_DIR with
# `cargo vendor` and writes the source replacement cargo prints to
# CONFIG_FILE, so that later builds read only VENDOR_DIR. Carry the work
# tree with vendor/ (and .cargo/config.toml) to the offline machine, or
# build the image from it: the Dockerfile builds --offline when vendor/ is
# in the build context.
# usage: scripts/vendor.sh [VENDOR_DIR [CONFIG_FILE]]
#        defaults: vendor  .cargo/config.toml   (both ignored by git)
# Undo: rm -r vendor .cargo/config.toml
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-vendor}"
config="${2:-.cargo/config.toml}"
if [ -e "$config" ] && ! grep -q 'vendored-sources' "$config"; then
    echo "$config exists and is not a vendoring config; refusing to overwrite it" >&2
    exit 1
fi

snippet="$(mktemp)"
trap 'rm -f "$snippet"' EXIT
# --locked: exactly Cargo.lock's versions. cargo vendor prints the config
# snippet on stdout and its progress on stderr.
cargo vendor --locked --versioned-dirs "$dir" >"$snippet"
mkdir -p "$(dirname "$config")"
{
    echo "# Written by scripts/vendor.sh: build from $dir only (air-gapped)."
    cat "$snippet"
} >"$config"
echo "==> $(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l) crates in $dir ($(du -sh "$dir" | cut -f1)); source replacement written to $config:" >&2
cat "$config" >&2
