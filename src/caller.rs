//! Whether the caller this thread works for still waits for the answer.
//!
//! A gRPC request carries the apiserver's deadline; once it has passed, the
//! apiserver has given up and any further Vault work for it is wasted (and
//! holds an in-flight slot and a connection). grpcio 0.13 tells whether a
//! deadline has passed (`Deadline::exceeded`), not when it falls, so the
//! gRPC layer hands the request's worker thread a check, and the Vault
//! client asks it at every decision point (before each attempt, before a
//! failover, before another pass) and, while it waits for an answer, every
//! [`CALLER_POLL`](crate::limits::CALLER_POLL). The work for a request thus
//! ends at the smaller of the caller's deadline and `--vault-timeout`.
//!
//! The check is per thread, set for the length of one request's work, so
//! the layers between (the core, the session) need not carry it. Work one
//! request does on behalf of all (the shared health check, a shared login)
//! runs [`detached`]: the first caller leaving must not cut it short.

use std::cell::RefCell;

type Check = Box<dyn Fn() -> bool>;

thread_local! {
    static CALLER: RefCell<Option<Check>> = const { RefCell::new(None) };
}

/// Runs `work` for a caller that has gone once `gone()` says so.
pub fn serve<T>(gone: impl Fn() -> bool + 'static, work: impl FnOnce() -> T) -> T {
    let previous = CALLER.with(|c| c.replace(Some(Box::new(gone))));
    let _restore = Restore(Some(previous));
    work()
}

/// Runs `work` with no caller to answer to (shared work), then restores
/// the caller.
pub fn detached<T>(work: impl FnOnce() -> T) -> T {
    let previous = CALLER.with(|c| c.replace(None));
    let _restore = Restore(Some(previous));
    work()
}

/// Whether this thread works for a caller that can leave.
pub fn watched() -> bool {
    CALLER.with(|c| c.borrow().is_some())
}

/// Whether the caller this thread works for has gone (never, for a thread
/// that works for no caller).
pub fn gone() -> bool {
    CALLER.with(|c| c.borrow().as_ref().is_some_and(|g| g()))
}

/// Puts back the previous check, on return and on unwind alike.
struct Restore(Option<Option<Check>>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            CALLER.with(|c| *c.borrow_mut() = previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_caller_is_seen_only_while_served() {
        assert!(!watched() && !gone());
        let left = Arc::new(AtomicBool::new(false));
        let l2 = left.clone();
        serve(
            move || l2.load(Ordering::Relaxed),
            || {
                assert!(watched() && !gone());
                left.store(true, Ordering::Relaxed);
                assert!(gone());
                detached(|| assert!(!watched() && !gone()));
                assert!(gone(), "restored after detached work");
            },
        );
        assert!(!watched() && !gone());
    }

    #[test]
    fn the_check_is_restored_on_unwind() {
        let r = std::panic::catch_unwind(|| serve(|| true, || panic!("in the work")));
        assert!(r.is_err());
        assert!(!watched());
    }
}
