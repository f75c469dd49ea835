//! The opt-in local KEK (`--local-kek`): a random AES-256-GCM key in this
//! process's memory, wrapped once by transit, seals new DEKs here instead
//! of a transit call per Encrypt. Each sealed DEK is stored with the KEK as
//! transit wrapped it (`wire::local`), so any plugin that may decrypt with
//! that transit key can unwrap it again.
//!
//! - Rotation: a new KEK (one transit encrypt) once the current one has
//!   sealed `--local-kek-max-uses` DEKs, once it is `--local-kek-max-age`
//!   old, and once Status's key id is newer than the transit key version
//!   that wrapped it (a rotated or re-created transit key), so Encrypt's
//!   key id always equals Status's. One rotation at a time; the others wait
//!   for it within their deadlines.
//! - Decrypt: unwrapped KEKs stay in a bounded cache ([`LOCAL_KEK_CACHE`]);
//!   one not held costs one transit decrypt (through the key's coalescing
//!   lane), after the same served-key check as any Decrypt.
//! - Health: a rotation that failed makes Status, `/readyz` and the
//!   `ready` gauge report failure until one succeeds; each health check
//!   retries it.
//!
//! Decrypt of a local-KEK ciphertext works with or without the flag, so
//! turning it off loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::health::lock;
use super::seal::{kek_body, new_kek, open, seal, Kek};
use super::{Kms, KmsError};
use crate::limits::{CALLER_POLL, LOCAL_KEK_CACHE, LOCAL_KEK_LEN};
use crate::vault::VaultError;
use crate::wire::purpose::{self, Purpose};
use crate::wire::{KeyName, KeyVersion, LocalSealed, VaultCiphertext};

/// When a local KEK is replaced (`--local-kek-max-uses`, `--local-kek-max-age`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekPolicy {
    pub max_uses: u64,
    pub max_age: Duration,
}

/// The KEK that seals new DEKs.
struct Active {
    kek: Arc<Kek>,
    made_by: KeyVersion,
    born: Instant,
    uses: u64,
}

#[derive(Default)]
struct State {
    active: Option<Active>,
    rotating: bool,
    /// Why the last rotation failed, until one succeeds.
    failed: Option<String>,
}

/// Unwrapped KEKs by transit key and wrapped text, least recently used
/// dropped first.
#[derive(Default)]
struct Cache {
    held: HashMap<String, (Arc<Kek>, u64)>,
    tick: u64,
}

/// The local-KEK state of one plugin.
pub(super) struct Keks {
    /// `None` when `--local-kek` is off (Decrypt still opens sealed DEKs).
    policy: Option<KekPolicy>,
    rng: SystemRandom,
    state: Mutex<State>,
    rotated: Condvar,
    cache: Mutex<Cache>,
    /// KEKs being unwrapped now: a Decrypt needing one waits for that answer.
    unwrapping: Mutex<HashSet<String>>,
    unwrapped: Condvar,
}

/// A DEK sealed under the local KEK: the sealed bytes, the wrapped KEK and
/// the transit key version that wrapped it (the key id).
pub struct SealedLocally {
    pub sealed: Vec<u8>,
    pub wrapped: VaultCiphertext,
    pub key: KeyVersion,
}

impl Keks {
    pub(super) fn new(policy: Option<KekPolicy>) -> Keks {
        Keks {
            policy,
            rng: SystemRandom::new(),
            state: Mutex::default(),
            rotated: Condvar::new(),
            cache: Mutex::default(),
            unwrapping: Mutex::default(),
            unwrapped: Condvar::new(),
        }
    }

