//! Vault's transit ciphertext (`vault:v<N>:<base64>`, stored as is for KMS
//! v2) and the KMS v1 framing around it (`vault-transit:<mount>/<key>:`
//! followed by the Vault ciphertext).

use super::key_id::{parse_version, KEY_ID_PREFIX};
use super::names::{parse_key_path, KeyName};
use super::{check_size, WireError};

const VAULT_PREFIX: &str = "vault:v";

/// A syntactically valid Vault transit ciphertext (`vault:v<N>:<base64>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultCiphertext {
    text: String,
    version: u64,
}

impl VaultCiphertext {
    /// Checks the framing only; authenticity is Vault's job at decrypt time.
    pub fn parse(text: &str, what: &'static str) -> Result<VaultCiphertext, WireError> {
        let rest = text.strip_prefix(VAULT_PREFIX).ok_or(WireError::NotOurs(what))?;
        let (ver, body) = rest.split_once(':').ok_or(WireError::BadVersion(what))?;
        let version = parse_version(ver).ok_or(WireError::BadVersion(what))?;
        if body.is_empty() || !is_base64(body) {
            return Err(WireError::BadBase64);
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

/// Standard base64 with optional padding, as Vault emits it.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && s.len().is_multiple_of(4)
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Frames a Vault ciphertext for KMS v1 storage.
pub fn v1_cipher(name: &KeyName, ct: &VaultCiphertext) -> Vec<u8> {
    format!("{KEY_ID_PREFIX}{name}:{}", ct.as_str()).into_bytes()
}

/// A v1 cipher as read: the key it names and Vault's ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Cipher {
    /// `None` for a bare `vault:vN:` ciphertext (as older plugins stored
    /// it), which is tried with the configured keys.
    pub key: Option<KeyName>,
    pub ciphertext: VaultCiphertext,
}

/// Reads a v1 cipher: `vault-transit:<mount>/<key>:vault:vN:...`, or a bare
/// Vault ciphertext.
pub fn parse_v1_cipher(raw: &[u8]) -> Result<V1Cipher, WireError> {
    const WHAT: &str = "cipher";
    check_size(raw, WHAT, crate::limits::V1_MAX_CIPHER)?;
    let text = std::str::from_utf8(raw).map_err(|_| WireError::NotUtf8(WHAT))?;
    if let Some(rest) = text.strip_prefix(KEY_ID_PREFIX) {
        let (name, ct) = rest.split_once(':').ok_or(WireError::NotOurs(WHAT))?;
        let name = parse_key_path(name)
            .ok_or_else(|| WireError::BadKeyId("the cipher names no valid <mount>/<key>".into()))?;
        return Ok(V1Cipher {
            key: Some(name),
            ciphertext: VaultCiphertext::parse(ct, WHAT)?,
        });
    }
    Ok(V1Cipher {
        key: None,
        ciphertext: VaultCiphertext::parse(text, WHAT)?,
    })
}

/// Reads a v2 ciphertext: bytes of a Vault ciphertext.
pub fn parse_v2_ciphertext(raw: &[u8]) -> Result<VaultCiphertext, WireError> {
    const WHAT: &str = "ciphertext";
    check_size(raw, WHAT, crate::limits::V2_MAX_CIPHERTEXT)?;
    let text = std::str::from_utf8(raw).map_err(|_| WireError::NotUtf8(WHAT))?;
    VaultCiphertext::parse(text, WHAT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::names::tests::name;
    use crate::wire::{parse_key_id, KeyVersion};

    /// The longest names the parsers accept, and the largest version and
    /// creation time (19 digits each).
    fn longest() -> KeyVersion {
        KeyVersion {
            name: KeyName {
                mount: "m".repeat(crate::limits::MAX_MOUNT_PATH),
                key: "k".repeat(crate::limits::MAX_KEY_NAME),
            },
            version: 9_999_999_999_999_999_999,
            created: Some(9_999_999_999_999_999_999),
        }
    }

    /// Whatever Encrypt can return, Decrypt accepts: the worst case of each
    /// API (longest names, largest version, largest plaintext, Vault's
    /// nonce and tag) fits the limit Decrypt enforces, and parses back.
    #[test]
    fn encrypt_output_always_fits_decrypt_limits() {
        use base64::Engine as _;
        let kv = longest();
        let key_id = kv.key_id();
        assert!(key_id.len() <= crate::limits::V2_MAX_KEY_ID, "{} bytes", key_id.len());
        assert_eq!(parse_key_id(&key_id).unwrap(), kv);
        for (max_pt, limit, v1) in [
            (crate::limits::V1_MAX_PLAINTEXT, crate::limits::V1_MAX_CIPHER, true),
            (crate::limits::V2_MAX_PLAINTEXT, crate::limits::V2_MAX_CIPHERTEXT, false),
        ] {
            // transit's aes256-gcm96: 12-byte nonce, the purpose tag and
            // the plaintext, 16-byte tag.
            let sealed = vec![0u8; 12 + super::super::purpose::TAG_LEN + max_pt + 16];
            let b64 = base64::engine::general_purpose::STANDARD.encode(sealed);
            let ct = VaultCiphertext::parse(&format!("vault:v{}:{b64}", kv.version), "t").unwrap();
            if v1 {
                let cipher = v1_cipher(&kv.name, &ct);
                assert!(cipher.len() <= limit, "v1 cipher {} bytes", cipher.len());
                assert_eq!(parse_v1_cipher(&cipher).unwrap().key, Some(kv.name.clone()));
            } else {
                assert!(ct.as_str().len() <= limit, "v2 ciphertext {} bytes", ct.as_str().len());
                assert!(parse_v2_ciphertext(ct.as_str().as_bytes()).is_ok());
            }
        }
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
        assert_eq!(
            parse_v1_cipher(&framed),
            Ok(V1Cipher {
                key: Some(name()),
                ciphertext: ct.clone()
            })
        );
        assert_eq!(
            parse_v1_cipher(b"vault:v3:QUJDRA=="),
            Ok(V1Cipher {
                key: None,
                ciphertext: ct
            })
        );
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
            assert_ne!(
                r,
                Ok(V1Cipher {
                    key: Some(name()),
                    ciphertext: ct.clone()
                })
            );
        }
        let kid = KeyVersion {
            name: name(),
            version: 12,
            created: Some(1_796_235_632),
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
