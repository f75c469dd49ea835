//! The one KMS core both API versions share: encrypt and decrypt a DEK with
//! the transit key, report health and the current key id, and map every
//! failure to one gRPC status in one place ([`KmsError::to_rpc_status`]).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use grpcio::{RpcStatus, RpcStatusCode};

use crate::envelope::{EnvelopeError, KeyName, KeyVersion, VaultCiphertext};
use crate::limits::{FAILING_PROBE_TTL, HEALTHY_PROBE_TTL, MAX_PLAINTEXT, PROBE_PLAINTEXT};
use crate::secret::Secret;
use crate::session::Session;
use crate::vault::{VaultClient, VaultError, VaultErrorClass};

/// A failed KMS operation, named by who is at fault.
#[derive(Debug)]
pub enum KmsError {
    /// The caller sent something we cannot accept (bad ciphertext or key id).
    Invalid(String),
    /// The ciphertext or key id names a key this plugin does not serve.
    ForeignKey(String),
    /// Vault failed or refused.
    Vault(VaultError),
    /// Too many requests in flight.
    Overloaded(usize),
    /// The caller's deadline passed before we started.
    DeadlineExceeded,
    /// Cannot happen; reported instead of panicking.
    Internal(String),
}

impl From<EnvelopeError> for KmsError {
    fn from(e: EnvelopeError) -> Self {
        KmsError::Invalid(e.to_string())
    }
}

impl From<VaultError> for KmsError {
    fn from(e: VaultError) -> Self {
        KmsError::Vault(e)
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::Invalid(m) => write!(f, "invalid request: {m}"),
            KmsError::ForeignKey(m) => write!(f, "foreign key: {m}"),
            KmsError::Vault(e) => write!(f, "{e}"),
            KmsError::Overloaded(n) => write!(f, "overloaded: {n} requests already in flight (--max-in-flight)"),
            KmsError::DeadlineExceeded => write!(f, "deadline exceeded before the request was handled"),
            KmsError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl KmsError {
    /// Short class for log lines.
    pub fn class(&self) -> &'static str {
        match self {
            KmsError::Invalid(_) => "invalid",
            KmsError::ForeignKey(_) => "foreign_key",
            KmsError::Vault(e) => e.class_name(),
            KmsError::Overloaded(_) => "overloaded",
            KmsError::DeadlineExceeded => "deadline",
            KmsError::Internal(_) => "internal",
        }
    }

    /// The single mapping from our errors to what goes on the wire.
    pub fn to_rpc_status(&self) -> RpcStatus {
        let code = match self {
            KmsError::Invalid(_) | KmsError::ForeignKey(_) => RpcStatusCode::INVALID_ARGUMENT,
            KmsError::Vault(e) => match e.class() {
                VaultErrorClass::Unavailable => RpcStatusCode::UNAVAILABLE,
                VaultErrorClass::Denied => RpcStatusCode::PERMISSION_DENIED,
                VaultErrorClass::NotFound => RpcStatusCode::FAILED_PRECONDITION,
                VaultErrorClass::Rejected => RpcStatusCode::INVALID_ARGUMENT,
                VaultErrorClass::Internal => RpcStatusCode::INTERNAL,
            },
            KmsError::Overloaded(_) => RpcStatusCode::RESOURCE_EXHAUSTED,
            KmsError::DeadlineExceeded => RpcStatusCode::DEADLINE_EXCEEDED,
            KmsError::Internal(_) => RpcStatusCode::INTERNAL,
        };
        RpcStatus::with_message(code, self.to_string())
    }
}

/// What the last health probe found.
#[derive(Clone, Debug)]
enum Health {
    Unknown,
    Ok {
        at: Instant,
        version: u64,
    },
    Failing {
        at: Instant,
        since: Instant,
        cause: String,
        last_version: Option<u64>,
    },
}

struct ProbeState {
    health: Health,
    probing: bool,
}

/// Status as the adapters report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// `Ok(())` when Vault answered a real transit round trip recently.
    pub healthy: Result<(), String>,
    /// Key id of the key's current version, if ever learnt.
    pub key_id: Option<String>,
}

