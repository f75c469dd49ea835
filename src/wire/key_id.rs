//! The KMS v2 key id: `vault-transit:<mount>/<key>:v<N>`. It parses only in
//! the canonical form [`KeyVersion::key_id`] writes: whatever
//! [`parse_key_id`] accepts, `key_id()` turns back into the same string.

use super::names::{parse_key_path, KeyName};
use super::{check_size, WireError};

/// The prefix of key ids and v1 ciphers.
pub const KEY_ID_PREFIX: &str = "vault-transit:";

/// One version of a transit key: what a KMS v2 key id names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub name: KeyName,
    pub version: u64,
}

impl KeyVersion {
    pub fn key_id(&self) -> String {
        format!("{KEY_ID_PREFIX}{}:v{}", self.name, self.version)
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
    let version =
        parse_version(ver).ok_or_else(|| WireError::BadKeyId("the version is not a positive number".into()))?;
    let name = parse_key_path(name).ok_or_else(|| WireError::BadKeyId("no valid <mount>/<key> name".into()))?;
    Ok(KeyVersion { name, version })
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
        };
        assert_eq!(kv.key_id(), "vault-transit:kms/transit/kube-1.a:v42");
        assert_eq!(parse_key_id(&kv.key_id()), Ok(kv));
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
            "vault-transit:kms/transit/kube-1.a:v42",
        ];
        let mut accepted = 0;
        for i in 0..50_000 {
            let mut s: Vec<u8> = base[i % 2].as_bytes().to_vec();
            for _ in 0..1 + i % 3 {
                let pos = (rng.next() as usize) % (s.len() + 1);
                let alphabet = b"/: v0123456789-_.ak";
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
