#!/usr/bin/env bash
# Prepares Vault or OpenBao for trousseau: the transit engine and its key,
# the least-privilege policy (the same as deploy/vault/policy.hcl), an AppRole
# role, and the role_id / secret_id files the plugin reads.
#
# Idempotent: run it again at any time. It never rotates, recreates or
# deletes the transit key, keeps a secret_id file that still logs in, and
# only rewrites the policy and the role with the values given.
#
# Needs the `bao` or `vault` CLI and an admin token in the environment
# (BAO_ADDR/BAO_TOKEN or VAULT_ADDR/VAULT_TOKEN, plus *_CACERT etc. as the
# CLI reads them). Neither the token nor the secret_id is ever printed.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/vault/setup.sh [OPTIONS]

Sets up Vault/OpenBao for trousseau (safe to run again):
  1. enables the transit engine at --transit-mount (if missing)
  2. creates transit key --key of --key-type (if missing; never rotated or replaced)
  3. writes policy --policy: "update" on <mount>/encrypt/<key> and
     <mount>/decrypt/<key> (and <mount>/decrypt/<old> per --decrypt-key), "read"
     on <mount>/keys/<key> (metadata: version creation times), nothing else
  4. enables AppRole at --approle-mount (if missing)
  5. writes role --role with that policy, token_ttl, token_max_ttl, secret_id_ttl
  6. writes <out>/role-id and <out>/secret-id (mode 0600); an existing secret-id
     that still logs in is kept unless --rotate-secret-id
  7. logs in with those files and encrypts and decrypts a probe value (skip: --no-verify)

OPTIONS:
  --transit-mount PATH   transit mount path                 [default: transit]
  --key NAME             transit key                        [default: kube]
  --key-type TYPE        type for a new key                 [default: aes256-gcm96]
  --decrypt-key NAME     also grant decrypt on an older key (key migration); repeatable
  --policy NAME          ACL policy name                    [default: trousseau]
  --approle-mount PATH   AppRole mount path                 [default: approle]
  --role NAME            AppRole role name                  [default: trousseau]
  --token-ttl DUR        token_ttl of the role              [default: 1h]
  --token-max-ttl DUR    token_max_ttl of the role          [default: 24h]
  --secret-id-ttl DUR    secret_id_ttl of the role; 0 = never expires
                         (then rotate it yourself)          [default: 0]
  --out DIR              where role-id and secret-id go     [default: ./trousseau-credentials]
  --rotate-secret-id     write a new secret-id and destroy the previous one
  --no-verify            skip the login + encrypt/decrypt check
  --cli PATH             bao or vault binary                [default: bao if found, else vault]
  -h, --help             this help

ENVIRONMENT:
  BAO_ADDR / VAULT_ADDR, BAO_TOKEN / VAULT_TOKEN (a token that may manage mounts,
  policies and auth roles), BAO_CACERT / VAULT_CACERT, BAO_NAMESPACE / VAULT_NAMESPACE.
EOF
}

transit_mount=transit
key=kube
key_type=aes256-gcm96
decrypt_keys=()
policy=trousseau
approle_mount=approle
role=trousseau
token_ttl=1h
token_max_ttl=24h
secret_id_ttl=0
out=./trousseau-credentials
rotate=""
verify=1
cli=""

die() {
    echo "setup.sh: $*" >&2
    exit 1
}

need_value() {
    [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --transit-mount) need_value "$@"; transit_mount="$2"; shift 2 ;;
        --key) need_value "$@"; key="$2"; shift 2 ;;
        --key-type) need_value "$@"; key_type="$2"; shift 2 ;;
        --decrypt-key) need_value "$@"; decrypt_keys+=("$2"); shift 2 ;;
        --policy) need_value "$@"; policy="$2"; shift 2 ;;
        --approle-mount) need_value "$@"; approle_mount="$2"; shift 2 ;;
        --role) need_value "$@"; role="$2"; shift 2 ;;
        --token-ttl) need_value "$@"; token_ttl="$2"; shift 2 ;;
        --token-max-ttl) need_value "$@"; token_max_ttl="$2"; shift 2 ;;
        --secret-id-ttl) need_value "$@"; secret_id_ttl="$2"; shift 2 ;;
        --out) need_value "$@"; out="$2"; shift 2 ;;
        --rotate-secret-id) rotate=1; shift ;;
        --no-verify) verify=""; shift ;;
        --cli) need_value "$@"; cli="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

