//! The local-KEK formats (`--local-kek`): a DEK sealed in the plugin with
//! AES-256-GCM under a local KEK, stored with that KEK as transit wrapped
//! it.
//!
//! - KMS v2: the ciphertext is the sealed bytes (12-byte nonce, ciphertext,
//!   16-byte tag) and the wrapped KEK (`vault:vN:<base64>`) travels in the
//!   annotation [`LOCAL_KEK_ANNOTATION`]; the key id is the usual one, of
//!   the transit key version that wrapped the KEK.
//! - KMS v1: `vault-transit-kek:<mount>/<key>:<wrapped KEK>:<base64 of the
//!   sealed bytes>`. Its prefix is not [`KEY_ID_PREFIX`] (`vault-transit:`)
//!   nor `vault:`, so a v1 Decrypt tells the three forms apart by their
//!   first bytes.

use base64::Engine as _;

use super::cipher::VaultCiphertext;
use super::names::{parse_key_path, KeyName};
use super::{check_size, WireError};

/// The v2 annotation that carries the wrapped KEK. Annotation keys must be
/// fully qualified domain names (`kmsv2/envelope.go`); the value is about
/// 90 bytes, far below the 32 KiB the apiserver allows for all of them.
pub const LOCAL_KEK_ANNOTATION: &str = "local-kek.trousseau.io";

/// The prefix of a v1 cipher sealed under a local KEK.
pub const V1_LOCAL_PREFIX: &str = "vault-transit-kek:";

/// AES-GCM's nonce and tag around the sealed DEK.
pub const SEAL_NONCE: usize = 12;
pub const SEAL_TAG: usize = 16;

/// A DEK sealed under a local KEK, as read back: the wrapped KEK and the
/// sealed bytes (nonce, ciphertext, tag). The transit key that wrapped the
/// KEK is named by the v1 framing, or in v2 by the key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSealed {
    pub wrapped: VaultCiphertext,
    pub sealed: Vec<u8>,
}

fn check_sealed(sealed: &[u8], what: &'static str, max: usize) -> Result<(), WireError> {
    check_size(sealed, what, max)?;
    if sealed.len() <= SEAL_NONCE + SEAL_TAG {
        return Err(WireError::TooShort {
            what,
            len: sealed.len(),
            min: SEAL_NONCE + SEAL_TAG + 1,
        });
    }
    Ok(())
}

/// Reads a v2 ciphertext and its wrapped-KEK annotation.
pub fn parse_v2_local(ciphertext: &[u8], annotation: &[u8]) -> Result<LocalSealed, WireError> {
    const WHAT: &str = "the local-kek.trousseau.io annotation";
    check_sealed(ciphertext, "ciphertext", crate::limits::V2_MAX_CIPHERTEXT)?;
    check_size(annotation, WHAT, crate::limits::V2_MAX_CIPHERTEXT)?;
    let text = std::str::from_utf8(annotation).map_err(|_| WireError::NotUtf8(WHAT))?;
    Ok(LocalSealed {
        wrapped: VaultCiphertext::parse(text, WHAT)?,
        sealed: ciphertext.to_vec(),
    })
}

/// Frames a sealed DEK and its wrapped KEK for KMS v1 storage.
pub fn v1_local_cipher(name: &KeyName, wrapped: &VaultCiphertext, sealed: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(sealed);
    format!("{V1_LOCAL_PREFIX}{name}:{}:{b64}", wrapped.as_str()).into_bytes()
}

