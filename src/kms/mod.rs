//! The one KMS core both API versions share: encrypt and decrypt a DEK with
//! the transit key ([`Kms`]), report health and the current key id
//! ([`health`]), and say what went wrong ([`KmsError`]). Nothing here knows
//! gRPC or HTTP.

mod error;
mod health;
mod incarnation;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use error::KmsError;
use health::CheckState;
pub use health::{Gauges, Health, StatusReport};

use crate::limits::MAX_PLAINTEXT;
use crate::secret::Secret;
use crate::session::Session;
use crate::vault::{VaultClient, VaultError, VaultErrorClass};
use crate::wire::{KeyName, KeyVersion, VaultCiphertext};

/// The KMS core. One per process, shared by reference across threads.
pub struct Kms {
    vault: VaultClient,
    session: Arc<Session>,
    /// Encrypts every new DEK.
    key: KeyName,
    /// Older keys that still decrypt (`--decrypt-key`).
    decrypt_keys: Vec<KeyName>,
    timeout: Duration,
    check: Mutex<CheckState>,
    check_done: Condvar,
    /// The primary key's version creation times, for key ids.
    times: Mutex<incarnation::Times>,
}

/// What an Encrypt produced: Vault's ciphertext and the key version that
/// made it (the adapters turn it into a key id or a v1 cipher's name).
#[derive(Clone, Debug)]
pub struct Encrypted {
    pub ciphertext: VaultCiphertext,
    pub key: KeyVersion,
}

impl Kms {
    pub fn new(
        vault: VaultClient,
        session: Arc<Session>,
        key: KeyName,
        decrypt_keys: Vec<KeyName>,
        timeout: Duration,
    ) -> Kms {
        Kms {
            vault,
            session,
            key,
            decrypt_keys,
            timeout,
            check: Mutex::new(CheckState {
                health: Health::Unknown,
                probing: false,
            }),
            check_done: Condvar::new(),
            times: Mutex::default(),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Runs a Vault call with the session's token. If Vault refuses the
    /// token, the session gets a fresh one (one login shared by concurrent
    /// callers) and the call is retried once with it.
    fn with_token<T>(
        &self,
        deadline: Instant,
        call: impl Fn(&Secret) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let ticket = self.session.ticket();
        let result = match call(&ticket.token) {
            Err(e) if e.class() == VaultErrorClass::Denied => match self.session.refresh(ticket.gen, deadline) {
                Some(fresh) => {
                    log::debug!("vault refused the token ({e}); retrying once with a fresh one");
                    call(&fresh.token)
                }
                None => Err(e),
            },
            r => r,
        };
        if matches!(&result, Err(e) if e.class() == VaultErrorClass::Unavailable) {
            self.saw_unavailable();
        }
        result
    }

    /// Encrypts a DEK with the transit key's latest version. `max_len` is
    /// the calling API's plaintext limit (at most [`MAX_PLAINTEXT`]); larger
    /// or empty input is refused before any Vault call.
    pub fn encrypt(&self, plaintext: &[u8], max_len: usize) -> Result<Encrypted, KmsError> {
        if plaintext.is_empty() {
            return Err(KmsError::Invalid("plaintext is empty".into()));
        }
        let max_len = max_len.min(MAX_PLAINTEXT);
        if plaintext.len() > max_len {
            return Err(KmsError::Invalid(format!(
                "plaintext is {} bytes; this API accepts at most {max_len}",
                plaintext.len()
            )));
        }
        let deadline = self.deadline();
        let ct = self.with_token(deadline, |t| self.vault.encrypt(t, &self.key, plaintext, deadline))?;
        let kv = KeyVersion {
            name: self.key.clone(),
            version: ct.version(),
            created: self.created(ct.version(), deadline),
        };
        self.saw_version(kv.version);
        Ok(Encrypted {
            ciphertext: ct,
            key: kv,
        })
    }

    /// Decrypts a ciphertext that names `key`. Only the primary key and the
    /// `--decrypt-key` keys are sent to Vault; anything else is a foreign
    /// key error. The plaintext returned is exactly what one transit
    /// decrypt returned.
    pub fn decrypt(&self, key: &KeyName, ct: &VaultCiphertext) -> Result<Vec<u8>, KmsError> {
        if *key != self.key && !self.decrypt_keys.contains(key) {
            let hint = if key.mount == self.key.mount {
                format!(" (if it is an older key, add --decrypt-key {})", key.key)
            } else {
                String::new()
            };
            return Err(KmsError::ForeignKey(format!(
                "the ciphertext belongs to transit key {key}, but this plugin serves {}{hint}",
                self.key
            )));
        }
        let deadline = self.deadline();
        Ok(self.with_token(deadline, |t| self.vault.decrypt(t, key, ct, deadline))?)
    }

    /// Decrypts a ciphertext that does not name its key (a bare `vault:vN:`
    /// v1 cipher, as older plugins stored): with the primary key, then with
    /// each `--decrypt-key` while Vault says the key does not fit. Transit
    /// encryption is authenticated, so a wrong key fails; it never yields
    /// another plaintext. All tries share one deadline.
    pub fn decrypt_unnamed(&self, ct: &VaultCiphertext) -> Result<Vec<u8>, KmsError> {
        let deadline = self.deadline();
        let mut result = Err(VaultError::Credentials("no key configured".into()));
        for key in std::iter::once(&self.key).chain(&self.decrypt_keys) {
            result = self.with_token(deadline, |t| self.vault.decrypt(t, key, ct, deadline));
            match &result {
                Err(e) if e.class() == VaultErrorClass::Rejected => continue,
                _ => break,
            }
        }
        Ok(result?)
    }
}