/// The KMS core. One per process, shared by reference across threads.
pub struct Kms {
    vault: VaultClient,
    session: Arc<Session>,
    /// Encrypts every new DEK.
    key: KeyName,
    /// Older keys that still decrypt (`--decrypt-key`).
    decrypt_keys: Vec<KeyName>,
    timeout: Duration,
    probe: Mutex<ProbeState>,
    probe_done: Condvar,
}

fn lock(m: &Mutex<ProbeState>) -> MutexGuard<'_, ProbeState> {
    // The state is a plain value that every writer leaves consistent; a
    // panicked writer cannot leave it half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
            probe: Mutex::new(ProbeState {
                health: Health::Unknown,
                probing: false,
            }),
            probe_done: Condvar::new(),
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
        match call(&ticket.token) {
            Err(e) if e.class() == VaultErrorClass::Denied => match self.session.refresh(ticket.gen, deadline) {
                Some(fresh) => {
                    log::debug!("vault refused the token ({e}); retrying once with a fresh one");
                    call(&fresh.token)
                }
                None => Err(e),
            },
            r => r,
        }
    }

    /// Encrypts a DEK with the transit key's latest version. `max_len` is
    /// the calling API's plaintext limit (at most [`MAX_PLAINTEXT`]); larger
    /// or empty input is refused before any Vault call.
    pub fn encrypt(&self, plaintext: &[u8], max_len: usize) -> Result<(VaultCiphertext, KeyVersion), KmsError> {
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
        };
        self.saw_version(kv.version);
        Ok((ct, kv))
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

    /// What `/metrics` shows without calling Vault: whether the last probe
    /// succeeded, the latest key version seen, and the token's time left.
    pub fn snapshot(&self) -> (bool, Option<u64>, Option<Duration>) {
        let st = lock(&self.probe);
        let healthy = matches!(st.health, Health::Ok { .. });
        (healthy, known_version(&st.health), self.session.ttl_left())
    }

    /// Health and current key id, from a probe at most
    /// [`HEALTHY_PROBE_TTL`] old (or [`FAILING_PROBE_TTL`] when failing).
    /// Concurrent callers share one probe: a burst of Status calls costs
    /// Vault at most one probe (an encrypt and a decrypt).
    pub fn status(&self) -> StatusReport {
        let mut st = lock(&self.probe);
        loop {
            if fresh(&st.health) {
                return report(&self.key, &st.health);
            }
            if !st.probing {
                break;
            }
            // Another thread is probing; wait for it, bounded by its budget.
            let wait = self.timeout + Duration::from_millis(200);
            let (g, res) = self
                .probe_done
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner);
            st = g;
            if res.timed_out() {
                return report(&self.key, &st.health);
            }
        }
        st.probing = true;
        drop(st);

        let outcome = self.probe_once();

        let mut st = lock(&self.probe);
        let now = Instant::now();
        st.health = match outcome {
            Ok(version) => {
                if !matches!(st.health, Health::Ok { .. }) {
                    log::info!("vault transit key {} healthy at version {version}", self.key);
                }
                Health::Ok {
                    at: now,
                    version: version.max(known_version(&st.health).unwrap_or(0)),
                }
            }
            Err(cause) => {
                let (since, last_version) = match &st.health {
                    Health::Failing {
                        since, last_version, ..
                    } => (*since, *last_version),
                    other => {
                        log::warn!("vault health probe failed: {cause}");
                        (now, known_version(other))
                    }
                };
                Health::Failing {
                    at: now,
                    since,
                    cause,
                    last_version,
                }
            }
        };
        st.probing = false;
        let r = report(&self.key, &st.health);
        drop(st);
        self.probe_done.notify_all();
        r
    }

    /// One real transit round trip with a fixed, non-secret plaintext.
    fn probe_once(&self) -> Result<u64, String> {
        let deadline = self.deadline();
        let ct = self
            .with_token(deadline, |t| {
                self.vault.encrypt(t, &self.key, PROBE_PLAINTEXT, deadline)
            })
            .map_err(|e| e.to_string())?;
        let pt = self
            .with_token(deadline, |t| self.vault.decrypt(t, &self.key, &ct, deadline))
            .map_err(|e| e.to_string())?;
        if pt != PROBE_PLAINTEXT {
            return Err("vault transit round trip returned different bytes".into());
        }
        Ok(ct.version())
    }

    /// An Encrypt saw a version: let Status report it at once if newer, so
    /// Status and Encrypt agree on the key id right after a rotation.
    fn saw_version(&self, v: u64) {
        let mut st = lock(&self.probe);
        if let Health::Ok { version, .. } = &mut st.health {
            if v > *version {
                *version = v;
            }
        }
    }
}

