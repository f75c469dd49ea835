//! What Trousseau hands the apiserver, and how it reads it back: the key id
//! (KMS v2), Vault's `vault:vN:` ciphertexts, and the v1 cipher framing.
//!
//! Formats (stable: they are stored in etcd):
//! - key id: `vault-transit:<mount>/<key>:v<N>`, e.g. `vault-transit:transit/kube:v3`.
//!   Names no secret, changes exactly when the transit key version changes.
//! - v2 ciphertext: Vault's transit ciphertext as returned, `vault:v<N>:<base64>`.
//! - v1 cipher: `vault-transit:<mount>/<key>:` followed by the Vault
//!   ciphertext, so each stored DEK names its key. A bare `vault:v<N>:` cipher
//!   (as older plugins stored) is read as belonging to the configured key.
//!
//! Mount paths and key names never contain `:` (config refuses it), so the
//! parsing below is unambiguous. Every parser here returns an error naming
//! the problem; none panics on any input.

use std::fmt;

/// The prefix of key ids and v1 ciphers.
pub const KEY_ID_PREFIX: &str = "vault-transit:";
const VAULT_PREFIX: &str = "vault:v";

/// A transit key: mount path and key name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyName {
    pub mount: String,
    pub key: String,
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mount, self.key)
    }
}

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

/// Why bytes from the apiserver are not a ciphertext or key id of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    Empty(&'static str),
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    NotUtf8(&'static str),
    BadKeyId(String),
    /// Neither `vault:vN:` nor our v1 framing.
    NotOurs(&'static str),
    BadVersion(&'static str),
    BadBase64,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Empty(w) => write!(f, "{w} is empty"),
            EnvelopeError::TooLong { what, len, max } => write!(f, "{what} is {len} bytes, more than {max}"),
            EnvelopeError::NotUtf8(w) => write!(f, "{w} is not text; it was not produced by trousseau"),
            EnvelopeError::BadKeyId(why) => write!(f, "key_id is not a trousseau key id ({why})"),
            EnvelopeError::NotOurs(w) => write!(
                f,
                "{w} does not start with \"vault:v<N>:\" or \"{KEY_ID_PREFIX}\"; it was not produced by trousseau"
            ),
            EnvelopeError::BadVersion(w) => write!(f, "{w} has no valid key version after \"vault:v\""),
            EnvelopeError::BadBase64 => write!(f, "ciphertext body is not base64; it is truncated or corrupted"),
        }
    }
}

/// A syntactically valid Vault transit ciphertext (`vault:v<N>:<base64>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultCiphertext {
    text: String,
    version: u64,
}

