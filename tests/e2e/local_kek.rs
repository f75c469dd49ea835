//! Check 9, the local KEK (`--local-kek`) with the real kube-apiserver:
//! the apiserver takes the plugin's `local-kek.trousseau.io` annotation
//! (v2) and the `vault-transit-kek:` cipher (v1), stores them, and sends
//! them back: every Secret reads back after the plugin and the apiserver
//! restart (both caches cold) and again once the flag is turned off.

use crate::at_rest::{assert_nothing_in_the_clear, Kms};
use crate::kube::{decode_v2, v1_prefix, Etcd};
use crate::stack::{figure, Stack, StackOpts, PROVIDER};

/// Secrets written under the local KEK.
const SECRETS: usize = 12;
/// AES-GCM's nonce and tag around a DEK sealed under the local KEK.
const SEAL_OVERHEAD: usize = 12 + 16;
/// The v1 cipher of a DEK sealed under a local KEK of key version 1.
const V1_LOCAL: &str = "vault-transit-kek:transit/kube:vault:v1:";

/// What the stored value of `ns/name` says: sealed under a local KEK or not.
fn sealed_locally(etcd: &Etcd, kms: Kms, ns: &str, name: &str) -> bool {
    let raw = etcd.secret_raw(ns, name);
    match kms {
        Kms::V2 => {
            let o = decode_v2(&raw, PROVIDER);
            assert!(
                o.key_id.starts_with("vault-transit:transit/kube:v1@"),
                "key_id {}",
                o.key_id
            );
            if o.encrypted_dek_source.starts_with(b"vault:v1:") {
                assert_eq!(o.annotations, 0, "a transit seed with annotations");
                return false;
            }
            // The apiserver's 32-byte seed, sealed; the wrapped KEK beside it.
            assert_eq!(o.encrypted_dek_source.len(), 32 + SEAL_OVERHEAD, "sealed seed");
            assert_eq!(o.annotations, 1, "the wrapped-KEK annotation is stored");
            true
        }
        Kms::V1 => {
            let body = raw
                .strip_prefix(v1_prefix(PROVIDER).as_bytes())
                .unwrap_or_else(|| panic!("{ns}/{name} is not trousseau's"));
            let n = match body {
                [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                _ => panic!("{ns}/{name}: v1 value too short"),
            };
            let cipher = body.get(2..2 + n).expect("v1 DEK within the value");
            if cipher.starts_with(b"vault-transit:transit/kube:vault:v1:") {
                return false;
            }
            assert!(
                cipher.starts_with(V1_LOCAL.as_bytes()),
                "unexpected v1 cipher {:.40}",
                String::from_utf8_lossy(cipher)
            );
            true
        }
    }
}

fn local_kek(kms: Kms) {
    let mut s = Stack::start(
        &format!("local-kek-{kms:?}"),
        StackOpts {
            plugin_args: &["--local-kek"],
            ..kms.opts()
        },
    );
    let values = crate::secret_values(SECRETS);
    let names: Vec<String> = (0..SECRETS).map(|i| format!("local-kek-{i}")).collect();
    for (name, v) in names.iter().zip(&values) {
        s.apiserver.api.create_secret_ok("default", name, &[("v", v)]);
    }
    for name in &names {
        assert!(
            sealed_locally(&s.etcd, kms, "default", name),
            "{name} not sealed locally"
        );
    }
    assert_nothing_in_the_clear(&s.etcd, &values);
    let read_all = |s: &Stack, what: &str| {
        for (name, v) in names.iter().zip(&values) {
            assert_eq!(&s.apiserver.api.secret_value("default", name, "v"), v, "{name} {what}");
        }
    };
    read_all(&s, "as written");

    // Both caches cold: a new plugin process (no KEK) and a new apiserver
    // (no DEK), which sends the stored annotations back with each Decrypt.
    s.plugin = None;
    s.start_plugin();
    let restart = s.restart_apiserver_with(kms.opts().encryption_config);
    read_all(&s, "after the plugin and the apiserver restarted");
    let unwraps = s.plugin_metric("trousseau_local_kek_unwraps_total");
    // One KEK sealed them all; the apiserver's concurrent reads of them
    // wait for one unwrap.
    assert_eq!(unwraps, 1.0, "KEK unwraps by the restarted plugin");
    figure(&format!(
        "local KEK, {kms:?}: {SECRETS} Secrets read back after both restarted ({:.1} s to ready), {unwraps} KEK unwraps",
        restart.as_secs_f64()
    ));

    // The flag turned off: what was sealed locally still reads, and new
    // writes are transit's again.
    s.plugin = None;
    s.start_plugin_with(&[]);
    s.restart_apiserver_with(kms.opts().encryption_config);
    read_all(&s, "with --local-kek off");
    let fresh = crate::secret_values(1);
    s.apiserver
        .api
        .create_secret_ok("default", "after-off", &[("v", &fresh[0])]);
    assert!(!sealed_locally(&s.etcd, kms, "default", "after-off"));
    assert_eq!(s.apiserver.api.secret_value("default", "after-off", "v"), fresh[0]);
}

#[test]
fn check9_local_kek_v2() {
    local_kek(Kms::V2);
}

#[test]
fn check9_local_kek_v1() {
    local_kek(Kms::V1);
}
