//! The last link of each agent's connector chain: a transport that, while
//! it waits for Vault's answer on a thread serving a caller (`caller`),
//! waits in slices of [`CALLER_POLL`] and gives up once that caller has
//! gone. ureq's own timeout (the call's budget) still applies as before;
//! this only makes the wait end sooner when the apiserver has given up.
//! Threads that serve no caller (the session keeper, `check`) wait as
//! ureq alone would, in one piece.

use std::time::Instant;

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};
use ureq::Error;

use crate::limits::CALLER_POLL;

/// Wraps whatever the default chain connected (TCP, proxy tunnel, TLS).
#[derive(Debug)]
pub(super) struct CallerBound;

impl Connector<Box<dyn Transport>> for CallerBound {
    type Out = Bounded;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Bounded>, Error> {
        Ok(chained.map(Bounded))
    }
}

/// A connection whose reads stop when the caller has gone.
#[derive(Debug)]
pub(super) struct Bounded(Box<dyn Transport>);

impl Transport for Bounded {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.0.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        if !crate::caller::watched() || timeout.after.is_not_happening() {
            return self.0.await_input(timeout);
        }
        let started = Instant::now();
        loop {
            if crate::caller::gone() {
                return Err(Error::Timeout(timeout.reason));
            }
            let left = timeout.after.saturating_sub(started.elapsed());
            let slice = left.min(CALLER_POLL);
            let sliced = NextTimeout {
                after: slice.into(),
                ..timeout
            };
            match self.0.await_input(sliced) {
                // The slice ran out, not the budget: ask the caller again.
                Err(Error::Timeout(_)) if slice < left => continue,
                other => return other,
            }
        }
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}
