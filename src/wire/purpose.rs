//! What a transit plaintext is for, stated inside it. One transit key wraps
//! three kinds of secret: KMS v2 DEK seeds, KMS v1 DEKs, and local KEKs
//! (`--local-kek`). Without a mark, any ciphertext of one kind decrypts as
//! another: a wrapped KEK (stored in the clear in an etcd annotation) sent
//! back as a v2 ciphertext would return the raw KEK, and with it every DEK
//! it sealed would open offline. So each plaintext sent to transit starts
//! with a 16-byte tag naming its purpose; Decrypt returns a DEK only from a
//! plaintext tagged for its own API, and unwraps a KEK only from one tagged
//! as a KEK.
//!
//! Plaintexts written before the tags existed carry none: they are read as
//! they are ([`Purpose::Untagged`]), so nothing stored is lost. The DEKs the
//! apiserver sends are random bytes: one starting with a tag by chance has a
//! probability of 2^-128, and Encrypt refuses any that does, so no caller
//! can make a plaintext that later reads as another purpose.

use zeroize::Zeroizing;

/// Length of every tag.
pub const TAG_LEN: usize = 16;

const KEK_TAG: &[u8; TAG_LEN] = b"trousseau.kek.v1";
const DEK_V2_TAG: &[u8; TAG_LEN] = b"trousseau.dek.v2";
const DEK_V1_TAG: &[u8; TAG_LEN] = b"trousseau.dek.v1";

/// What a transit plaintext holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A KMS v2 DEK seed.
    DekV2,
    /// A KMS v1 (v1beta1) DEK.
    DekV1,
    /// A local KEK.
    Kek,
    /// No tag: written before tags existed (or the health check's probe).
    Untagged,
}

impl Purpose {
    fn tag(self) -> Option<&'static [u8; TAG_LEN]> {
        match self {
            Purpose::DekV2 => Some(DEK_V2_TAG),
            Purpose::DekV1 => Some(DEK_V1_TAG),
            Purpose::Kek => Some(KEK_TAG),
            Purpose::Untagged => None,
        }
    }

    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::DekV2 => "a KMS v2 DEK",
            Purpose::DekV1 => "a KMS v1 DEK",
            Purpose::Kek => "a local KEK",
            Purpose::Untagged => "an untagged plaintext",
        }
    }
}

/// `body` behind the tag of `purpose`, for transit to encrypt.
pub fn tag(purpose: Purpose, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let tag: &[u8] = purpose.tag().map_or(&[], |t| t.as_slice());
    let mut out = Zeroizing::new(Vec::with_capacity(tag.len() + body.len()));
    out.extend_from_slice(tag);
    out.extend_from_slice(body);
    out
}

/// What a decrypted transit plaintext is for, and its body.
pub fn read(plaintext: &[u8]) -> (Purpose, &[u8]) {
    for p in [Purpose::DekV2, Purpose::DekV1, Purpose::Kek] {
        if let Some(body) = p.tag().and_then(|t| plaintext.strip_prefix(t.as_slice())) {
            return (p, body);
        }
    }
    (Purpose::Untagged, plaintext)
}

/// Whether a caller's plaintext starts like a tagged one (refused by
/// Encrypt, so it can never be read back as another purpose).
pub fn looks_tagged(plaintext: &[u8]) -> bool {
    read(plaintext).0 != Purpose::Untagged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_reads_back_as_itself_and_untagged_stays_as_is() {
        let body = [7u8; 32];
        for p in [Purpose::DekV2, Purpose::DekV1, Purpose::Kek] {
            let t = tag(p, &body);
            assert_eq!(t.len(), TAG_LEN + 32);
            assert_eq!(read(&t), (p, &body[..]));
            assert!(looks_tagged(&t));
        }
        assert_eq!(read(&body), (Purpose::Untagged, &body[..]));
        assert_eq!(tag(Purpose::Untagged, &body).as_slice(), &body);
        // A prefix of a tag, or a tag with a byte changed, is no tag.
        assert_eq!(read(&KEK_TAG[..15]).0, Purpose::Untagged);
        let mut t = tag(Purpose::Kek, &body);
        t[3] ^= 1;
        assert_eq!(read(&t).0, Purpose::Untagged);
        assert_eq!(read(b"").0, Purpose::Untagged);
        // An empty body behind a tag is still that purpose.
        assert_eq!(read(DEK_V2_TAG), (Purpose::DekV2, &b""[..]));
    }

    #[test]
    fn tags_are_distinct_and_of_one_length() {
        let tags = [KEK_TAG, DEK_V2_TAG, DEK_V1_TAG];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
