# Least privilege for trousseau serve with --transit-mount transit and
# --transit-key kube: encrypt and decrypt only. No "create" (a mistyped key
# name then fails instead of silently creating a new key), no read, no delete.
path "transit/encrypt/kube" {
  capabilities = ["update"]
}
path "transit/decrypt/kube" {
  capabilities = ["update"]
}
