//! The Vault session: which token requests use, and keeping it valid.
//!
//! - At start the credentials are checked (a login for login methods, then
//!   `lookup-self`); a failure stops the plugin with a message naming the
//!   method, the mount and Vault's answer.
//! - A keeper thread renews a renewable token at 2/3 of its lease, and logs
//!   in again when renewal is refused or the max TTL cuts the lease short.
//! - A request that meets a 403 calls [`Session::refresh`] with the
//!   generation of the token it used: one login (or token file re-read)
//!   happens, concurrent callers wait for it, and each retries once.
//! - With `--vault-token-file`, every request first checks the file's
//!   identity (inode, size, mtime) and re-reads it when it changed, so a
//!   Vault Agent sink's rename-over is picked up by the next request.
//!
//! No lock is held across a Vault call.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub mod auth;
mod keeper;

use crate::limits::SESSION_VERIFIED_FOR;
use crate::secret::Secret;
use crate::vault::{Lease, LoginToken, VaultClient, VaultError, VaultErrorClass};
use auth::{read_credential, AuthConfig, TokenSource};

/// The token a request uses and its generation (bumped at every change).
#[derive(Clone)]
pub struct Ticket {
    pub token: Secret,
    pub gen: u64,
}

/// A token file's identity: any change means "re-read it".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

struct State {
    ticket: Ticket,
    /// When lookup-self last confirmed the current token after a 403.
    verified_at: Option<Instant>,
    /// The current token's lease, measured at `lease_at`; `None` when not
    /// known yet (a token just read from a changed file).
    lease: Option<Lease>,
    lease_at: Instant,
    file: Option<FileStamp>,
    logging_in: bool,
}

/// The process's Vault session. Shared by reference across threads.
pub struct Session {
    auth: AuthConfig,
    client: VaultClient,
    timeout: Duration,
    state: Mutex<State>,
    changed: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every writer leaves the state consistent before it can panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// Checks the credentials and returns a session holding a valid token.
    /// Each Vault call gets `timeout`; errors name the method and mount.
    pub fn start(auth: AuthConfig, client: VaultClient, timeout: Duration) -> Result<Arc<Session>, String> {
        let what = format!(
            "authentication with method {} at {} failed",
            auth.method(),
            auth.mount_path()
        );
        let (token, file) = match &auth {
            AuthConfig::Token(TokenSource::Env(t)) => (t.clone(), None),
            AuthConfig::Token(TokenSource::File(p)) => {
                let st = stamp(p);
                (
                    read_credential(p, "--vault-token-file").map_err(|e| format!("{what}: {e}"))?,
                    st,
                )
            }
            _ => {
                let t = login(&auth, &client, Instant::now() + timeout).map_err(|e| format!("{what}: {e}"))?;
                (t.token, None)
            }
        };
        let lease = client
            .lookup_self(&token, Instant::now() + timeout)
            .map_err(|e| format!("{what}: the token did not pass lookup-self: {e}"))?;
        log::info!(
            "vault session ok: {}; token ttl {}, renewable {}",
            auth.describe(),
            if lease.ttl.is_zero() {
                "none (never expires)".to_owned()
            } else {
                format!("{}s", lease.ttl.as_secs())
            },
            lease.renewable
        );
        Ok(Session::with_token(auth, client, timeout, token, Some(lease), file))
    }

