//! The session's keeper thread: renews a renewable token at 2/3 of its
//! lease, and logs in again when renewal is refused or the max TTL cuts
//! the lease short. Failures back off, doubling from
//! [`SESSION_RETRY_MIN`] to [`SESSION_RETRY_MAX`].

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::{lock, Session, State};
use crate::limits::{
    SESSION_CAP_SLACK, SESSION_IDLE_WAKE, SESSION_KEEPER_RESTART, SESSION_RETRY_MAX, SESSION_RETRY_MIN, VAULT_MAX_LEASE,
};
use crate::vault::Lease;

/// Renew when this fraction of the lease has passed, as Vault Agent's
/// lifetime watcher does (about 2/3): a third of the lease is left to
/// retry a failed renewal or log in again.
const RENEW_AT_NUM: u32 = 2;
const RENEW_AT_DEN: u32 = 3;

/// What the keeper does when it wakes.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The lease needs nothing now (it never expires, or cannot be
    /// renewed and there is no way to log in).
    Nothing,
    /// The lease is unknown (a token newly read from a file): ask Vault.
    Lookup,
    Login,
    /// Renew, asking for this much.
    Renew(Duration),
}

/// When a lease of `ttl` granted at `at` is renewed: at 2/3 of it, without
/// overflow whatever Vault said (a lease too far out is "never", a year on).
fn renew_at(at: Instant, ttl: Duration) -> Instant {
    let after = (ttl / RENEW_AT_DEN).saturating_mul(RENEW_AT_NUM);
    at.checked_add(after)
        .or_else(|| at.checked_add(VAULT_MAX_LEASE))
        .unwrap_or(at)
}

impl Session {
    /// Starts the keeper thread that renews the token or logs in again. A
    /// panic in it does not end it quietly: it is logged and the keeper
    /// starts over after [`SESSION_KEEPER_RESTART`], from the session's
    /// state (which every writer leaves consistent).
    pub fn spawn_keeper(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("vault-session".into())
            .spawn(move || loop {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.run_keeper()));
                if run.is_err() {
                    crate::metrics::metrics().panicked("session_keeper");
                    log::error!(
                        "vault session keeper panicked; restarting it in {}s",
                        SESSION_KEEPER_RESTART.as_secs()
                    );
                    std::thread::sleep(SESSION_KEEPER_RESTART);
                }
            })
            .map(|_| ())
    }

    /// The keeper's loop: sleep until the next step is due (or the token
    /// changes), take it, back off on failure. Never returns.
    fn run_keeper(&self) {
        let mut backoff = SESSION_RETRY_MIN;
        let mut retry_at: Option<Instant> = None;
        loop {
            let (gen, wake, step) = {
                let st = lock(&self.state);
                let (at, step) = self.next_step(&st);
                (st.ticket.gen, retry_at.map_or(at, |r| r.max(at)), step)
            };
            // Sleep until it is time, or until the token changes.
            {
                let mut st = lock(&self.state);
                while st.ticket.gen == gen && Instant::now() < wake {
                    let left = wake.saturating_duration_since(Instant::now());
                    st = self
                        .changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if st.ticket.gen != gen {
                    retry_at = None;
                    backoff = SESSION_RETRY_MIN;
                    continue;
                }
            }
            match self.take_step(gen, step) {
                // Nothing to do until the token changes or time passes.
                Ok(()) if matches!(step, Step::Nothing) => retry_at = Some(Instant::now() + SESSION_IDLE_WAKE),
                Ok(()) => {
                    retry_at = None;
                    backoff = SESSION_RETRY_MIN;
                }
                Err(e) => {
                    log::warn!("vault session: {e}; retrying in {}s", backoff.as_secs());
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(SESSION_RETRY_MAX);
                }
            }
        }
    }

    /// When the next step is due and what it is.
    fn next_step(&self, st: &State) -> (Instant, Step) {
        let Some(lease) = st.lease else {
            return (Instant::now(), Step::Lookup);
        };
        if lease.ttl.is_zero() {
            return (Instant::now() + SESSION_IDLE_WAKE, Step::Nothing);
        }
        let at = renew_at(st.lease_at, lease.ttl);
        let step = if lease.renewable {
            Step::Renew(lease.granted)
        } else if self.auth.can_login() {
            Step::Login
        } else {
            Step::Nothing
        };
        (at, step)
    }

    /// Does `step` for the token of generation `gen`.
    fn take_step(&self, gen: u64, step: Step) -> Result<(), String> {
        let token = lock(&self.state).ticket.token.clone();
        let deadline = Instant::now() + self.timeout;
        match step {
            Step::Nothing => Ok(()),
            Step::Lookup => {
                let lease = self
                    .client
                    .lookup_self(&token, deadline)
                    .map_err(|e| format!("lookup-self of the new token failed: {e}"))?;
                self.set_lease(gen, lease);
                Ok(())
            }
            Step::Login => self.try_login(deadline).map(|_| ()),
            Step::Renew(increment) => match self.client.renew_self(&token, increment, deadline) {
                Ok(mut lease) if lease.ttl.saturating_add(SESSION_CAP_SLACK) < increment => {
                    // Renewing again would only shrink the lease further.
                    lease.renewable = false;
                    lease.granted = increment;
                    self.set_lease(gen, lease);
                    if self.auth.can_login() {
                        log::info!(
                            "vault: token renewed for only {}s of {}s asked (max TTL near); logging in again",
                            lease.ttl.as_secs(),
                            increment.as_secs()
                        );
                        return self.try_login(deadline).map(|_| ());
                    }
                    log::warn!(
                        "vault token reaches its max TTL in {}s; the token file must be refreshed before then",
                        lease.ttl.as_secs()
                    );
                    Ok(())
                }
                Ok(mut lease) => {
                    log::debug!("vault: token renewed, ttl {}s", lease.ttl.as_secs());
                    lease.granted = increment;
                    self.set_lease(gen, lease);
                    Ok(())
                }
                Err(e) if self.auth.can_login() => {
                    log::info!("vault: renewal refused ({}); logging in again", e.class_name());
                    self.try_login(deadline).map(|_| ())
                }
                Err(e) => Err(format!("token renewal failed: {e}")),
            },
        }
    }

    /// Records a lease for generation `gen` (ignored if the token changed).
    fn set_lease(&self, gen: u64, lease: Lease) {
        let mut st = lock(&self.state);
        if st.ticket.gen == gen {
            st.lease = Some(lease);
            st.lease_at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_time_never_overflows() {
        let now = Instant::now();
        assert_eq!(renew_at(now, Duration::from_secs(30)), now + Duration::from_secs(20));
        // Whatever a lease says, no panic, and the renewal is in the future.
        for ttl in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            VAULT_MAX_LEASE,
            Duration::ZERO,
        ] {
            let at = renew_at(now, ttl);
            assert!(at >= now, "{ttl:?}");
        }
    }
}