# Names end up in policy paths: keep them to what Vault accepts there.
for v in "$transit_mount" "$approle_mount"; do
    [[ "$v" =~ ^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$ ]] || die "bad mount path \"$v\""
done
for v in "$key" "$policy" "$role" ${decrypt_keys[@]+"${decrypt_keys[@]}"}; do
    [[ "$v" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad name \"$v\" (letters, digits, _ . - only)"
done
for v in ${decrypt_keys[@]+"${decrypt_keys[@]}"}; do
    [ "$v" != "$key" ] || die "--decrypt-key $v is the --key itself"
done

# The CLI, and the environment it reads: bao reads BAO_* (and VAULT_*), vault
# only VAULT_*; fill in whichever family is missing so either naming works.
if [ -z "$cli" ]; then
    cli="$(command -v bao || command -v vault || true)"
    [ -n "$cli" ] || die "neither bao nor vault is on PATH (or pass --cli PATH)"
fi
[ -x "$cli" ] || cli="$(command -v "$cli" || true)"
[ -n "$cli" ] && [ -x "$cli" ] || die "--cli: not an executable"
for v in ADDR TOKEN CACERT CAPATH NAMESPACE CLIENT_CERT CLIENT_KEY TLS_SERVER_NAME SKIP_VERIFY; do
    b="BAO_$v" w="VAULT_$v"
    if [ -n "${!b:-}" ] && [ -z "${!w:-}" ]; then export "$w=${!b}"; fi
    if [ -n "${!w:-}" ] && [ -z "${!b:-}" ]; then export "$b=${!w}"; fi
done
[ -n "${VAULT_ADDR:-}" ] || die "set BAO_ADDR or VAULT_ADDR (e.g. https://vault.example:8200)"

v() { "$cli" "$@"; }
step() { echo "==> $*"; }

# `read -field=type <path>`: prints the type, "" when nothing is there,
# and stops on any other error (a 403 must not look like "missing").
mount_type() {
    local err rc=0 t
    err="$(mktemp)"
    t="$(v read -field=type "$1" 2>"$err")" || rc=$?
    if [ "$rc" -ne 0 ]; then
        if grep -qiE 'no secret engine mount|no auth engine|no value found|not found' "$err"; then
            rm -f "$err"
            echo ""
            return 0
        fi
        cat "$err" >&2
        rm -f "$err"
        die "cannot read $1"
    fi
    rm -f "$err"
    echo "$t"
}

# 1. transit engine
t="$(mount_type "sys/mounts/$transit_mount")"
if [ -z "$t" ]; then
    v secrets enable -path="$transit_mount" transit >/dev/null
    step "enabled transit at $transit_mount/"
elif [ "$t" != transit ]; then
    die "$transit_mount/ is a $t mount, not transit"
else
    step "transit already enabled at $transit_mount/"
fi

# 2. transit key: created if missing, never touched otherwise
t="$(mount_type "$transit_mount/keys/$key")"
if [ -z "$t" ]; then
    v write -f "$transit_mount/keys/$key" type="$key_type" >/dev/null
    step "created transit key $transit_mount/keys/$key ($key_type)"
else
    [ "$t" = "$key_type" ] || echo "warning: existing key $key has type $t, not $key_type (left as it is)" >&2
    step "transit key $transit_mount/keys/$key exists ($t, version $(v read -field=latest_version "$transit_mount/keys/$key")); left as it is"
fi

# 3. policy: update on encrypt/decrypt of the key, read of its metadata,
# nothing else. Same text as deploy/vault/policy.hcl for the defaults.
policy_hcl() {
    printf 'path "%s/encrypt/%s" {\n  capabilities = ["update"]\n}\n' "$transit_mount" "$key"
    printf 'path "%s/decrypt/%s" {\n  capabilities = ["update"]\n}\n' "$transit_mount" "$key"
    printf 'path "%s/keys/%s" {\n  capabilities = ["read"]\n}\n' "$transit_mount" "$key"
    local k
    for k in ${decrypt_keys[@]+"${decrypt_keys[@]}"}; do
        printf 'path "%s/decrypt/%s" {\n  capabilities = ["update"]\n}\n' "$transit_mount" "$k"
    done
}
policy_hcl | v policy write "$policy" - >/dev/null
step "wrote policy $policy (update on $transit_mount/encrypt/$key and $transit_mount/decrypt/$key${decrypt_keys[*]+ plus decrypt of ${decrypt_keys[*]}}, read on $transit_mount/keys/$key)"

# 4. AppRole
t="$(mount_type "sys/auth/$approle_mount")"
if [ -z "$t" ]; then
    v auth enable -path="$approle_mount" approle >/dev/null
    step "enabled AppRole at auth/$approle_mount/"
elif [ "$t" != approle ]; then
    die "auth/$approle_mount/ is a $t auth method, not approle"
else
    step "AppRole already enabled at auth/$approle_mount/"
fi

# 5. role (a write replaces the role's settings: idempotent)
role_path="auth/$approle_mount/role/$role"
v write "$role_path" token_policies="$policy" token_ttl="$token_ttl" token_max_ttl="$token_max_ttl" \
    secret_id_ttl="$secret_id_ttl" >/dev/null
step "wrote role $role_path (policies default,$policy; token_ttl=$token_ttl token_max_ttl=$token_max_ttl secret_id_ttl=$secret_id_ttl)"

# 6. credential files, mode 0600, replaced atomically (the plugin re-reads the
# secret_id at every login, so a rotated one is picked up without a restart).
umask 077
mkdir -p "$out"
write_file() { # write_file NAME: stdin -> $out/NAME via a temp file + rename
    local tmp
    tmp="$(mktemp "$out/.$1.XXXXXX")"
    cat >"$tmp"
    [ -s "$tmp" ] || { rm -f "$tmp"; die "empty $1 from Vault"; }
    chmod 0600 "$tmp"
    mv -f "$tmp" "$out/$1"
}
v read -field=role_id "$role_path/role-id" | write_file role-id
step "wrote $out/role-id"

secret_id_valid() { # the file holds a secret_id this role still knows
    [ -s "$out/secret-id" ] || return 1
    local info
    # Captured first: `v ... | grep -q` under pipefail fails whenever grep
    # exits before the CLI has written everything (SIGPIPE).
    info="$(v write -format=json "$role_path/secret-id/lookup" secret_id=@"$out/secret-id" 2>/dev/null)" || return 1
    [[ "$info" == *'"secret_id_accessor"'* ]]
}
old_accessor=""
if [ -n "$rotate" ] && secret_id_valid; then
    old_accessor="$(v write -field=secret_id_accessor "$role_path/secret-id/lookup" secret_id=@"$out/secret-id")"
fi
if [ -z "$rotate" ] && secret_id_valid; then
    step "kept $out/secret-id (still valid)"
else
    v write -f -field=secret_id "$role_path/secret-id" | write_file secret-id
    step "wrote a new $out/secret-id"
    if [ -n "$old_accessor" ]; then
        v write "$role_path/secret-id-accessor/destroy" secret_id_accessor="$old_accessor" >/dev/null
        step "destroyed the previous secret_id"
    fi
fi

# 7. check: log in as the plugin would and round-trip a probe value.
if [ -n "$verify" ]; then
    token="$(v write -field=token "auth/$approle_mount/login" role_id=@"$out/role-id" secret_id=@"$out/secret-id")" ||
        die "login with $out/role-id and $out/secret-id failed"
    probe="dHJvdXNzZWF1LXNldHVwLXByb2Jl" # base64 of "trousseau-setup-probe"
    ct="$(VAULT_TOKEN="$token" BAO_TOKEN="$token" v write -field=ciphertext "$transit_mount/encrypt/$key" plaintext="$probe")" ||
        die "the role's token cannot encrypt with $transit_mount/keys/$key"
    pt="$(VAULT_TOKEN="$token" BAO_TOKEN="$token" v write -field=plaintext "$transit_mount/decrypt/$key" ciphertext="$ct")" ||
        die "the role's token cannot decrypt with $transit_mount/keys/$key"
    VAULT_TOKEN="$token" BAO_TOKEN="$token" v token revoke -self >/dev/null || true
    [ "$pt" = "$probe" ] || die "decrypt returned another value"
    step "verified: AppRole login, encrypt and decrypt with $transit_mount/keys/$key"
fi

cat <<EOF
Done. Copy $out/role-id and $out/secret-id to /etc/trousseau/ on each control-plane
node (mode 0600, owner root) and point the plugin at them:
  "auth-method": "approle", "approle-role-id-file": "/etc/trousseau/role-id",
  "approle-secret-id-file": "/etc/trousseau/secret-id", "transit-mount": "$transit_mount",
  "transit-key": "$key"
EOF