    /// Why Status must not say ok: the last rotation failed.
    pub(super) fn failure(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    fn cached(&self, id: &str) -> Option<Arc<Kek>> {
        let mut c = lock(&self.cache);
        c.tick += 1;
        let tick = c.tick;
        c.held.get_mut(id).map(|(k, used)| {
            *used = tick;
            k.clone()
        })
    }

    /// A Decrypt of a wrapped KEK this plugin holds is refused before any
    /// Vault call. KEKs wrapped since purpose tags exist are refused after
    /// the decrypt anyway (`only_for`); this also covers the untagged ones
    /// wrapped before, which read like any DEK.
    pub(super) fn refuse_wrapped_kek(&self, key: &KeyName, ct: &VaultCiphertext) -> Result<(), KmsError> {
        if lock(&self.cache).held.contains_key(&cache_id(key, ct)) {
            return Err(super::not_a_dek());
        }
        Ok(())
    }

    fn remember(&self, id: String, kek: Arc<Kek>) {
        let mut c = lock(&self.cache);
        c.tick += 1;
        let tick = c.tick;
        if !c.held.contains_key(&id) && c.held.len() >= LOCAL_KEK_CACHE {
            let oldest = c
                .held
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                c.held.remove(&oldest);
            }
        }
        c.held.insert(id, (kek, tick));
    }
}

/// The cache's name for a KEK: the transit key that unwraps it and its
/// wrapped text (neither is secret).
fn cache_id(key: &KeyName, wrapped: &VaultCiphertext) -> String {
    format!("{key}\n{}", wrapped.as_str())
}

/// Why `a` must be replaced before it seals another DEK, if it must.
/// `current` is the key version Status reports: any other version than the
/// one that wrapped the KEK, newer or older, or the same number created at
/// another time, means the transit key was rotated, deleted and created
/// again, or restored from a backup, and a KEK wrapped by a version Vault
/// no longer has would seal DEKs no other plugin could open. Status
/// follows every Encrypt's version (`saw_version`), so once the new KEK is
/// made the two agree and this is not due again.
fn due(a: &Active, policy: &KekPolicy, current: Option<&KeyVersion>) -> Option<&'static str> {
    if a.uses >= policy.max_uses {
        return Some("uses");
    }
    if a.born.elapsed() >= policy.max_age {
        return Some("age");
    }
    let made = &a.made_by;
    let moved = current.is_some_and(|c| {
        c.version != made.version || matches!((c.created, made.created), (Some(c_at), Some(m_at)) if c_at != m_at)
    });
    moved.then_some("key")
}

impl Kms {
    /// Seals a DEK under the local KEK (`--local-kek`), rotating the KEK
    /// first when it is due. `aad` names the API, so a v1 sealed DEK is not
    /// taken as a v2 one.
    pub fn seal_local(&self, plaintext: &[u8], max_len: usize, aad: &[u8]) -> Result<SealedLocally, KmsError> {
        self.check_plaintext(plaintext, max_len)?;
        // Sealing makes no Vault call, so nothing else would notice a
        // transit key deleted and created again, or restored, until the
        // apiserver next asks Status (every 60 s): DEKs sealed meanwhile
        // under a KEK only the dead key unwraps would open on no other
        // plugin. While Vault is healthy, the key is checked again at least
        // every HEALTHY_CHECK_TTL (the shared health check).
        self.recheck_if_stale();
        let (kek, key) = self.current_kek(self.deadline())?;
        Ok(SealedLocally {
            sealed: seal(&self.keks.rng, &kek, plaintext, aad)?,
            wrapped: kek.wrapped.clone(),
            key,
        })
    }

