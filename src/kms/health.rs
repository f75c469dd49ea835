//! Health: one real transit round trip, cached and single-flight, shared
//! by KMS v2 Status, `/readyz` and `/metrics`. At most one check per
//! [`HEALTHY_CHECK_TTL`] while healthy and per [`FAILING_CHECK_TTL`] while
//! failing, however many callers ask.

use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Kms;
use crate::limits::{CALLER_POLL, FAILING_CHECK_TTL, HEALTHY_CHECK_TTL, HEALTH_CHECK_PLAINTEXT};
use crate::wire::{KeyName, KeyVersion};

/// Which incarnation of the primary key's version Status reports: the
/// version and, when the token may read the key, the time Vault created it.
/// A key deleted and created again, or restored from an older backup,
/// changes it, downwards too (`follow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Current {
    pub version: u64,
    pub created: Option<u64>,
}

/// What the last health check found.
#[derive(Clone, Debug)]
pub enum Health {
    Unknown,
    Ok {
        at: Instant,
        current: Current,
    },
    Failing {
        at: Instant,
        since: Instant,
        cause: String,
        last: Option<Current>,
    },
}

pub(super) struct CheckState {
    pub(super) health: Health,
    pub(super) probing: bool,
    /// A request found Vault unavailable while a check was running: that
    /// check's "ok" is not cached (the next Status checks again).
    pub(super) failed_meanwhile: bool,
}

/// Status as the adapters report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// `Ok(())` when Vault answered a real transit round trip recently.
    pub healthy: Result<(), String>,
    /// Key id of the key's current version, if ever learnt.
    pub key_id: Option<String>,
}

/// What `/metrics` shows without calling Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gauges {
    /// The last check succeeded.
    pub ready: bool,
    /// The latest transit key version seen (health check or Encrypt).
    pub key_version: Option<u64>,
    /// Time left on the Vault token; `None` when it never expires.
    pub token_ttl: Option<Duration>,
}

impl Health {
    /// Whether the last check succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok { .. })
    }
}