impl VaultCiphertext {
    /// Checks the framing only; authenticity is Vault's job at decrypt time.
    pub fn parse(text: &str, what: &'static str) -> Result<VaultCiphertext, EnvelopeError> {
        let rest = text.strip_prefix(VAULT_PREFIX).ok_or(EnvelopeError::NotOurs(what))?;
        let (ver, body) = rest.split_once(':').ok_or(EnvelopeError::BadVersion(what))?;
        let version = parse_version(ver).ok_or(EnvelopeError::BadVersion(what))?;
        if body.is_empty() || !is_base64(body) {
            return Err(EnvelopeError::BadBase64);
        }
        Ok(VaultCiphertext {
            text: text.to_owned(),
            version,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn version(&self) -> u64 {
        self.version
    }
}

fn parse_version(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Standard base64 with optional padding, as Vault emits it.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && s.len() % 4 == 0
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Parses a key id produced by [`KeyVersion::key_id`].
pub fn parse_key_id(raw: &str) -> Result<KeyVersion, EnvelopeError> {
    if raw.is_empty() {
        return Err(EnvelopeError::Empty("key_id"));
    }
    if raw.len() > crate::limits::V2_MAX_KEY_ID {
        return Err(EnvelopeError::TooLong {
            what: "key_id",
            len: raw.len(),
            max: crate::limits::V2_MAX_KEY_ID,
        });
    }
    let rest = raw
        .strip_prefix(KEY_ID_PREFIX)
        .ok_or_else(|| EnvelopeError::BadKeyId(format!("it does not start with \"{KEY_ID_PREFIX}\"")))?;
    let (name, ver) = rest
        .rsplit_once(":v")
        .ok_or_else(|| EnvelopeError::BadKeyId("no \":v<N>\" version suffix".into()))?;
    let version =
        parse_version(ver).ok_or_else(|| EnvelopeError::BadKeyId("the version is not a positive number".into()))?;
    let name = parse_key_name(name).ok_or_else(|| EnvelopeError::BadKeyId("no valid <mount>/<key> name".into()))?;
    Ok(KeyVersion { name, version })
}

fn parse_key_name(s: &str) -> Option<KeyName> {
    let (mount, key) = s.rsplit_once('/')?;
    let mount = crate::config::parse_mount(mount).ok()?;
    let key = crate::config::parse_key_name(key).ok()?;
    Some(KeyName { mount, key })
}

/// Frames a Vault ciphertext for KMS v1 storage.
pub fn v1_cipher(name: &KeyName, ct: &VaultCiphertext) -> Vec<u8> {
    format!("{KEY_ID_PREFIX}{name}:{}", ct.as_str()).into_bytes()
}

/// Reads a v1 cipher. `None` for the key means a bare Vault ciphertext, which
/// belongs to the configured key.
pub fn parse_v1_cipher(raw: &[u8]) -> Result<(Option<KeyName>, VaultCiphertext), EnvelopeError> {
    const WHAT: &str = "cipher";
    if raw.is_empty() {
        return Err(EnvelopeError::Empty(WHAT));
    }
    if raw.len() > crate::limits::V1_MAX_CIPHER {
        return Err(EnvelopeError::TooLong {
            what: WHAT,
            len: raw.len(),
            max: crate::limits::V1_MAX_CIPHER,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| EnvelopeError::NotUtf8(WHAT))?;
    if let Some(rest) = text.strip_prefix(KEY_ID_PREFIX) {
        let (name, ct) = rest.split_once(':').ok_or(EnvelopeError::NotOurs(WHAT))?;
        let name = parse_key_name(name)
            .ok_or_else(|| EnvelopeError::BadKeyId("the cipher names no valid <mount>/<key>".into()))?;
        return Ok((Some(name), VaultCiphertext::parse(ct, WHAT)?));
    }
    Ok((None, VaultCiphertext::parse(text, WHAT)?))
}

/// Reads a v2 ciphertext: bytes of a Vault ciphertext.
pub fn parse_v2_ciphertext(raw: &[u8]) -> Result<VaultCiphertext, EnvelopeError> {
    const WHAT: &str = "ciphertext";
    if raw.is_empty() {
        return Err(EnvelopeError::Empty(WHAT));
    }
    if raw.len() > crate::limits::V2_MAX_CIPHERTEXT {
        return Err(EnvelopeError::TooLong {
            what: WHAT,
            len: raw.len(),
            max: crate::limits::V2_MAX_CIPHERTEXT,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| EnvelopeError::NotUtf8(WHAT))?;
    VaultCiphertext::parse(text, WHAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> KeyName {
        KeyName {
            mount: "kms/transit".into(),
            key: "kube-1.a".into(),
        }
    }

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
        assert!(matches!(parse_key_id(&long), Err(EnvelopeError::TooLong { .. })));
    }

    #[test]
    fn vault_ciphertext_framing() {
        let ct = VaultCiphertext::parse("vault:v7:AAAABBBB", "c").unwrap();
        assert_eq!(ct.version(), 7);
        for bad in [
            "",
            "vault:",
            "vault:v",
            "vault:v1",
            "vault:v1:",
            "vault:vx:AAAA",
            "vault:v1:AAA",
            "vault:v1:AA=A",
            "vault:v1:AAAA====",
            "vault:v1:AA AA",
            "VAULT:v1:AAAA",
        ] {
            assert!(VaultCiphertext::parse(bad, "c").is_err(), "{bad:?} accepted");
        }
        assert!(VaultCiphertext::parse("vault:v1:AA==", "c").is_ok());
    }

    #[test]
    fn v1_cipher_round_trips_and_reads_bare_vault_ciphertexts() {
        let ct = VaultCiphertext::parse("vault:v3:QUJDRA==", "c").unwrap();
        let framed = v1_cipher(&name(), &ct);
        assert_eq!(framed, b"vault-transit:kms/transit/kube-1.a:vault:v3:QUJDRA==".to_vec());
        assert_eq!(parse_v1_cipher(&framed), Ok((Some(name()), ct.clone())));
        assert_eq!(parse_v1_cipher(b"vault:v3:QUJDRA=="), Ok((None, ct)));
    }

    #[test]
    fn v1_and_v2_reject_garbage() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"ping",
            b"vault-transit:",
            b"vault-transit:x/y",
            b"vault-transit:x/y:vault:v1:",
            b"vault-transit:x:vault:v1:AAAA",
        ] {
            assert!(parse_v1_cipher(bad).is_err(), "{bad:?} accepted");
            assert!(parse_v2_ciphertext(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_v2_ciphertext(&[b'a'; 2000]).is_err());
        assert!(parse_v1_cipher(&vec![b'a'; 70_000]).is_err());
    }

    /// Every prefix of a valid envelope is handled without panicking, and
    /// only the whole one parses back to the same thing.
    #[test]
    fn truncations_never_panic() {
        let ct = VaultCiphertext::parse("vault:v12:QUJDREVGR0g=", "c").unwrap();
        let framed = v1_cipher(&name(), &ct);
        for i in 0..framed.len() {
            let r = parse_v1_cipher(&framed[..i]);
            assert_ne!(r, Ok((Some(name()), ct.clone())));
        }
        let kid = KeyVersion {
            name: name(),
            version: 12,
        }
        .key_id();
        for i in 0..kid.len() {
            let _ = parse_key_id(&kid[..i]);
        }
    }

    /// A small deterministic fuzz: random bytes never panic any parser.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::testutil::Rng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let buf = rng.pick(b"vault-transit:/v0123456789AB=+ \xff", 64);
            let _ = parse_v1_cipher(&buf);
            let _ = parse_v2_ciphertext(&buf);
            if let Ok(s) = std::str::from_utf8(&buf) {
                let _ = parse_key_id(s);
            }
        }
    }
}
