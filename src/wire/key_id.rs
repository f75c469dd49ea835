//! The KMS v2 key id: `vault-transit:<mount>/<key>:v<N>@<created>`, where
//! `<created>` is the Unix time (seconds) at which Vault created version N
//! of that key. The time makes key ids unique per key *incarnation*: a key
//! deleted and created again under the same name starts again at v1, and
//! without it its key ids would repeat, so the apiserver would go on using
//! a seed encrypted under the dead key. Ids without `@<created>` (what
//! earlier releases wrote, and what is sent when the key's metadata cannot
//! be read) are still accepted. It parses only in the canonical form
//! [`KeyVersion::key_id`] writes: whatever [`parse_key_id`] accepts,
//! `key_id()` turns back into the same string.

use super::names::{parse_key_path, KeyName};
use super::{check_size, WireError};

/// The prefix of key ids and v1 ciphers.
pub const KEY_ID_PREFIX: &str = "vault-transit:";

/// One version of a transit key: what a KMS v2 key id names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub name: KeyName,
    pub version: u64,
    /// When Vault created this version (Unix seconds), if known.
    pub created: Option<u64>,
}

impl KeyVersion {
    pub fn key_id(&self) -> String {
        match self.created {
            Some(t) => format!("{KEY_ID_PREFIX}{}:v{}@{t}", self.name, self.version),
            None => format!("{KEY_ID_PREFIX}{}:v{}", self.name, self.version),
        }
    }
}

/// Parses a key id produced by [`KeyVersion::key_id`].
pub fn parse_key_id(raw: &str) -> Result<KeyVersion, WireError> {
    check_size(raw.as_bytes(), "key_id", crate::limits::V2_MAX_KEY_ID)?;
    let rest = raw
        .strip_prefix(KEY_ID_PREFIX)
        .ok_or_else(|| WireError::BadKeyId(format!("it does not start with \"{KEY_ID_PREFIX}\"")))?;
    let (name, ver) = rest
        .rsplit_once(":v")
        .ok_or_else(|| WireError::BadKeyId("no \":v<N>\" version suffix".into()))?;
    let (ver, created) = match ver.split_once('@') {
        Some((v, t)) => {
            let t = parse_version(t)
                .ok_or_else(|| WireError::BadKeyId("the creation time after '@' is not a positive number".into()))?;
            (v, Some(t))
        }
        None => (ver, None),
    };
    let version =
        parse_version(ver).ok_or_else(|| WireError::BadKeyId("the version is not a positive number".into()))?;
    let name = parse_key_path(name).ok_or_else(|| WireError::BadKeyId("no valid <mount>/<key> name".into()))?;
    Ok(KeyVersion { name, version, created })
}

/// A key version: digits, no leading zero, at least 1, at most 19 digits.
pub(super) fn parse_version(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::names::tests::name;

    #[test]
    fn key_id_round_trips() {
        let kv = KeyVersion {
            name: name(),
            version: 42,
            created: Some(1_796_235_632),
        };
        assert_eq!(kv.key_id(), "vault-transit:kms/transit/kube-1.a:v42@1796235632");
        assert_eq!(parse_key_id(&kv.key_id()), Ok(kv.clone()));
        // The form without a creation time (earlier releases) still parses.
        let old = KeyVersion { created: None, ..kv };
        assert_eq!(old.key_id(), "vault-transit:kms/transit/kube-1.a:v42");
        assert_eq!(parse_key_id(&old.key_id()), Ok(old));
    }
    #[test]
    fn key_id_rejects_foreign_and_malformed() {
        for bad in [
            "",
            "vault:v1:abc",
            "vault-transit:",
            "vault-transit:transit/kube",
            "vault-transit:transit/kube:v",
            "vault-transit:transit/kube:v0",
            "vault-transit:transit/kube:v01",
            "vault-transit:transit/kube:v-1",
            "vault-transit:transit/kube:v99999999999999999999",
            "vault-transit:transit/kube:v1@",
            "vault-transit:transit/kube:v1@0",
            "vault-transit:transit/kube:v1@017",
            "vault-transit:transit/kube:v1@-5",
            "vault-transit:transit/kube:v1@1@2",
            "vault-transit:transit/kube:v@1796235632",
            "vault-transit:transit/kube@1796235632:v1",
            "vault-transit:kube:v1",
            "vault-transit:/kube:v1",
            "vault-transit:transit/:v1",
            "vault-transit:trans it/kube:v1",
            "aws:arn:...",
        ] {
            assert!(parse_key_id(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("vault-transit:{}/k:v1", "a".repeat(2000));
        assert!(matches!(parse_key_id(&long), Err(WireError::TooLong { .. })));
    }

    /// The lenient forms the old parser took (it trimmed spaces and
    /// slashes) are refused: a key id parses only in its canonical form.
    #[test]
    fn lenient_forms_are_refused() {
        for bad in [
            "vault-transit:/transit/ kube :v1",
            "vault-transit: transit/kube:v1",
            "vault-transit:transit/kube :v1",
            "vault-transit:/transit/kube:v1",
            "vault-transit:transit//kube:v1",
            "vault-transit:transit/kube:v1 ",
            " vault-transit:transit/kube:v1",
            "vault-transit:transit/kube:v+1",
        ] {
            assert!(parse_key_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Round trip over many mutations of valid key ids: whatever parses
    /// is canonical, `key_id(parse(s)) == s`.
    #[test]
    fn accepted_key_ids_are_canonical() {
        let mut rng = crate::testutil::Rng::new(0x51ed_2701_a5f1_33c7);
        let base = [
            "vault-transit:transit/kube:v3",
            "vault-transit:kms/transit/kube-1.a:v42@1796235632",
        ];
        let mut accepted = 0;
        for i in 0..50_000 {
            let mut s: Vec<u8> = base[i % 2].as_bytes().to_vec();
            for _ in 0..1 + i % 3 {
                let pos = (rng.next() as usize) % (s.len() + 1);
                let alphabet = b"/: v0123456789-_.ak@";
                let c = alphabet[(rng.next() as usize) % alphabet.len()];
                match rng.next() % 3 {
                    0 if pos < s.len() => {
                        s.remove(pos);
                    }
                    1 if pos < s.len() => s[pos] = c,
                    _ => s.insert(pos, c),
                }
            }
            let Ok(text) = String::from_utf8(s) else { continue };
            if let Ok(kv) = parse_key_id(&text) {
                accepted += 1;
                assert_eq!(kv.key_id(), text, "non-canonical key id accepted");
            }
        }
        assert!(
            accepted > 100,
            "only {accepted} mutations parsed; the test explores too little"
        );
    }
}