/// The core's state locks (health, key times) despite a poisoned mutex.
pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    // The states are plain values that every writer leaves consistent; a
    // panicked writer cannot leave one half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Kms {
    /// What `/metrics` shows, without calling Vault.
    pub fn gauges(&self) -> Gauges {
        let st = lock(&self.check);
        Gauges {
            ready: st.health.is_ok() && self.keks.failure().is_none(),
            key_version: known(&st.health).map(|c| c.version),
            token_ttl: self.session.ttl_left(),
        }
    }

    /// The Status answer when the cached check is fresh, without waiting or
    /// calling Vault: the gRPC layer then answers on its completion-queue
    /// thread instead of starting a request thread for nothing.
    pub fn status_if_fresh(&self) -> Option<StatusReport> {
        let st = lock(&self.check);
        fresh(&st.health).then(|| self.report(&st.health))
    }

    /// Health and current key id, from a health check at most
    /// [`HEALTHY_CHECK_TTL`] old (or [`FAILING_CHECK_TTL`] when failing).
    /// Concurrent callers share one check: a burst of Status calls costs
    /// Vault at most one check (an encrypt, a decrypt and a read of the
    /// key's metadata).
    pub fn status(&self) -> StatusReport {
        let mut st = lock(&self.check);
        let mut wait_until = None;
        loop {
            if fresh(&st.health) {
                return self.report(&st.health);
            }
            if !st.probing {
                break;
            }
            // Another thread is probing; wait for it, bounded by its budget
            // and by this caller's deadline (asked every CALLER_POLL).
            let until = *wait_until.get_or_insert_with(|| Instant::now() + self.timeout + Duration::from_millis(200));
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::caller::gone() {
                return self.report(&st.health);
            }
            st = self
                .check_done
                .wait_timeout(st, left.min(CALLER_POLL))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.probing = true;
        st.failed_meanwhile = false;
        drop(st);
        // Clears `probing` and wakes the waiters if the check panics, so
        // Status never keeps its last answer ("ok" included) for good.
        let guard = CheckGuard { kms: self };
        // Shared by every Status caller waiting on it: the first one
        // leaving must not cut it short.
        let outcome = crate::caller::detached(|| self.check_round_trip());
        drop(guard);

        let mut st = lock(&self.check);
        self.settle(&mut st, outcome);
        st.probing = false;
        let r = self.report(&st.health);
        drop(st);
        self.check_done.notify_all();
        r
    }

    /// Records what a health check found.
    fn settle(&self, st: &mut CheckState, outcome: Result<Current, String>) {
        let now = Instant::now();
        st.health = match outcome {
            Ok(seen) => {
                // The check's answer replaces what Status said unless an
                // Encrypt saw a newer version of the same key meanwhile.
                let current = self.follow(known(&st.health), seen);
                if !matches!(st.health, Health::Ok { .. }) {
                    log::info!("vault transit key {} healthy at version {}", self.key, current.version);
                }
                // Vault answered the check but failed a request meanwhile:
                // "ok" for those who waited, not cached for the next Status.
                let at = if st.failed_meanwhile { stale_instant() } else { now };
                Health::Ok { at, current }
            }
            Err(cause) => {
                let (since, last) = match &st.health {
                    Health::Failing { since, last, .. } => (*since, *last),
                    other => {
                        log::warn!("vault health probe failed: {cause}");
                        (now, known(other))
                    }
                };
                Health::Failing {
                    at: now,
                    since,
                    cause,
                    last,
                }
            }
        };
    }

    /// Runs the health check (shared with Status) when the last one passed
    /// more than [`HEALTHY_CHECK_TTL`] ago. A failing or unknown state is
    /// left to Status: an outage must not stall every sealing request.
    pub(super) fn recheck_if_stale(&self) {
        let stale = matches!(lock(&self.check).health, Health::Ok { at, .. } if at.elapsed() >= HEALTHY_CHECK_TTL);
        if stale {
            let _ = self.status();
        }
    }

    /// One real transit round trip with a fixed, non-secret plaintext, and
    /// the key's version and creation time as Vault reports them now.
    fn check_round_trip(&self) -> Result<Current, String> {
        #[cfg(test)]
        tests::maybe_panic();
        let deadline = self.deadline();
        let ct = self
            .with_token(deadline, |t| {
                self.vault.encrypt(t, &self.key, HEALTH_CHECK_PLAINTEXT, deadline)
            })
            .map_err(|e| e.to_string())?;
        let pt = self
            .with_token(deadline, |t| self.vault.decrypt(t, &self.key, &ct, deadline))
            .map_err(|e| e.to_string())?;
        if pt != HEALTH_CHECK_PLAINTEXT {
            return Err("vault transit round trip returned different bytes".into());
        }
        // Also the moment a re-created key is noticed (`incarnation`). A
        // read Vault does not answer fails the check like the round trip.
        self.read_times(deadline)
            .map_err(|e| format!("reading the key's versions: {e}"))?;
        let seen = Current {
            version: ct.version(),
            created: self.known_created(ct.version()),
        };
        self.retry_failed_rotation(deadline)?;
        Ok(seen)
    }

    /// A request's Vault call failed for a reason that says Vault cannot
    /// serve (down, sealed, overloaded, slow): a cached "ok" is dropped at
    /// once, so the next Status and `/readyz` run a check of their own
    /// instead of reporting health for up to [`HEALTHY_CHECK_TTL`] more.
    /// A burst of such failures still costs Vault at most one check.
    pub(super) fn saw_unavailable(&self) {
        let mut st = lock(&self.check);
        if st.probing {
            st.failed_meanwhile = true;
        }
        if let Health::Ok { current, .. } = st.health {
            if !st.probing {
                log::warn!("vault unavailable to a request; Status and /readyz report it until a health check passes");
                st.health = Health::Failing {
                    at: stale_instant(),
                    since: Instant::now(),
                    cause: "a request just failed: vault unavailable".into(),
                    last: Some(current),
                };
            }
        }
    }

    /// An Encrypt saw a key version (with its creation time when known):
    /// Status reports it at once when it is newer, or when the version
    /// Status reported no longer exists in Vault (a key deleted and
    /// created again, or restored from an older backup), so Status and
    /// Encrypt agree on the key id right after any change of the key.
    pub(super) fn saw_version(&self, seen: Current) {
        let mut st = lock(&self.check);
        let next = self.follow(known(&st.health), seen);
        match &mut st.health {
            Health::Ok { current, .. } => *current = next,
            Health::Failing { last, .. } => *last = Some(next),
            Health::Unknown => {}
        }
    }

    /// What Status reports after `seen` was observed, given what it
    /// reported: `seen`, unless the reported version still exists in Vault
    /// (same version, same creation time, in the last read of the key) and
    /// is newer than `seen` (a rotation an Encrypt saw while an older
    /// answer was on its way). Never the larger number alone: a key
    /// created again starts over at v1, and a restored backup may be older.
    fn follow(&self, reported: Option<Current>, seen: Current) -> Current {
        match reported {
            Some(r) if r != seen && newer(r, seen) && self.still_exists(r) => r,
            _ => seen,
        }
    }
}

