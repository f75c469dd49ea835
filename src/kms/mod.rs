//! The one KMS core both API versions share: encrypt and decrypt a DEK with
//! the transit key ([`Kms`]), report health and the current key id
//! ([`health`]), and say what went wrong ([`KmsError`]). Nothing here knows
//! gRPC or HTTP.

mod coalesce;
mod error;
mod health;
mod incarnation;
mod kek;
mod seal;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use error::KmsError;
use health::CheckState;
pub use health::{Gauges, Health, StatusReport};
pub use kek::{KekPolicy, SealedLocally};

use crate::limits::MAX_PLAINTEXT;
use crate::secret::Secret;
use crate::session::Session;
use crate::vault::{VaultClient, VaultError, VaultErrorClass};
use crate::wire::purpose::{self, Purpose};
use crate::wire::{KeyName, KeyVersion, VaultCiphertext};
use coalesce::Lane;
use zeroize::Zeroizing;

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
    /// Coalescing of concurrent transit calls (`--coalesce`); `None` when off.
    lanes: Option<Lanes>,
    /// The local KEK (`--local-kek`) and the cache of unwrapped ones.
    keks: kek::Keks,
}

type EncryptLane = Lane<Zeroizing<Vec<u8>>, Result<VaultCiphertext, VaultError>>;
type DecryptLane = Lane<VaultCiphertext, Result<Vec<u8>, VaultError>>;

/// One lane per key and operation: Encrypt with the primary key, Decrypt
/// with each key this plugin decrypts with.
struct Lanes {
    encrypt: EncryptLane,
    decrypt: Vec<(KeyName, DecryptLane)>,
}

/// How a lane's calls reach Vault: with the token of the request that
/// sends them, within its deadline.
struct Transit<'k> {
    kms: &'k Kms,
    key: &'k KeyName,
    deadline: Instant,
}

impl Transit<'_> {
    /// Every item's outcome: the call's own error fails them all.
    fn each<T>(n: usize, r: Result<Vec<Result<T, VaultError>>, VaultError>) -> Vec<Result<T, VaultError>> {
        r.unwrap_or_else(|e| (0..n).map(|_| Err(e.clone())).collect())
    }

    fn lost<T>(&self) -> Result<T, VaultError> {
        Err(VaultError::BadResponse {
            addr: self.kms.vault.preferred_addr().to_owned(),
            path: format!("{}/{}", self.key.mount, self.key.key),
            what: "a coalesced call gave no result for this request (a bug: see the log)".into(),
        })
    }

    fn gave_up<T>(&self, caller_gone: bool, waited: Duration) -> Result<T, VaultError> {
        let addr = self.kms.vault.preferred_addr().to_owned();
        Err(if caller_gone {
            VaultError::Abandoned { addr }
        } else {
            VaultError::Timeout { addr, after: waited }
        })
    }
}

impl coalesce::Backend<Zeroizing<Vec<u8>>, Result<VaultCiphertext, VaultError>> for Transit<'_> {
    fn one(&self, pt: &Zeroizing<Vec<u8>>) -> Result<VaultCiphertext, VaultError> {
        let (vault, d) = (&self.kms.vault, self.deadline);
        self.kms.with_token(d, |t| vault.encrypt(t, self.key, pt, d))
    }
    fn many(&self, pts: &[&Zeroizing<Vec<u8>>]) -> Vec<Result<VaultCiphertext, VaultError>> {
        let (vault, d) = (&self.kms.vault, self.deadline);
        let pts: Vec<&[u8]> = pts.iter().map(|p| p.as_slice()).collect();
        Self::each(
            pts.len(),
            self.kms.with_token(d, |t| vault.encrypt_batch(t, self.key, &pts, d)),
        )
    }
    fn lost(&self) -> Result<VaultCiphertext, VaultError> {
        Transit::lost(self)
    }
    fn gave_up(&self, caller_gone: bool, waited: Duration) -> Result<VaultCiphertext, VaultError> {
        Transit::gave_up(self, caller_gone, waited)
    }
}

