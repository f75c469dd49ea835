//! How long a lane's calls take, for the rule that sends a queued request
//! early when it cannot afford the wait (issue 21, 7).

use std::time::{Duration, Instant};

use crate::limits::CALLER_POLL;

/// A lane's call times.
#[derive(Default)]
pub(super) struct Clock {
    /// When each call on a slot started (a slot handed to a batch whose
    /// call has not started yet has no entry).
    started: Vec<Instant>,
    /// How long the lane's calls take: the longest recent one, decaying
    /// towards shorter ones ([`decayed`]); `None` until a call returned.
    recent: Option<Duration>,
}

impl Clock {
    /// A call on a slot starts now; returns its start, for [`Clock::ended`].
    pub(super) fn start(&mut self) -> Instant {
        let now = Instant::now();
        self.started.push(now);
        now
    }

    /// A call that started at `started` (on a slot or not) ended.
    pub(super) fn ended(&mut self, started: Instant, slot: bool) {
        let took = started.elapsed();
        self.recent = Some(self.recent.map_or(took, |r| decayed(r, took)));
        if slot {
            if let Some(i) = self.started.iter().position(|s| *s == started) {
                self.started.swap_remove(i);
            }
        }
    }

    /// The rule: a queued request that will go in batch `round` (0: the
    /// next slot to free up) of a lane with `sending` slots taken, with
    /// `left` before its deadline, goes early when `left` would not cover
    /// the wait for its turn plus one call plus a margin (a quarter of a
    /// call, for Vault's jitter, and [`CALLER_POLL`], the time to its next
    /// look). A call is taken to last as long as the lane's recent calls,
    /// and at least as long as the running ones have already taken; a
    /// running call is expected to end when a recent call would have, or,
    /// when it has run longer than that or no call has returned yet, to
    /// need twice as long again as it has run: without a figure, a request
    /// then goes after a quarter of its budget at the latest and still has
    /// time for a call of up to two thirds of it (1.3 s of the default
    /// 2 s). A request that could not finish even alone (`left` below one
    /// call) stays queued: another call for it would only add to a slow
    /// Vault's load.
    pub(super) fn must_go_early(&self, sending: usize, round: usize, left: Duration, now: Instant) -> bool {
        let ran: Vec<Duration> = self.started.iter().map(|s| now.saturating_duration_since(*s)).collect();
        let call = ran.iter().copied().fold(self.recent.unwrap_or_default(), Duration::max);
        if left < call {
            return false;
        }
        // When each slot frees: a handed-over slot whose call has not
        // started is a whole call away.
        let mut free_in: Vec<Duration> = ran
            .iter()
            .map(|r| match self.recent {
                Some(recent) if recent > *r => recent - *r,
                _ => r.saturating_mul(2),
            })
            .collect();
        free_in.resize(sending.max(free_in.len()).max(1), call);
        free_in.sort();
        let slots = free_in.len();
        let turn = free_in.get(round % slots).copied().unwrap_or(call)
            + call.saturating_mul(u32::try_from(round / slots).unwrap_or(u32::MAX));
        left < turn + call + call / 4 + CALLER_POLL
    }
}

/// The figure for a call's length after a call that took `took`: a longer
/// call raises it at once (a queued request must not count on a speed
/// Vault has lost), a shorter one lowers it by a quarter of the difference
/// (one fast call does not undo a slow spell).
fn decayed(recent: Duration, took: Duration) -> Duration {
    if took >= recent {
        took
    } else {
        recent - (recent - took) / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule itself, with one slot and a call running.
    #[test]
    fn the_early_rule_weighs_the_wait_against_the_time_left() {
        let ms = Duration::from_millis;
        let now = Instant::now();
        let clock = |ran: u64, recent: Option<u64>| Clock {
            started: vec![now - ms(ran)],
            recent: recent.map(ms),
        };
        let go = |c: Clock, round: usize, left: u64| c.must_go_early(1, round, ms(left), now);
        // Slow Vault (1.2 s calls), 100 ms into a call: 1.1 s for the slot,
        // 1.2 s for the call, 2 s left: go.
        assert!(go(clock(100, Some(1200)), 0, 2000));
        // Left below one call: hopeless even alone, stay queued.
        assert!(!go(clock(100, Some(1200)), 0, 1000));
        // Fast Vault: wait for the slot, even a few batches back.
        assert!(!go(clock(5, Some(20)), 0, 2000));
        assert!(!go(clock(5, Some(20)), 3, 2000));
        // No figure: the running call (700 ms so far) is taken to need
        // twice as long again, and the next call 700 ms: 2.1 s and margins.
        assert!(go(clock(700, None), 0, 2300));
        assert!(!go(clock(700, None), 0, 2400));
        // A call overrunning the figure counts as having none.
        assert!(go(clock(700, Some(20)), 0, 2300));
        // Further back in the queue (the third batch): two calls' wait.
        assert!(!go(clock(0, Some(300)), 0, 1000));
        assert!(go(clock(0, Some(300)), 2, 1000));
        // A slot handed over, its call not started: a whole call away.
        let handed = Clock {
            started: Vec::new(),
            recent: Some(ms(300)),
        };
        assert!(!handed.must_go_early(1, 0, ms(800), now));
        assert!(handed.must_go_early(1, 0, ms(700), now));
    }

    #[test]
    fn the_figure_rises_at_once_and_falls_slowly() {
        let ms = Duration::from_millis;
        assert_eq!(decayed(ms(100), ms(900)), ms(900));
        assert_eq!(decayed(ms(900), ms(100)), ms(700));
        let mut r = ms(1200);
        for _ in 0..20 {
            r = decayed(r, ms(10));
        }
        assert!(r < ms(20), "{r:?}");
    }
}