/// Reads a v1 cipher if it is of the local-KEK form, with the transit key
/// it names; `Ok(None)` when it does not start with [`V1_LOCAL_PREFIX`]
/// (one of the transit forms).
pub fn parse_v1_local(raw: &[u8]) -> Result<Option<(KeyName, LocalSealed)>, WireError> {
    const WHAT: &str = "cipher";
    let Some(rest) = raw.strip_prefix(V1_LOCAL_PREFIX.as_bytes()) else {
        return Ok(None);
    };
    check_size(raw, WHAT, crate::limits::V1_MAX_CIPHER)?;
    let rest = std::str::from_utf8(rest).map_err(|_| WireError::NotUtf8(WHAT))?;
    let (name, rest) = rest.split_once(':').ok_or(WireError::NotOurs(WHAT))?;
    let name =
        parse_key_path(name).ok_or_else(|| WireError::BadKeyId("the cipher names no valid <mount>/<key>".into()))?;
    let (wrapped, sealed) = rest.rsplit_once(':').ok_or(WireError::NotOurs(WHAT))?;
    let wrapped = VaultCiphertext::parse(wrapped, WHAT)?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| WireError::BadBase64)?;
    check_sealed(&sealed, "the sealed DEK", crate::limits::V1_MAX_CIPHER)?;
    Ok(Some((name, LocalSealed { wrapped, sealed })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::names::tests::name;

    fn wrapped() -> VaultCiphertext {
        VaultCiphertext::parse("vault:v2:QUJDREVGR0g=", "t").unwrap()
    }

    #[test]
    fn annotation_key_is_a_fully_qualified_domain_name() {
        let labels: Vec<&str> = LOCAL_KEK_ANNOTATION.split('.').collect();
        assert!(labels.len() >= 2);
        for l in labels {
            assert!(!l.is_empty() && l.len() <= 63);
            assert!(l
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            assert!(!l.starts_with('-') && !l.ends_with('-'));
        }
    }

    #[test]
    fn v1_round_trips_and_is_told_apart_from_transit_forms() {
        let sealed: Vec<u8> = (0u8..60).collect();
        let c = v1_local_cipher(&name(), &wrapped(), &sealed);
        assert!(c.starts_with(b"vault-transit-kek:kms/transit/kube-1.a:vault:v2:QUJDREVGR0g=:"));
        assert_eq!(
            parse_v1_local(&c),
            Ok(Some((
                name(),
                LocalSealed {
                    wrapped: wrapped(),
                    sealed: sealed.clone()
                }
            )))
        );
        // The transit forms are not this one, and this one is not theirs.
        assert_eq!(parse_v1_local(b"vault-transit:kms/k:vault:v1:AAAA"), Ok(None));
        assert_eq!(parse_v1_local(b"vault:v1:AAAA"), Ok(None));
        assert!(crate::wire::parse_v1_cipher(&c).is_err());
        // Every truncation is refused or reads back something else.
        for i in 0..c.len() {
            let r = parse_v1_local(&c[..i]);
            let same = matches!(&r, Ok(Some((_, l))) if l.sealed == sealed);
            assert!(r.is_err() || !same, "truncation at {i} read back the whole");
        }
    }

    /// The largest v1 plaintext under the longest names and version fits
    /// what v1 Decrypt accepts (as `cipher`'s test checks the transit form).
    #[test]
    fn largest_v1_local_cipher_fits_decrypt_limits() {
        let name = KeyName {
            mount: "m".repeat(crate::limits::MAX_MOUNT_PATH),
            key: "k".repeat(crate::limits::MAX_KEY_NAME),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode([0u8; SEAL_NONCE + 32 + SEAL_TAG]);
        let wrapped = VaultCiphertext::parse(&format!("vault:v9999999999999999999:{b64}"), "t").unwrap();
        let sealed = vec![0u8; SEAL_NONCE + crate::limits::V1_MAX_PLAINTEXT + SEAL_TAG];
        let c = v1_local_cipher(&name, &wrapped, &sealed);
        assert!(c.len() <= crate::limits::V1_MAX_CIPHER, "{} bytes", c.len());
        assert_eq!(parse_v1_local(&c).unwrap().unwrap().1.sealed, sealed);
        let v2 = vec![0u8; SEAL_NONCE + crate::limits::V2_MAX_PLAINTEXT + SEAL_TAG];
        assert!(parse_v2_local(&v2, wrapped.as_str().as_bytes()).is_ok());
    }

    #[test]
    fn sealed_bytes_need_nonce_tag_and_a_byte_and_fit_the_limits() {
        assert!(matches!(
            parse_v2_local(&[0u8; 28], b"vault:v1:AAAA"),
            Err(WireError::TooShort { .. })
        ));
        assert!(parse_v2_local(&[0u8; 29], b"vault:v1:AAAA").is_ok());
        assert!(parse_v2_local(&[0u8; 1025], b"vault:v1:AAAA").is_err());
        assert!(parse_v2_local(&[0u8; 60], b"").is_err());
        assert!(parse_v2_local(&[0u8; 60], b"\xff").is_err());
        assert!(parse_v2_local(&[0u8; 60], b"vault:v1:AA A").is_err());
        let short = v1_local_cipher(&name(), &wrapped(), &[0u8; 28]);
        assert!(parse_v1_local(&short).is_err());
    }

    #[test]
    fn v1_garbage_after_the_prefix_is_an_error_not_a_panic() {
        for bad in [
            &b"vault-transit-kek:"[..],
            b"vault-transit-kek:x/y",
            b"vault-transit-kek:x/y:vault:v1:AAAA",
            b"vault-transit-kek:x/y:vault:v1:AAAA:",
            b"vault-transit-kek:x/y:vault:v1:AAAA:!!!!",
            b"vault-transit-kek:x:vault:v1:AAAA:AAAA",
            b"vault-transit-kek:x/y:vault:v0:AAAA:AAAA",
            b"vault-transit-kek:\xff/y:vault:v1:AAAA:AAAA",
        ] {
            assert!(parse_v1_local(bad).is_err(), "{bad:?} accepted");
        }
        let mut rng = crate::testutil::Rng::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let mut buf = V1_LOCAL_PREFIX.as_bytes().to_vec();
            buf.extend(rng.pick(b"vault:/v019AB=+ \xffk", 120));
            let _ = parse_v1_local(&buf);
            let _ = parse_v2_local(&buf, &buf);
        }
    }
}