impl coalesce::Backend<VaultCiphertext, Result<Vec<u8>, VaultError>> for Transit<'_> {
    fn one(&self, ct: &VaultCiphertext) -> Result<Vec<u8>, VaultError> {
        let (vault, d) = (&self.kms.vault, self.deadline);
        self.kms.with_token(d, |t| vault.decrypt(t, self.key, ct, d))
    }
    fn many(&self, cts: &[&VaultCiphertext]) -> Vec<Result<Vec<u8>, VaultError>> {
        let (vault, d) = (&self.kms.vault, self.deadline);
        Self::each(
            cts.len(),
            self.kms.with_token(d, |t| vault.decrypt_batch(t, self.key, cts, d)),
        )
    }
    fn lost(&self) -> Result<Vec<u8>, VaultError> {
        Transit::lost(self)
    }
    fn gave_up(&self, caller_gone: bool, waited: Duration) -> Result<Vec<u8>, VaultError> {
        Transit::gave_up(self, caller_gone, waited)
    }
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
        coalesce: bool,
        local_kek: Option<KekPolicy>,
    ) -> Kms {
        let on_batch: coalesce::OnBatch = |op, n| crate::metrics::metrics().coalesced(op, n);
        let lanes = coalesce.then(|| Lanes {
            encrypt: Lane::new("encrypt", on_batch, |pt: &Zeroizing<Vec<u8>>| pt.len()),
            decrypt: std::iter::once(&key)
                .chain(&decrypt_keys)
                .map(|k| {
                    (
                        k.clone(),
                        Lane::new("decrypt", on_batch, |ct: &VaultCiphertext| ct.as_str().len()),
                    )
                })
                .collect(),
        });
        Kms {
            lanes,
            keks: kek::Keks::new(local_kek),
            vault,
            session,
            key,
            decrypt_keys,
            timeout,
            check: Mutex::new(CheckState {
                health: Health::Unknown,
                probing: false,
                failed_meanwhile: false,
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
        // Less than the full budget left (time spent queued): a timeout
        // then is no evidence against Vault (issue 21, 7).
        let cut_short = deadline.saturating_duration_since(Instant::now()) + crate::limits::CALLER_POLL < self.timeout;
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
        if matches!(&result, Err(e) if e.shows_outage(cut_short)) {
            self.saw_unavailable();
        }
        result
    }

    /// Encrypts a DEK with the transit key's latest version, tagged with
    /// its API (`purpose`: [`Purpose::DekV2`] or [`Purpose::DekV1`]), so
    /// that only that API's Decrypt returns it. `max_len` is the calling
    /// API's plaintext limit (at most [`MAX_PLAINTEXT`]); larger or empty
    /// input is refused before any Vault call.
    pub fn encrypt(&self, plaintext: &[u8], max_len: usize, purpose: Purpose) -> Result<Encrypted, KmsError> {
        self.check_plaintext(plaintext, max_len)?;
        self.transit_encrypt(&purpose::tag(purpose, plaintext), self.deadline())
    }

    /// Empty input, or more than `max_len` (at most [`MAX_PLAINTEXT`]), is
    /// refused before any Vault call or local seal.
    fn check_plaintext(&self, plaintext: &[u8], max_len: usize) -> Result<(), KmsError> {
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
        if purpose::looks_tagged(plaintext) {
            return Err(KmsError::Invalid(
                "the plaintext starts with a tag trousseau reserves to mark what a transit plaintext is for; a DEK never does".into(),
            ));
        }
        Ok(())
    }

    /// One transit encrypt with the primary key (coalesced when on), and
    /// the key version that made it.
    fn transit_encrypt(&self, plaintext: &[u8], deadline: Instant) -> Result<Encrypted, KmsError> {
        let via = Transit {
            kms: self,
            key: &self.key,
            deadline,
        };
        let ct = match &self.lanes {
            Some(l) => l
                .encrypt
                .run(Zeroizing::new(plaintext.to_vec()), deadline, crate::caller::gone, &via),
            None => coalesce::Backend::one(&via, &Zeroizing::new(plaintext.to_vec())),
        }?;
        let kv = KeyVersion {
            name: self.key.clone(),
            version: ct.version(),
            created: self.created(ct.version(), deadline),
        };
        self.saw_version(health::Current {
            version: kv.version,
            created: kv.created,
        });
        Ok(Encrypted {
            ciphertext: ct,
            key: kv,
        })
    }

    /// Decrypts a ciphertext that names `key`. Only the primary key and the
    /// `--decrypt-key` keys are sent to Vault; anything else is a foreign
    /// key error. The plaintext returned is exactly what one transit
    /// decrypt returned.
    /// The plaintext must be tagged for `purpose` (the calling API) or
    /// carry no tag (written before tags existed): a wrapped local KEK, or
    /// a DEK made through the other API, is refused.
    pub fn decrypt(&self, key: &KeyName, ct: &VaultCiphertext, purpose: Purpose) -> Result<Vec<u8>, KmsError> {
        self.check_served(key)?;
        self.keks.refuse_wrapped_kek(key, ct)?;
        let pt = Zeroizing::new(self.decrypt_with(key, ct, self.deadline())?);
        only_for(&pt, purpose)
    }

    /// Only the primary key and the `--decrypt-key` keys are used; any
    /// other is a foreign key error, before any Vault call.
    fn check_served(&self, key: &KeyName) -> Result<(), KmsError> {
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
        Ok(())
    }

    /// One transit decrypt with `key`, coalesced with others when on.
    fn decrypt_with(&self, key: &KeyName, ct: &VaultCiphertext, deadline: Instant) -> Result<Vec<u8>, VaultError> {
        let via = Transit {
            kms: self,
            key,
            deadline,
        };
        let lane = self
            .lanes
            .as_ref()
            .and_then(|l| l.decrypt.iter().find(|(k, _)| k == key))
            .map(|(_, lane)| lane);
        match lane {
            Some(lane) => lane.run(ct.clone(), deadline, crate::caller::gone, &via),
            None => coalesce::Backend::one(&via, ct),
        }
    }

    /// Decrypts a ciphertext that does not name its key (a bare `vault:vN:`
    /// v1 cipher, as older plugins stored): with the primary key, then with
    /// each `--decrypt-key` while Vault says the key does not fit. Transit
    /// encryption is authenticated, so a wrong key fails; it never yields
    /// another plaintext. All tries share one deadline.
    pub fn decrypt_unnamed(&self, ct: &VaultCiphertext, purpose: Purpose) -> Result<Vec<u8>, KmsError> {
        let deadline = self.deadline();
        let mut result = Err(VaultError::Credentials("no key configured".into()));
        for key in std::iter::once(&self.key).chain(&self.decrypt_keys) {
            self.keks.refuse_wrapped_kek(key, ct)?;
            result = self.decrypt_with(key, ct, deadline);
            match &result {
                Err(e) if e.class() == VaultErrorClass::Rejected => continue,
                _ => break,
            }
        }
        let pt = Zeroizing::new(result?);
        only_for(&pt, purpose)
    }
}

/// Decrypt's refusal of a wrapped local KEK, by its tag or because this
/// plugin holds it (`Keks::refuse_wrapped_kek`): one message for both.
fn not_a_dek() -> KmsError {
    KmsError::Invalid("the ciphertext is a wrapped local KEK, not a DEK: a KEK never leaves the plugin".into())
}

/// The DEK in a decrypted transit plaintext, if it was made for `purpose`
/// or carries no tag (made before tags existed).
fn only_for(plaintext: &[u8], purpose: Purpose) -> Result<Vec<u8>, KmsError> {
    match purpose::read(plaintext) {
        (p, body) if p == purpose || p == Purpose::Untagged => Ok(body.to_vec()),
        (Purpose::Kek, _) => Err(not_a_dek()),
        (other, _) => Err(KmsError::Invalid(format!(
            "the ciphertext holds {}, made through the other KMS API: each API opens only what it made",
            other.name()
        ))),
    }
}