fn fresh(h: &Health) -> bool {
    match h {
        Health::Unknown => false,
        Health::Ok { at, .. } => at.elapsed() < HEALTHY_PROBE_TTL,
        Health::Failing { at, .. } => at.elapsed() < FAILING_PROBE_TTL,
    }
}

fn known_version(h: &Health) -> Option<u64> {
    match h {
        Health::Unknown => None,
        Health::Ok { version, .. } => Some(*version),
        Health::Failing { last_version, .. } => *last_version,
    }
}

fn report(key: &KeyName, h: &Health) -> StatusReport {
    let key_id = known_version(h).map(|version| {
        KeyVersion {
            name: key.clone(),
            version,
        }
        .key_id()
    });
    let healthy = match h {
        Health::Unknown => Err("vault not probed yet".to_owned()),
        Health::Ok { .. } => Ok(()),
        Health::Failing { since, cause, .. } => Err(format!("failing for {}s: {cause}", since.elapsed().as_secs())),
    };
    StatusReport { healthy, key_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes() {
        let v = |status: u16, message: &str| {
            KmsError::Vault(VaultError::Status {
                addr: "http://127.0.0.1:1".into(),
                op: "decrypt",
                path: "transit/decrypt/k".into(),
                status,
                message: message.into(),
            })
        };
        let code = |e: KmsError| e.to_rpc_status().code();
        assert_eq!(code(KmsError::Invalid("x".into())), RpcStatusCode::INVALID_ARGUMENT);
        assert_eq!(code(KmsError::ForeignKey("x".into())), RpcStatusCode::INVALID_ARGUMENT);
        assert_eq!(code(v(503, "sealed")), RpcStatusCode::UNAVAILABLE);
        assert_eq!(code(v(403, "permission denied")), RpcStatusCode::PERMISSION_DENIED);
        assert_eq!(
            code(v(400, "encryption key not found")),
            RpcStatusCode::FAILED_PRECONDITION
        );
        assert_eq!(
            code(v(400, "cipher: message authentication failed")),
            RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(code(KmsError::Overloaded(3)), RpcStatusCode::RESOURCE_EXHAUSTED);
        assert_eq!(
            code(KmsError::Vault(VaultError::Unreachable {
                addr: "a".into(),
                cause: "refused".into()
            })),
            RpcStatusCode::UNAVAILABLE
        );
        let s = v(503, "Vault is sealed").to_rpc_status();
        assert!(
            s.message().contains("503") && s.message().contains("127.0.0.1:1"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn report_reflects_health() {
        let key = KeyName {
            mount: "transit".into(),
            key: "k".into(),
        };
        let r = report(&key, &Health::Unknown);
        assert!(r.healthy.is_err() && r.key_id.is_none());
        let r = report(
            &key,
            &Health::Ok {
                at: Instant::now(),
                version: 4,
            },
        );
        assert_eq!(
            r,
            StatusReport {
                healthy: Ok(()),
                key_id: Some("vault-transit:transit/k:v4".into())
            }
        );
        let r = report(
            &key,
            &Health::Failing {
                at: Instant::now(),
                since: Instant::now(),
                cause: "down".into(),
                last_version: Some(4),
            },
        );
        assert!(r.healthy.unwrap_err().contains("down"));
        assert_eq!(r.key_id.as_deref(), Some("vault-transit:transit/k:v4"));
    }

    #[test]
    fn freshness_windows() {
        assert!(!fresh(&Health::Unknown));
        assert!(fresh(&Health::Ok {
            at: Instant::now(),
            version: 1
        }));
        let old = Instant::now().checked_sub(HEALTHY_PROBE_TTL + Duration::from_millis(1));
        if let Some(at) = old {
            assert!(!fresh(&Health::Ok { at, version: 1 }));
        }
        let failing_old = Instant::now().checked_sub(FAILING_PROBE_TTL + Duration::from_millis(1));
        if let Some(at) = failing_old {
            assert!(!fresh(&Health::Failing {
                at,
                since: at,
                cause: String::new(),
                last_version: None
            }));
        }
    }
}
