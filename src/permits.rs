//! A cap on how many of something run at once, and their count: requests
//! in flight (`--max-in-flight`), HTTP connections, DNS lookup threads,
//! connections to each Vault node. A [`Permit`] is one slot, given back
//! when it is dropped (also on panic). Most users take a slot or refuse at
//! once ([`Permits::try_acquire`]); Vault calls wait for one, within their
//! deadline ([`Permits::acquire_until`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The cap and the count, shared by cloning.
#[derive(Clone)]
pub struct Permits(Arc<Counter>);

struct Counter {
    now: AtomicUsize,
    max: usize,
    /// Threads in `acquire_until`; a release wakes one only when non-zero.
    waiting: AtomicUsize,
    /// Held while a waiter checks for a slot and while a release wakes one,
    /// so no wake-up falls between the two.
    gate: Mutex<()>,
    freed: Condvar,
}

/// One slot, released on drop.
pub struct Permit(Permits);

impl Drop for Permit {
    fn drop(&mut self) {
        let c = &self.0 .0;
        c.now.fetch_sub(1, Ordering::AcqRel);
        if c.waiting.load(Ordering::Acquire) > 0 {
            let _g = c.gate.lock().unwrap_or_else(PoisonError::into_inner);
            c.freed.notify_one();
        }
    }
}

impl Permits {
    pub fn new(max: usize) -> Permits {
        Permits(Arc::new(Counter {
            now: AtomicUsize::new(0),
            max,
            waiting: AtomicUsize::new(0),
            gate: Mutex::new(()),
            freed: Condvar::new(),
        }))
    }

    /// Slots taken right now.
    pub fn count(&self) -> usize {
        self.0.now.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// A slot, or `None` when all are taken.
    pub fn try_acquire(&self) -> Option<Permit> {
        let c = &self.0;
        let mut cur = c.now.load(Ordering::Acquire);
        loop {
            if cur >= c.max {
                return None;
            }
            match c
                .now
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// A slot, waiting for one until `deadline`; `None` if none came free
    /// by then or `give_up()` said to stop (asked at least every `poll`).
    pub fn acquire_until(&self, deadline: Instant, poll: Duration, give_up: impl Fn() -> bool) -> Option<Permit> {
        if let Some(p) = self.try_acquire() {
            return Some(p);
        }
        let c = &self.0;
        c.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(c);
        let mut g = c.gate.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(p) = self.try_acquire() {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || give_up() {
                return None;
            }
            g = c
                .freed
                .wait_timeout(g, left.min(poll))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Counts a waiter out again, on return and on unwind.
struct Waiting<'a>(&'a Counter);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back_on_drop() {
        let p = Permits::new(2);
        let a = p.try_acquire().unwrap();
        let _b = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
        assert_eq!(p.count(), 2);
        drop(a);
        assert!(p.try_acquire().is_some());
        let _ = std::panic::catch_unwind(|| {
            let _held = p.try_acquire();
            panic!("released on unwind too");
        });
        assert_eq!(p.count(), 1);
    }

    #[test]
    fn a_waiter_gets_the_slot_given_back_or_gives_up() {
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let ms = Duration::from_millis;
        // Nobody gives the slot back: it waits until its deadline.
        let t = Instant::now();
        assert!(p.acquire_until(t + ms(100), ms(20), || false).is_none());
        assert!(t.elapsed() >= ms(100));
        // Or until it is told to give up.
        let t = Instant::now();
        assert!(p.acquire_until(t + ms(5000), ms(20), || true).is_none());
        assert!(t.elapsed() < ms(1000));
        // A slot given back goes to the waiter, long before its deadline.
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let got = p2.acquire_until(t + Duration::from_secs(10), Duration::from_secs(5), || false);
            (got.is_some(), t.elapsed())
        });
        std::thread::sleep(ms(100));
        drop(held);
        let (got, waited) = waiter.join().unwrap();
        assert!(got && waited < Duration::from_secs(3), "{got} after {waited:?}");
        assert_eq!(p.count(), 0);
        assert_eq!(p.0.waiting.load(Ordering::Acquire), 0);
    }
}
