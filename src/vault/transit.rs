//! The transit engine: encrypt and decrypt with a named key (all the
//! plugin itself ever calls), and reading a key's metadata for `check`.

use std::time::Instant;

use base64::Engine as _;

use super::answer::{batch_results, key_info, transit_field, BatchItem};
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

/// Where a batch answer came from: what an item's error names.
struct BatchOrigin {
    addr: String,
    path: String,
    op: &'static str,
}

impl BatchOrigin {
    /// An item's value, or the error Vault would have answered had the
    /// item been sent alone (HTTP 400 with its text), so that callers see
    /// the same error class either way.
    fn item(&self, item: BatchItem) -> Result<String, VaultError> {
        match item {
            BatchItem::Value(v) => Ok(v),
            BatchItem::Refused(message) => Err(VaultError::Status {
                addr: self.addr.clone(),
                op: self.op,
                path: self.path.clone(),
                status: 400,
                message,
            }),
        }
    }
}

/// A transit answer's ciphertext, checked; an error names its origin.
fn ciphertext_in(addr: &str, path: &str, value: &str) -> Result<VaultCiphertext, VaultError> {
    VaultCiphertext::parse(value, "vault's ciphertext").map_err(|e| bad(addr, path, &e.to_string()))
}

/// A transit answer's base64 plaintext (`what` names the field), decoded.
fn plaintext_in(addr: &str, path: &str, value: &str, what: &str) -> Result<Vec<u8>, VaultError> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| bad(addr, path, &format!("{what} is not base64")))
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
        ciphertext_in(&f.addr, &f.path, &f.value)
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
        plaintext_in(&f.addr, &f.path, &f.value, "data.plaintext")
    }

    /// One `POST /v1/<mount>/encrypt/<key>` with a `batch_input` of
    /// `plaintexts`; the results in the same order. The outer error fails
    /// every item (Vault refused the call); an inner one only its own.
    pub fn encrypt_batch(
        &self,
        token: &Secret,
        key: &KeyName,
        plaintexts: &[&[u8]],
        deadline: Instant,
    ) -> Result<Vec<Result<VaultCiphertext, VaultError>>, VaultError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let inputs = plaintexts.iter().map(|pt| b64.encode(pt)).collect();
        let (f, items) = self.transit_batch("encrypt", token, key, ("plaintext", inputs), "ciphertext", deadline)?;
        Ok(items
            .into_iter()
            .map(|item| ciphertext_in(&f.addr, &f.path, &f.item(item)?))
            .collect())
    }

    /// One `POST /v1/<mount>/decrypt/<key>` with a `batch_input` of
    /// `ciphertexts`; the plaintexts in the same order, each exactly as
    /// Vault returned it for that item. Errors as for [`Self::encrypt_batch`].
    pub fn decrypt_batch(
        &self,
        token: &Secret,
        key: &KeyName,
        ciphertexts: &[&VaultCiphertext],
        deadline: Instant,
    ) -> Result<Vec<Result<Vec<u8>, VaultError>>, VaultError> {
        let inputs = ciphertexts.iter().map(|ct| ct.as_str().to_owned()).collect();
        let (f, items) = self.transit_batch("decrypt", token, key, ("ciphertext", inputs), "plaintext", deadline)?;
        Ok(items
            .into_iter()
            .map(|item| plaintext_in(&f.addr, &f.path, &f.item(item)?, "data.batch_results[].plaintext"))
            .collect())
    }

    /// A batch call: `input` is the items' field name and their values,
    /// each sent with its position as `reference`. Returns the call's origin
    /// (for messages) and its `field` items, matched to the inputs by
    /// position and reference.
    fn transit_batch(
        &self,
        op: &'static str,
        token: &Secret,
        key: &KeyName,
        (name, values): (&str, Vec<String>),
        field: &str,
        deadline: Instant,
    ) -> Result<(BatchOrigin, Vec<BatchItem>), VaultError> {
        let n = values.len();
        let items: Vec<_> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| serde_json::json!({ name: v, "reference": i.to_string() }))
            .collect();
        let body = serde_json::json!({ "batch_input": items }).to_string();
        let (path, Answer { addr, body: v }) = self.post(op, token, key, &body, true, deadline)?;
        let items = batch_results(&v, field, n).ok_or_else(|| {
            bad(
                &addr,
                &path,
                &format!("data.batch_results does not answer the {n} items sent, in order"),
            )
        })?;
        Ok((BatchOrigin { addr, path, op }, items))
    }

    /// `POST /v1/<mount>/<op>/<key>` with `body`: the path and the answer.
    fn post(
        &self,
        op: &'static str,
        token: &Secret,
        key: &KeyName,
        body: &str,
        batch: bool,
        deadline: Instant,
    ) -> Result<(String, Answer), VaultError> {
        let path = format!("{}/{op}/{}", key.mount, key.key);
        let c = Call {
            op,
            method: Method::Post,
            path: &path,
            body: Some(body),
            token: Some(token),
            batch,
        };
        let answer = self.call(&c, deadline)?;
        Ok((path, answer))
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
        let (path, Answer { addr, body: v }) = self.post(op, token, key, body, false, deadline)?;
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
            batch: false,
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        key_info(&v).ok_or_else(|| bad(&addr, &path, "no data object"))
    }
}