/// Whether `a` is a later version than `b` of the key: by creation time
/// when both are known (a key created again is newer whatever its
/// number), else by number.
fn newer(a: Current, b: Current) -> bool {
    match (a.created, b.created) {
        (Some(ta), Some(tb)) => (ta, a.version) > (tb, b.version),
        _ => a.version > b.version,
    }
}

/// An instant old enough that a result stamped with it is never fresh.
fn stale_instant() -> Instant {
    let now = Instant::now();
    now.checked_sub(HEALTHY_CHECK_TTL.max(FAILING_CHECK_TTL) * 2)
        .unwrap_or(now)
}

/// Held while a health check runs. Does nothing when dropped normally
/// (the code that set the flag clears it); on a panic it resets the state.
struct CheckGuard<'a> {
    kms: &'a Kms,
}

impl Drop for CheckGuard<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        crate::metrics::metrics().panicked("health_check");
        let mut st = lock(&self.kms.check);
        st.probing = false;
        let now = Instant::now();
        st.health = Health::Failing {
            at: now,
            since: now,
            cause: "the health check failed unexpectedly (a bug: see the log)".into(),
            last: known(&st.health),
        };
        drop(st);
        self.kms.check_done.notify_all();
    }
}

fn fresh(h: &Health) -> bool {
    match h {
        Health::Unknown => false,
        Health::Ok { at, .. } => at.elapsed() < HEALTHY_CHECK_TTL,
        Health::Failing { at, .. } => at.elapsed() < FAILING_CHECK_TTL,
    }
}

/// The key version Status reports, if any.
fn known(h: &Health) -> Option<Current> {
    match h {
        Health::Unknown => None,
        Health::Ok { current, .. } => Some(*current),
        Health::Failing { last, .. } => *last,
    }
}

impl Kms {
    /// What Status, `/readyz` and the metrics say of `h`.
    fn report(&self, h: &Health) -> StatusReport {
        let mut r = report(&self.key, h);
        if r.healthy.is_ok() {
            if let Some(why) = self.keks.failure() {
                r.healthy = Err(why);
            }
        }
        r
    }

    /// The key version Status reports (no Vault call), if known.
    pub(super) fn current_key(&self) -> Option<KeyVersion> {
        let c = known(&lock(&self.check).health)?;
        Some(KeyVersion {
            name: self.key.clone(),
            version: c.version,
            created: c.created,
        })
    }
}

