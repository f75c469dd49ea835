//! A cap on how many of something run at once, and their count: requests
//! in flight (`--max-in-flight`), HTTP connections, DNS lookup threads. A
//! [`Permit`] is one slot, given back when it is dropped (also on panic).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The cap and the count, shared by cloning.
#[derive(Clone)]
pub struct Permits(Arc<Counter>);

struct Counter {
    now: AtomicUsize,
    max: usize,
}

/// One slot, released on drop.
pub struct Permit(Permits);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0 .0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Permits {
    pub fn new(max: usize) -> Permits {
        Permits(Arc::new(Counter {
            now: AtomicUsize::new(0),
            max,
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
}