    /// Opens a DEK sealed under a local KEK that `key` wrapped: the KEK
    /// from the cache, or unwrapped by one transit decrypt, which the
    /// Decrypts that need the same KEK meanwhile wait for.
    pub fn open_local(&self, key: &KeyName, local: &LocalSealed, aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.check_served(key)?;
        let (id, deadline, started) = (cache_id(key, &local.wrapped), self.deadline(), Instant::now());
        if let Some(kek) = self.keks.cached(&id) {
            return open(&kek, &local.sealed, aad);
        }
        let mut busy = lock(&self.keks.unwrapping);
        let kek = loop {
            if let Some(k) = self.keks.cached(&id) {
                break k;
            }
            if busy.insert(id.clone()) {
                drop(busy);
                let _done = Unwrapping {
                    keks: &self.keks,
                    id: &id,
                };
                let raw = Zeroizing::new(self.decrypt_with(key, &local.wrapped, deadline)?);
                crate::metrics::metrics().local_kek_unwrapped();
                let kek = Arc::new(new_kek(kek_body(&raw)?, local.wrapped.clone())?);
                self.keks.remember(id.clone(), kek.clone());
                break kek;
            }
            busy = self.wait_for(&self.keks.unwrapped, busy, deadline, started)?;
        };
        open(&kek, &local.sealed, aad)
    }

    /// Waits for another request's rotation or unwrap, within the deadline.
    fn wait_for<'a, T>(
        &self,
        cv: &Condvar,
        guard: std::sync::MutexGuard<'a, T>,
        deadline: Instant,
        started: Instant,
    ) -> Result<std::sync::MutexGuard<'a, T>, KmsError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || crate::caller::gone() {
            return Err(KmsError::Vault(VaultError::Timeout {
                addr: self.vault.preferred_addr().to_owned(),
                after: started.elapsed(),
            }));
        }
        let waited = cv.wait_timeout(guard, left.min(CALLER_POLL));
        Ok(waited.unwrap_or_else(PoisonError::into_inner).0)
    }

    /// Whether new DEKs are sealed locally.
    pub fn local_kek(&self) -> bool {
        self.keks.policy.is_some()
    }

    /// The health check's part: a failed rotation is tried again, so
    /// Status recovers with Vault instead of waiting for an Encrypt.
    pub(super) fn retry_failed_rotation(&self, deadline: Instant) -> Result<(), String> {
        if self.keks.failure().is_none() {
            return Ok(());
        }
        self.current_kek(deadline).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The KEK to seal one DEK with, counted as used.
    fn current_kek(&self, deadline: Instant) -> Result<(Arc<Kek>, KeyVersion), KmsError> {
        let Some(policy) = self.keks.policy else {
            return Err(KmsError::Internal(
                "local KEK asked for while --local-kek is off".into(),
            ));
        };
        let current = self.current_key();
        let started = Instant::now();
        let mut st = lock(&self.keks.state);
        let reason = loop {
            let reason = match st.active.as_mut() {
                Some(a) => match due(a, &policy, current.as_ref()) {
                    Some(why) => why,
                    None => {
                        a.uses += 1;
                        return Ok((a.kek.clone(), a.made_by.clone()));
                    }
                },
                None => "start",
            };
            if !st.rotating {
                break reason;
            }
            st = self.wait_for(&self.keks.rotated, st, deadline, started)?;
        };
        st.rotating = true;
        drop(st);
        let guard = RotationGuard { keks: &self.keks };
        let made = self.make_kek(deadline);
        drop(guard);
        let mut st = lock(&self.keks.state);
        st.rotating = false;
        let r = match made {
            Ok((kek, made_by)) => {
                log::info!("local KEK rotated ({reason}): wrapped by {}", made_by.key_id());
                crate::metrics::metrics().local_kek_rotated(reason);
                st.failed = None;
                st.active = Some(Active {
                    kek: kek.clone(),
                    made_by: made_by.clone(),
                    born: Instant::now(),
                    uses: 1,
                });
                Ok((kek, made_by))
            }
            Err(e) => {
                log::warn!("local KEK due ({reason}) but not rotated: {e}");
                st.failed = Some(format!("the local KEK is due ({reason}) and could not be rotated: {e}"));
                Err(e)
            }
        };
        drop(st);
        self.keks.rotated.notify_all();
        r
    }

    /// A new random KEK, wrapped by the primary transit key and cached.
    fn make_kek(&self, deadline: Instant) -> Result<(Arc<Kek>, KeyVersion), KmsError> {
        let mut raw = Zeroizing::new([0u8; LOCAL_KEK_LEN]);
        self.keks
            .rng
            .fill(raw.as_mut())
            .map_err(|_| KmsError::Internal("the system's random source failed".into()))?;
        let wrapped = self.transit_encrypt(&purpose::tag(Purpose::Kek, raw.as_slice()), deadline)?;
        let kek = Arc::new(new_kek(raw.as_slice(), wrapped.ciphertext.clone())?);
        self.keks.remember(cache_id(&self.key, &kek.wrapped), kek.clone());
        Ok((kek, wrapped.key))
    }
}

