# Least privilege for trousseau serve with --transit-mount transit and
# --transit-key kube: encrypt and decrypt, and read of the key's metadata
# (its versions' creation times, which key ids carry so that a key deleted
# and created again never repeats them; a read of transit/keys/<key> returns
# no key material). No "create" (a mistyped key name then fails instead of
# silently creating a new key), no rotate, no delete.
# Attach it together with Vault's "default" policy (the default unless a role
# sets token_no_default_policy), which lets the plugin look up and renew its
# own token. During a key migration (--decrypt-key old), also grant "update"
# on transit/decrypt/old.
#
# deploy/vault/setup.sh writes exactly this policy (for its default mount and
# key) as policy "trousseau"; tests/integration/deploy.rs checks they agree.
path "transit/encrypt/kube" {
  capabilities = ["update"]
}
path "transit/decrypt/kube" {
  capabilities = ["update"]
}
path "transit/keys/kube" {
  capabilities = ["read"]
}
