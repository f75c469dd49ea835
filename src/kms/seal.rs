//! Sealing one DEK under a local KEK with AES-256-GCM (`ring`), and the KEK
//! as it comes out of transit: the crypto of [`super::kek`], apart from its
//! state (rotation, cache, single flights).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use super::KmsError;
use crate::limits::LOCAL_KEK_LEN;
use crate::wire::local::{SEAL_NONCE, SEAL_TAG};
use crate::wire::purpose::{self, Purpose};
use crate::wire::VaultCiphertext;

/// An unwrapped KEK and the text transit wrapped it as.
pub(super) struct Kek {
    key: LessSafeKey,
    pub(super) wrapped: VaultCiphertext,
}

/// The KEK in an unwrapped plaintext: tagged as a KEK, or untagged as KEKs
/// were wrapped before purpose tags (those still open: nothing stored is
/// lost). A DEK's ciphertext put in a KEK's place is refused.
pub(super) fn kek_body(raw: &[u8]) -> Result<&[u8], KmsError> {
    match purpose::read(raw) {
        (Purpose::Kek | Purpose::Untagged, body) => Ok(body),
        (other, _) => Err(KmsError::Invalid(format!(
            "the wrapped KEK holds {}, not a KEK: it is not one trousseau made",
            other.name()
        ))),
    }
}

pub(super) fn new_kek(raw: &[u8], wrapped: VaultCiphertext) -> Result<Kek, KmsError> {
    let key = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| {
        KmsError::Invalid(format!(
            "the wrapped KEK decrypts to {} bytes, not a {LOCAL_KEK_LEN}-byte KEK: it is not one trousseau made",
            raw.len()
        ))
    })?;
    Ok(Kek {
        key: LessSafeKey::new(key),
        wrapped,
    })
}

pub(super) fn seal(rng: &SystemRandom, kek: &Kek, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
    let mut nonce = [0u8; SEAL_NONCE];
    rng.fill(&mut nonce)
        .map_err(|_| KmsError::Internal("the system's random source failed".into()))?;
    let mut body = Zeroizing::new(plaintext.to_vec());
    let tag = kek
        .key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .map_err(|_| KmsError::Internal("AES-GCM refused to seal the plaintext".into()))?;
    let mut out = Vec::with_capacity(SEAL_NONCE + body.len() + SEAL_TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

pub(super) fn open(kek: &Kek, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
    let (nonce, body) = sealed
        .split_at_checked(SEAL_NONCE)
        .ok_or_else(|| KmsError::Invalid("the sealed DEK is shorter than its nonce".into()))?;
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| KmsError::Invalid("the sealed DEK's nonce is not 12 bytes".into()))?;
    let mut buf = body.to_vec();
    match kek.key.open_in_place(nonce, Aad::from(aad), &mut buf) {
        Ok(pt) => {
            let n = pt.len();
            buf.truncate(n);
            Ok(buf)
        }
        Err(_) => {
            buf.zeroize();
            Err(KmsError::Invalid(
                "the sealed DEK does not authenticate under the KEK stored with it: it was altered, or paired with another DEK's KEK".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        new_kek(&[byte; 32], VaultCiphertext::parse("vault:v1:AAAA", "t").unwrap()).unwrap()
    }

    #[test]
    fn sealed_dek_opens_only_with_its_kek_and_label_and_unaltered() {
        let rng = SystemRandom::new();
        let (a, b) = (kek(1), kek(2));
        let s = seal(&rng, &a, b"0123456789abcdef0123456789abcdef", b"v2").unwrap();
        assert_eq!(s.len(), 12 + 32 + 16);
        assert_eq!(open(&a, &s, b"v2").unwrap(), b"0123456789abcdef0123456789abcdef");
        assert!(open(&b, &s, b"v2").is_err());
        assert!(open(&a, &s, b"v1").is_err());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert!(open(&a, &t, b"v2").is_err(), "byte {i} altered and still opened");
        }
        for i in 0..s.len() {
            assert!(open(&a, &s[..i], b"v2").is_err());
        }
        // A fresh nonce each time: the same DEK seals differently.
        assert_ne!(s, seal(&rng, &a, b"0123456789abcdef0123456789abcdef", b"v2").unwrap());
    }

    #[test]
    fn a_wrapped_kek_of_another_size_is_refused() {
        let w = VaultCiphertext::parse("vault:v1:AAAA", "t").unwrap();
        for n in [0, 16, 31, 33, 64] {
            assert!(matches!(new_kek(&vec![7; n], w.clone()), Err(KmsError::Invalid(_))));
        }
    }
}