    fn with_token(
        auth: AuthConfig,
        client: VaultClient,
        timeout: Duration,
        token: Secret,
        lease: Option<Lease>,
        file: Option<FileStamp>,
    ) -> Arc<Session> {
        Arc::new(Session {
            auth,
            client,
            timeout,
            state: Mutex::new(State {
                ticket: Ticket { token, gen: 1 },
                verified_at: None,
                lease,
                lease_at: Instant::now(),
                file,
                logging_in: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// A session that has not checked anything with Vault, for unit tests
    /// of the parts above it.
    #[cfg(test)]
    pub(crate) fn for_tests(client: VaultClient, auth: AuthConfig) -> Arc<Session> {
        Session::with_token(
            auth,
            client,
            Duration::from_millis(300),
            Secret::new("t".into()),
            None,
            None,
        )
    }

    /// The token to use now. With a token file, a changed file is re-read
    /// first; an unreadable one keeps the previous token (and is logged).
    /// The file is read without the session lock held: a file that is slow
    /// to read (or not a regular file, refused at once) never holds up the
    /// requests, Status or the keeper waiting on that lock.
    pub fn ticket(&self) -> Ticket {
        if let Some(path) = self.auth.token_file() {
            let seen = stamp(path);
            if seen != lock(&self.state).file {
                self.reload_file(path, seen);
            }
        }
        lock(&self.state).ticket.clone()
    }

    /// Re-reads the token file, whose identity was `seen` just before, and
    /// installs its token if it differs. What was read is used only if the
    /// file is still the one stamped (checked under the lock, with a
    /// `stat`, which never waits on the file's content): a reader that lost
    /// a race with a newer rename does not put an older token back. True
    /// when a new token was installed.
    fn reload_file(&self, path: &Path, seen: Option<FileStamp>) -> bool {
        let read = read_credential(path, "--vault-token-file");
        let mut st = lock(&self.state);
        if stamp(path) != seen || st.file == seen {
            // Changed again since (the next call reads it), or another
            // caller already took this version.
            return false;
        }
        st.file = seen;
        match read {
            Ok(t) if t != st.ticket.token => {
                log::info!("token file {} changed; using the new token", path.display());
                self.install(&mut st, t, None);
                true
            }
            Ok(_) => false,
            Err(e) => {
                log::warn!("{e}; keeping the previous token");
                false
            }
        }
    }

    fn install(&self, st: &mut State, token: Secret, lease: Option<Lease>) {
        let now = Instant::now();
        st.ticket = Ticket {
            token,
            gen: st.ticket.gen.wrapping_add(1),
        };
        st.verified_at = None;
        st.lease = lease;
        st.lease_at = now;
        self.changed.notify_all();
    }

    /// Called by a request whose token (generation `failed_gen`) was
    /// refused. Returns a different token to retry with, or `None` when
    /// there is none to be had before `deadline` or the token is fine (a
    /// policy refusal). For login methods, `lookup-self` tells the two
    /// apart, then a login replaces a dead token. Concurrent callers share
    /// one check and one login.
    pub fn refresh(&self, failed_gen: u64, deadline: Instant) -> Option<Ticket> {
        let mut st = lock(&self.state);
        loop {
            if st.ticket.gen != failed_gen {
                return Some(st.ticket.clone());
            }
            if !st.logging_in {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        match &self.auth {
            AuthConfig::Token(TokenSource::Env(_)) => None,
            AuthConfig::Token(TokenSource::File(p)) => {
                drop(st);
                // Read again even if its stamp did not change (a rewrite
                // within the same mtime tick keeps the stamp).
                lock(&self.state).file = None;
                let seen = stamp(p);
                if seen.is_some() && self.reload_file(p, seen) {
                    return Some(lock(&self.state).ticket.clone());
                }
                let st = lock(&self.state);
                (st.ticket.gen != failed_gen).then(|| st.ticket.clone())
            }
            _ if st.verified_at.is_some_and(|t| t.elapsed() < SESSION_VERIFIED_FOR) => None,
            _ => {
                st.logging_in = true;
                let token = st.ticket.token.clone();
                drop(st);
                let _guard = LoginGuard(self);
                // One login for every waiting caller: not cut short when
                // the one that started it leaves.
                crate::caller::detached(|| match self.client.lookup_self(&token, deadline) {
                    Err(e) if e.class() == VaultErrorClass::Denied => {
                        log::info!("vault: the token was refused and fails lookup-self; logging in again");
                        self.finish_login(deadline).ok()
                    }
                    // Valid (the policy refused), or Vault cannot tell us
                    // now: a login would not help either way.
                    other => {
                        let mut st = lock(&self.state);
                        st.logging_in = false;
                        if other.is_ok() {
                            st.verified_at = Some(Instant::now());
                        }
                        self.changed.notify_all();
                        None
                    }
                })
            }
        }
    }

    /// One login at a time: refused when one is already in progress,
    /// otherwise marks it in progress and logs in.
    fn try_login(&self, deadline: Instant) -> Result<Ticket, String> {
        {
            let mut st = lock(&self.state);
            if st.logging_in {
                return Err("a login is already in progress".into());
            }
            st.logging_in = true;
        }
        self.finish_login(deadline)
    }

    /// The login itself, for a caller that has set `logging_in`: logs in
    /// without holding the lock, installs the new token, clears the flag
    /// and wakes every waiter.
    fn finish_login(&self, deadline: Instant) -> Result<Ticket, String> {
        let guard = LoginGuard(self);
        let r = login(&self.auth, &self.client, deadline);
        drop(guard);
        let mut st = lock(&self.state);
        st.logging_in = false;
        self.changed.notify_all();
        match r {
            Ok(t) => {
                log::info!(
                    "vault: logged in again ({} at {}); token ttl {}s",
                    self.auth.method(),
                    self.auth.mount_path(),
                    t.lease.ttl.as_secs()
                );
                self.install(&mut st, t.token, Some(t.lease));
                Ok(st.ticket.clone())
            }
            Err(e) => {
                log::warn!(
                    "vault: login with {} at {} failed: {e}",
                    self.auth.method(),
                    self.auth.mount_path()
                );
                Err(e.to_string())
            }
        }
    }

    /// Time left on the current token; `None` when it never expires or is
    /// not known yet. For `/metrics`.
    pub fn ttl_left(&self) -> Option<Duration> {
        let st = lock(&self.state);
        let l = st.lease.filter(|l| !l.ttl.is_zero())?;
        Some(l.ttl.saturating_sub(st.lease_at.elapsed()))
    }
}

/// Clears `logging_in` and wakes the waiters if a login panics, so logins
/// are not refused ("already in progress") for good. Does nothing when
/// dropped normally: the code that set the flag clears it.
struct LoginGuard<'a>(&'a Session);

impl Drop for LoginGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::metrics::metrics().panicked("login");
            lock(&self.0.state).logging_in = false;
            self.0.changed.notify_all();
        }
    }
}

fn login(auth: &AuthConfig, client: &VaultClient, deadline: Instant) -> Result<LoginToken, VaultError> {
    #[cfg(test)]
    tests::maybe_panic();
    let req = auth.login_request().map_err(VaultError::Credentials)?;
    let Some(req) = req else {
        return Err(VaultError::Credentials("the token method cannot log in".into()));
    };
    client.login(&req.path, &req.body, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static PANIC_IN_LOGIN: Cell<bool> = const { Cell::new(false) };
    }

    /// The seam the tests use to make the next login on this thread panic
    /// (compiled into unit tests only).
    pub(super) fn maybe_panic() {
        if PANIC_IN_LOGIN.with(|p| p.replace(false)) {
            panic!("injected panic in a login");
        }
    }

    fn session() -> Arc<Session> {
        let mut cfg = crate::config::tests::sample_config();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        cfg.vault.addrs = vec![format!("http://127.0.0.1:{port}")];
        let client = VaultClient::new(&cfg.vault).unwrap();
        let auth = AuthConfig::Jwt {
            mount: "jwt".into(),
            role: "r".into(),
            jwt_file: "/nonexistent/jwt".into(),
        };
        Session::for_tests(client, auth)
    }

    /// A login that panics leaves the flag clear: the next login is tried,
    /// not refused as "already in progress".
    #[test]
    fn a_panicking_login_does_not_block_later_ones() {
        let s = session();
        PANIC_IN_LOGIN.with(|p| p.set(true));
        let deadline = Instant::now() + Duration::from_millis(200);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.try_login(deadline)));
        assert!(r.is_err(), "the injected panic did not happen");
        assert!(!lock(&s.state).logging_in, "logging_in left set");
        let Err(e) = s.try_login(Instant::now() + Duration::from_millis(200)) else {
            panic!("a login without Vault succeeded");
        };
        assert!(!e.contains("already in progress"), "{e}");
    }
}
