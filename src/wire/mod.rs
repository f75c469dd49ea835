//! The wire formats: what Trousseau hands the apiserver and how it reads it
//! back. Stable: these are stored in etcd.
//!
//! - [`names`]: transit mount paths and key names ([`KeyName`]), one strict
//!   parser that config uses too;
//! - [`key_id`]: the KMS v2 key id, `vault-transit:<mount>/<key>:v<N>`, e.g.
//!   `vault-transit:transit/kube:v3`; names no secret, changes exactly when
//!   the transit key version changes, and parses only in that canonical form;
//! - [`cipher`]: Vault's `vault:v<N>:<base64>` ciphertext (the v2
//!   ciphertext as is) and the v1 framing `vault-transit:<mount>/<key>:`
//!   followed by it, so each stored DEK names its key (a bare `vault:v<N>:`
//!   cipher, as older plugins stored, belongs to the configured key);
//! - [`local`]: a DEK sealed in the plugin under a local KEK
//!   (`--local-kek`), with the KEK as transit wrapped it: in a v2
//!   annotation, or in the v1 framing `vault-transit-kek:`.
//!
//! - [`purpose`]: the tag at the head of every plaintext sent to transit
//!   (a v2 DEK, a v1 DEK or a local KEK), so that no Decrypt returns a
//!   secret of another kind or made through the other API.
//!
//! Mount paths and key names never contain `:`, so the parsing is
//! unambiguous. Every parser returns an error naming the problem; none
//! panics on any input.

pub mod cipher;
pub mod key_id;
pub mod local;
pub mod names;
pub mod purpose;

use std::fmt;

pub use cipher::{parse_v1_cipher, parse_v2_ciphertext, v1_cipher, V1Cipher, VaultCiphertext};
pub use key_id::{parse_key_id, KeyVersion, KEY_ID_PREFIX};
pub use local::{parse_v1_local, parse_v2_local, v1_local_cipher, LocalSealed, LOCAL_KEK_ANNOTATION};
pub use names::KeyName;
pub use purpose::Purpose;

/// Why bytes from the apiserver are not a ciphertext or key id of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    Empty(&'static str),
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    TooShort {
        what: &'static str,
        len: usize,
        min: usize,
    },
    NotUtf8(&'static str),
    BadKeyId(String),
    /// Neither `vault:vN:` nor our v1 framing.
    NotOurs(&'static str),
    BadVersion(&'static str),
    BadBase64,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty(w) => write!(f, "{w} is empty"),
            WireError::TooLong { what, len, max } => write!(f, "{what} is {len} bytes, more than {max}"),
            WireError::TooShort { what, len, min } => {
                write!(f, "{what} is {len} bytes, fewer than {min}; it is truncated")
            }
            WireError::NotUtf8(w) => write!(f, "{w} is not text; it was not produced by trousseau"),
            WireError::BadKeyId(why) => write!(f, "key_id is not a trousseau key id ({why})"),
            WireError::NotOurs(w) => write!(
                f,
                "{w} does not start with \"vault:v<N>:\" or \"{KEY_ID_PREFIX}\"; it was not produced by trousseau"
            ),
            WireError::BadVersion(w) => write!(f, "{w} has no valid key version after \"vault:v\""),
            WireError::BadBase64 => write!(f, "ciphertext body is not base64; it is truncated or corrupted"),
        }
    }
}

/// Every field from the apiserver: present, and within its limit.
fn check_size(raw: &[u8], what: &'static str, max: usize) -> Result<(), WireError> {
    if raw.is_empty() {
        return Err(WireError::Empty(what));
    }
    if raw.len() > max {
        return Err(WireError::TooLong {
            what,
            len: raw.len(),
            max,
        });
    }
    Ok(())
}