fn report(key: &KeyName, h: &Health) -> StatusReport {
    let key_id = known(h).map(|c| {
        KeyVersion {
            name: key.clone(),
            version: c.version,
            created: c.created,
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
    use crate::wire::Purpose;
    use std::cell::Cell;
    use std::sync::Arc;

    thread_local! {
        static PANIC_IN_CHECK: Cell<bool> = const { Cell::new(false) };
    }

    /// The seam the tests use to make the next health check on this thread
    /// panic (compiled into unit tests only).
    pub(super) fn maybe_panic() {
        if PANIC_IN_CHECK.with(|p| p.replace(false)) {
            panic!("injected panic in the health check");
        }
    }

    /// A Kms whose Vault is a closed loopback port: every call fails fast.
    fn kms_without_vault() -> Kms {
        let mut cfg = crate::config::tests::sample_config();
        cfg.vault.addrs = vec![format!("http://127.0.0.1:{}", closed_port())];
        let vault = crate::vault::VaultClient::new(&cfg.vault).unwrap();
        let auth = crate::session::auth::AuthConfig::Token(crate::session::auth::TokenSource::Env(
            crate::secret::Secret::new("t".into()),
        ));
        let session = crate::session::Session::for_tests(vault.clone(), auth);
        let key = KeyName {
            mount: "transit".into(),
            key: "k".into(),
        };
        Kms::new(vault, session, key, Vec::new(), Duration::from_millis(300), true, None)
    }

    /// A version whose creation time is not known.
    fn v(version: u64) -> Current {
        Current { version, created: None }
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// A panic inside the check leaves no flag set and no "ok" behind: the
    /// next Status runs a check of its own at once instead of waiting for
    /// a check that will never finish, and reports failure.
    #[test]
    fn a_panicking_check_does_not_wedge_status() {
        let kms = Arc::new(kms_without_vault());
        lock(&kms.check).health = Health::Ok {
            at: stale_instant(),
            current: v(3),
        };
        PANIC_IN_CHECK.with(|p| p.set(true));
        let k = kms.clone();
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| k.status())).is_err());
        {
            let st = lock(&kms.check);
            assert!(!st.probing, "probing left set");
            assert!(matches!(
                st.health,
                Health::Failing {
                    last: Some(Current { version: 3, .. }),
                    ..
                }
            ));
        }
        let t = Instant::now();
        let r = kms.status();
        assert!(t.elapsed() < Duration::from_secs(2), "status waited {:?}", t.elapsed());
        assert!(r.healthy.is_err(), "{r:?}");
        assert_eq!(r.key_id.as_deref(), Some("vault-transit:transit/k:v3"));
    }

    /// Only a fresh check is answered without a thread; anything else
    /// goes to `status`, which may call Vault.
    #[test]
    fn status_if_fresh_answers_only_from_a_fresh_check() {
        let kms = kms_without_vault();
        assert!(kms.status_if_fresh().is_none(), "nothing checked yet");
        lock(&kms.check).health = Health::Ok {
            at: Instant::now(),
            current: v(2),
        };
        let r = kms.status_if_fresh().expect("a fresh ok");
        assert!(r.healthy.is_ok());
        assert_eq!(r.key_id.as_deref(), Some("vault-transit:transit/k:v2"));
        lock(&kms.check).health = Health::Ok {
            at: Instant::now() - HEALTHY_CHECK_TTL - Duration::from_millis(1),
            current: v(2),
        };
        assert!(kms.status_if_fresh().is_none(), "a stale ok must be checked again");
    }

    /// A request that finds Vault unavailable while a check runs: the
    /// check's "ok" goes to those who waited for it but is not cached, so
    /// the next Status checks again instead of answering "ok" for 10 s.
    #[test]
    fn an_unavailable_request_during_a_check_keeps_its_ok_from_the_cache() {
        let kms = kms_without_vault();
        let seen = Ok(v(2));
        lock(&kms.check).probing = true;
        kms.saw_unavailable();
        let mut st = lock(&kms.check);
        assert!(st.failed_meanwhile);
        kms.settle(&mut st, seen.clone());
        assert!(st.health.is_ok() && !fresh(&st.health), "{:?}", st.health);
        // A check with no failure meanwhile is cached as usual.
        st.failed_meanwhile = false;
        kms.settle(&mut st, seen);
        assert!(fresh(&st.health));
    }

    /// A request that finds Vault unavailable drops a cached "ok" at once.
    #[test]
    fn an_unavailable_request_drops_a_cached_ok() {
        let kms = kms_without_vault();
        lock(&kms.check).health = Health::Ok {
            at: Instant::now(),
            current: v(2),
        };
        assert!(kms.report(&lock(&kms.check).health).healthy.is_ok());
        let e = kms.encrypt(b"0123456789abcdef", 32, Purpose::DekV2).unwrap_err();
        assert_eq!(e.class(), "vault_unavailable", "{e}");
        assert!(kms.report(&lock(&kms.check).health).healthy.is_err());
        assert!(!kms.gauges().ready);
        assert!(!fresh(&lock(&kms.check).health), "the next Status must check");
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
                current: v(4),
            },
        );
        assert_eq!(
            r,
            StatusReport {
                healthy: Ok(()),
                key_id: Some("vault-transit:transit/k:v4".into())
            }
        );
        // With the version's creation time known, the key id carries it.
        let r = report(
            &key,
            &Health::Ok {
                at: Instant::now(),
                current: Current {
                    version: 4,
                    created: Some(1_796_235_632),
                },
            },
        );
        assert_eq!(r.key_id.as_deref(), Some("vault-transit:transit/k:v4@1796235632"));
        let r = report(
            &key,
            &Health::Failing {
                at: Instant::now(),
                since: Instant::now(),
                cause: "down".into(),
                last: Some(v(4)),
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
            current: v(1)
        }));
        let old = Instant::now().checked_sub(HEALTHY_CHECK_TTL + Duration::from_millis(1));
        if let Some(at) = old {
            assert!(!fresh(&Health::Ok { at, current: v(1) }));
        }
        let failing_old = Instant::now().checked_sub(FAILING_CHECK_TTL + Duration::from_millis(1));
        if let Some(at) = failing_old {
            assert!(!fresh(&Health::Failing {
                at,
                since: at,
                cause: String::new(),
                last: None
            }));
        }
    }
}
