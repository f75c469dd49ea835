//! The transit engine: encrypt and decrypt with a named key (all the
//! plugin itself ever calls), and reading a key's metadata for `check`.

use std::time::Instant;

use base64::Engine as _;

use super::answer::{key_info, transit_field};
use super::error::bad;
use super::transport::{Answer, Call, Method};
use super::{KeyInfo, VaultClient, VaultError};
use crate::secret::Secret;
use crate::wire::{KeyName, VaultCiphertext};

/// One string field of a transit answer, with where it came from for
/// error messages about its content.
struct TransitField {
    /// The node that answered.
    addr: String,
    /// The call's path, `<mount>/<op>/<key>`.
    path: String,
    value: String,
}

impl VaultClient {
    /// `POST /v1/<mount>/encrypt/<key>`; returns Vault's `vault:vN:` ciphertext.
    pub fn encrypt(
        &self,
        token: &Secret,
        key: &KeyName,
        plaintext: &[u8],
        deadline: Instant,
    ) -> Result<VaultCiphertext, VaultError> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
        let body = serde_json::json!({ "plaintext": b64 }).to_string();
        let f = self.transit("encrypt", token, key, &body, "ciphertext", deadline)?;
        VaultCiphertext::parse(&f.value, "vault's ciphertext").map_err(|e| bad(&f.addr, &f.path, &e.to_string()))
    }

    /// `POST /v1/<mount>/decrypt/<key>`; returns the plaintext bytes exactly
    /// as one transit call returned them.
    pub fn decrypt(
        &self,
        token: &Secret,
        key: &KeyName,
        ct: &VaultCiphertext,
        deadline: Instant,
    ) -> Result<Vec<u8>, VaultError> {
        let body = serde_json::json!({ "ciphertext": ct.as_str() }).to_string();
        // Vault omits `plaintext` for an empty plaintext; we never encrypt one.
        let f = self.transit("decrypt", token, key, &body, "plaintext", deadline)?;
        base64::engine::general_purpose::STANDARD
            .decode(f.value)
            .map_err(|_| bad(&f.addr, &f.path, "data.plaintext is not base64"))
    }

    /// `POST /v1/<mount>/<op>/<key>` with `body`; returns `data.<field>`.
    fn transit(
        &self,
        op: &'static str,
        token: &Secret,
        key: &KeyName,
        body: &str,
        field: &str,
        deadline: Instant,
    ) -> Result<TransitField, VaultError> {
        let path = format!("{}/{op}/{}", key.mount, key.key);
        let c = Call {
            op,
            method: Method::Post,
            path: &path,
            body: Some(body),
            token: Some(token),
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        let value = transit_field(&v, field).ok_or_else(|| bad(&addr, &path, &format!("no data.{field}")))?;
        Ok(TransitField { addr, path, value })
    }

    /// `GET /v1/<mount>/keys/<key>`: the key's type, versions and their
    /// creation times (metadata only; no key material). Needs `read` on
    /// that path, which the shipped policy grants.
    pub fn read_key(&self, token: &Secret, key: &KeyName, deadline: Instant) -> Result<KeyInfo, VaultError> {
        let path = format!("{}/keys/{}", key.mount, key.key);
        let c = Call {
            op: "read-key",
            method: Method::Get,
            path: &path,
            body: None,
            token: Some(token),
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        key_info(&v).ok_or_else(|| bad(&addr, &path, "no data object"))
    }
}
