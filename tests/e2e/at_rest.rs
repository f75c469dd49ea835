//! Check 1, at rest: Secrets created through the API are stored in etcd
//! under trousseau's prefix, no Secret value is anywhere in etcd in any
//! encoding, and every Secret reads back byte-equal. The helpers here
//! (which API, what a stored value says about its key) serve the other
//! checks too.

use crate::kube::{contains, decode_v2, encodings, v1_prefix, v2_prefix, Etcd};
use crate::stack::{figure, Stack, StackOpts, PROVIDER};

/// Which KMS API the apiserver talks to the plugin with.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kms {
    V1,
    V2,
}

impl Kms {
    pub fn opts(self) -> StackOpts {
        match self {
            Kms::V2 => StackOpts::default(),
            Kms::V1 => StackOpts {
                encryption_config: Some("encryption-config-v1.yaml"),
                kms_v1: true,
                ..StackOpts::default()
            },
        }
    }

    /// The API label of the plugin's request metrics.
    pub fn metric_api(self) -> &'static str {
        match self {
            Kms::V2 => "v2",
            Kms::V1 => "v1beta1",
        }
    }

    /// The transit key version a stored Secret value was encrypted under,
    /// after checking the value's whole framing.
    pub fn stored_version(self, raw: &[u8]) -> u32 {
        match self {
            Kms::V2 => {
                let o = decode_v2(raw, PROVIDER);
                assert_eq!(o.encrypted_dek_source_type, 1, "not HKDF_SHA256_XNONCE_AES_GCM_SEED");
                assert!(!o.encrypted_data.is_empty(), "no encrypted data");
                // vault-transit:transit/kube:v<N>@<created>: the version and
                // when Vault created it (the key's incarnation).
                let v = o
                    .key_id
                    .strip_prefix("vault-transit:transit/kube:v")
                    .and_then(|rest| rest.split_once('@'))
                    .filter(|(_, t)| t.parse::<u64>().is_ok_and(|t| t > 0))
                    .and_then(|(n, _)| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected key_id {:?}", o.key_id));
                // The seed itself is a transit ciphertext of the same version.
                let seed = String::from_utf8(o.encrypted_dek_source).expect("seed ciphertext is text");
                assert!(
                    seed.starts_with(&format!("vault:v{v}:")),
                    "seed {seed:.12}… vs key_id {}",
                    o.key_id
                );
                v
            }
            Kms::V1 => {
                // prefix, 2-byte big-endian length, the plugin's cipher, the
                // AES payload.
                let prefix = v1_prefix(PROVIDER);
                let body = raw
                    .strip_prefix(prefix.as_bytes())
                    .unwrap_or_else(|| panic!("stored value does not start with {prefix}"));
                assert!(body.len() > 2, "v1 value too short");
                let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
                assert!(body.len() > 2 + n, "v1 DEK length {n} past the end");
                let cipher = std::str::from_utf8(&body[2..2 + n]).expect("plugin cipher is text");
                let rest = cipher
                    .strip_prefix("vault-transit:transit/kube:vault:v")
                    .unwrap_or_else(|| panic!("unexpected v1 cipher {cipher:.40}"));
                rest.split(':').next().and_then(|n| n.parse().ok()).expect("version")
            }
        }
    }

    pub fn prefix(self) -> String {
        match self {
            Kms::V2 => v2_prefix(PROVIDER),
            Kms::V1 => v1_prefix(PROVIDER),
        }
    }
}

/// Every Secret in etcd, with the key version it is encrypted under;
/// panics on any Secret that is not trousseau's.
pub fn stored_versions(etcd: &Etcd, kms: Kms) -> Vec<(String, u32)> {
    etcd.get_prefix("/registry/secrets/")
        .into_iter()
        .map(|(k, v)| {
            assert!(
                v.starts_with(kms.prefix().as_bytes()),
                "{k} is not stored under {}",
                kms.prefix()
            );
            let ver = kms.stored_version(&v);
            (k, ver)
        })
        .collect()
}

/// No value anywhere in etcd (every key, not only Secrets) holds any of
/// `secrets` raw, in base64 or in hex.
pub fn assert_nothing_in_the_clear(etcd: &Etcd, secrets: &[Vec<u8>]) {
    let all = etcd.get_prefix("");
    assert!(all.len() > 50, "only {} keys in etcd?", all.len());
    for s in secrets {
        for enc in encodings(s) {
            for (k, v) in &all {
                assert!(!contains(v, &enc), "a Secret value is in etcd in the clear, under {k}");
            }
        }
    }
}

/// The at-rest check for either API.
pub fn at_rest(kms: Kms) {
    let s = Stack::start(&format!("at-rest-{kms:?}"), kms.opts());
    let api = &s.apiserver.api;
    api.create_namespace("team-a");
    let values = crate::secret_values(12);
    let mut made = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let ns = if i % 2 == 0 { "default" } else { "team-a" };
        let name = format!("at-rest-{i}");
        api.create_secret_ok(ns, &name, &[("value", v), ("copy", v)]);
        made.push((ns, name, v));
    }

    let stored = stored_versions(&s.etcd, kms);
    for (ns, name, _) in &made {
        let key = format!("/registry/secrets/{ns}/{name}");
        let (_, ver) = stored
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} not in etcd"));
        assert_eq!(*ver, 1, "{key}");
    }
    assert_nothing_in_the_clear(&s.etcd, &values);

    for (ns, name, v) in &made {
        assert_eq!(&api.secret_value(ns, name, "value"), *v, "{ns}/{name} read back");
        assert_eq!(&api.secret_value(ns, name, "copy"), *v, "{ns}/{name} read back");
    }
    let api_label = kms.metric_api();
    let enc = s.plugin_metric(&format!(
        "trousseau_kms_requests_total{{api=\"{api_label}\",operation=\"encrypt\",outcome=\"ok\"}}"
    ));
    figure(&format!(
        "at rest ({kms:?}): {} Secrets stored under {}, read back byte-equal; plugin Encrypts served: {enc}",
        made.len(),
        kms.prefix()
    ));
    match kms {
        // v2 encrypts a DEK seed, not each object: a handful at most.
        Kms::V2 => assert!((1.0..=3.0).contains(&enc), "v2 Encrypts: {enc}"),
        // v1 encrypts a new DEK for every write.
        Kms::V1 => assert!(enc >= made.len() as f64, "v1 Encrypts: {enc}"),
    }
}

#[test]
fn check1_at_rest_v2() {
    at_rest(Kms::V2);
}