/// Held while a KEK is unwrapped; at the end, however it ends, waiters look again.
struct Unwrapping<'a> {
    keks: &'a Keks,
    id: &'a str,
}

impl Drop for Unwrapping<'_> {
    fn drop(&mut self) {
        lock(&self.keks.unwrapping).remove(self.id);
        self.keks.unwrapped.notify_all();
    }
}

/// Held while a rotation runs; on a panic it clears the flag and wakes the
/// waiters, so no request waits for a rotation that will never end.
struct RotationGuard<'a> {
    keks: &'a Keks,
}

impl Drop for RotationGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = lock(&self.keks.state);
            st.rotating = false;
            st.failed = Some("the local KEK rotation failed unexpectedly (a bug: see the log)".into());
            drop(st);
            self.keks.rotated.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        new_kek(&[byte; 32], VaultCiphertext::parse("vault:v1:AAAA", "t").unwrap()).unwrap()
    }

    fn version(version: u64, created: Option<u64>) -> KeyVersion {
        KeyVersion {
            name: KeyName {
                mount: "transit".into(),
                key: "k".into(),
            },
            version,
            created,
        }
    }

    #[test]
    fn due_after_uses_age_or_any_change_of_the_transit_key() {
        let policy = KekPolicy {
            max_uses: 3,
            max_age: Duration::from_secs(60),
        };
        let mut a = Active {
            kek: Arc::new(kek(1)),
            made_by: version(2, Some(100)),
            born: Instant::now(),
            uses: 1,
        };
        assert_eq!(due(&a, &policy, None), None);
        assert_eq!(due(&a, &policy, Some(&version(2, Some(100)))), None);
        // Without a creation time on one side, the number decides.
        assert_eq!(due(&a, &policy, Some(&version(2, None))), None);
        assert_eq!(due(&a, &policy, Some(&version(3, Some(200)))), Some("key"));
        assert_eq!(due(&a, &policy, Some(&version(3, None))), Some("key"));
        // Re-created key: versions start again at 1, created later.
        assert_eq!(due(&a, &policy, Some(&version(1, Some(300)))), Some("key"));
        // Deleted, created again and rotated to the same number.
        assert_eq!(due(&a, &policy, Some(&version(2, Some(300)))), Some("key"));
        // Restored from an older backup: v2 is gone, v1 is current.
        assert_eq!(due(&a, &policy, Some(&version(1, Some(90)))), Some("key"));
        a.uses = 3;
        assert_eq!(due(&a, &policy, None), Some("uses"));
        a.uses = 1;
        a.born = Instant::now() - Duration::from_secs(61);
        assert_eq!(due(&a, &policy, None), Some("age"));
    }

    #[test]
    fn cache_is_bounded_and_drops_the_least_recently_used() {
        let keks = Keks::new(None);
        for i in 0..LOCAL_KEK_CACHE {
            keks.remember(format!("k{i}"), Arc::new(kek(1)));
        }
        assert!(keks.cached("k0").is_some()); // k0 now the most recent
        keks.remember("new".into(), Arc::new(kek(2)));
        assert_eq!(lock(&keks.cache).held.len(), LOCAL_KEK_CACHE);
        assert!(keks.cached("k0").is_some());
        assert!(keks.cached("k1").is_none(), "the least recently used one stays");
        assert!(keks.cached("new").is_some());
    }
}
