//! Request coalescing: requests for the same key and operation that arrive
//! while that key's transit calls are in flight go out together, as one
//! `batch_input` call, when a call returns.
//!
//! No timer and no waiting for company: a request that finds one of the
//! lane's [`COALESCE_MAX_BATCHES`] call slots free goes out at once, alone,
//! as a plain transit call. Only requests that find every slot busy queue;
//! a call that returns hands its slot to the queue, whose oldest request
//! (on its own thread, as every request has) sends the queue's first
//! [`COALESCE_MAX_ITEMS`] items as one call and gives each waiting request
//! its own item's result. Each request keeps its own OS thread for its
//! whole life; the lane only decides which of them talks to Vault.
//!
//! A queued request must not fail where it would have succeeded alone
//! (issue 21, 7): the lane times its calls, and a queued request whose
//! time left would not cover the wait for a slot plus one call goes out at
//! once, taking the requests queued behind it along (an early batch, on
//! no slot). See [`Clock::must_go_early`] for the rule. Every early call
//! carries at least the request that sends it, so a lane makes at most as
//! many calls as it has requests, as with coalescing off; those are
//! bounded by `--max-in-flight`, and what reaches one Vault node at once
//! by [`VAULT_MAX_CONNECTIONS`](crate::limits::VAULT_MAX_CONNECTIONS).
//!
//! Results go back by position: a batch is a list of tickets, the call's
//! inputs are read from those tickets in that order, and the i-th result
//! is delivered into the i-th ticket. (The Vault layer matches the i-th
//! result to the i-th input by position and by `reference` both.) Nothing
//! here is specific to Vault, so the tests drive it with a fake backend
//! that checks every request got the answer for its own input.

mod clock;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::health::lock;
use crate::limits::{CALLER_POLL, COALESCE_WAIT_GRACE};
use clock::Clock;

/// Transit calls in flight per lane (a key and an operation). One in
/// flight already coalesces everything that arrives meanwhile; a second
/// lets a batch be built and answered while the previous one is still in
/// Vault, so both of Vault's cores (and the plugin's) stay busy.
pub const COALESCE_MAX_BATCHES: usize = 2;

/// Items in one batch call. OpenBao (since 2.4.1) refuses a request body
/// with more than `max_request_json_strings` = 1000 JSON strings; each of
/// our items is 4 (two keys, two values), so 249 items was the most
/// OpenBao 2.7.2 took (250 got "exceeded maximum number of strings").
/// 128 keeps a margin of half for other Vault versions' limits, and is
/// half the default `--max-in-flight`, so a full burst needs two calls.
pub const COALESCE_MAX_ITEMS: usize = 128;

/// Input bytes in one batch call (plaintexts for Encrypt, ciphertexts for
/// Decrypt): the answer must fit the 256 KiB we read from Vault
/// ([`MAX_VAULT_RESPONSE`](crate::limits::MAX_VAULT_RESPONSE)). A
/// result is at most 4/3 of its input plus about 100 bytes of JSON, so
/// 64 KiB of input answers in under 100 KiB. A larger single item (a v1
/// plaintext of up to 47 KiB) goes alone.
pub const COALESCE_MAX_BYTES: usize = 64 * 1024;

/// How a batch is sent and what a request gets when it gives up.
pub trait Backend<I, O> {
    /// One input alone (a plain transit call).
    fn one(&self, input: &I) -> O;
    /// Several inputs in one call; exactly one output per input, in order.
    fn many(&self, inputs: &[&I]) -> Vec<O>;
    /// What a request gets when a batch gave it no result (a bug): never
    /// another request's output.
    fn lost(&self) -> O;
    /// What a queued request gets when its caller left or its time ran out
    /// before its batch went out; `waited` is how long it queued.
    fn gave_up(&self, caller_gone: bool, waited: Duration) -> O;
}

/// A batch's outcome, for the metrics: how many requests one call served.
pub type OnBatch = fn(op: &'static str, items: usize);

/// One key and operation's queue.
pub struct Lane<I, O> {
    op: &'static str,
    state: Mutex<State<I, O>>,
    /// Called with the size of each call sent (1 for a request alone).
    on_batch: OnBatch,
    /// An input's size, for [`COALESCE_MAX_BYTES`].
    size: fn(&I) -> usize,
    max_items: usize,
    max_bytes: usize,
    max_batches: usize,
}

struct State<I, O> {
    /// Call slots taken (at most `max_batches`).
    sending: usize,
    waiting: VecDeque<Arc<Ticket<I, O>>>,
    /// How long the lane's calls take, and when the running ones started.
    clock: Clock,
}

/// One queued request: its input, and where its turn or result arrives.
struct Ticket<I, O> {
    input: I,
    turn: Mutex<Turn<I, O>>,
    changed: Condvar,
}

enum Turn<I, O> {
    Queued,
    /// This request sends these tickets' inputs (its own first).
    Lead(Vec<Arc<Ticket<I, O>>>, bool),
    /// Its result.
    Done(O),
    /// The turn or result has been taken by the ticket's own request.
    Taken,
}

impl<I, O> Lane<I, O> {
    pub fn new(op: &'static str, on_batch: OnBatch, size: fn(&I) -> usize) -> Lane<I, O> {
        Lane::with_limits(
            op,
            on_batch,
            size,
            (COALESCE_MAX_BATCHES, COALESCE_MAX_ITEMS, COALESCE_MAX_BYTES),
        )
    }

    /// `limits`: call slots, items per batch, input bytes per batch.
    fn with_limits(
        op: &'static str,
        on_batch: OnBatch,
        size: fn(&I) -> usize,
        (max_batches, max_items, max_bytes): (usize, usize, usize),
    ) -> Lane<I, O> {
        Lane {
            op,
            size,
            state: Mutex::new(State {
                sending: 0,
                waiting: VecDeque::new(),
                clock: Clock::default(),
            }),
            on_batch,
            max_items: max_items.max(1),
            max_bytes,
            max_batches: max_batches.max(1),
        }
    }

    /// Runs `input` through the lane: at once and alone when a call slot
    /// is free, else in the next batch. Waits at most until `deadline`
    /// (plus [`COALESCE_WAIT_GRACE`] once its batch is in Vault, whose own
    /// deadline is no later), polling `gone` every [`CALLER_POLL`].
    pub fn run<B: Backend<I, O>>(&self, input: I, deadline: Instant, gone: impl Fn() -> bool, backend: &B) -> O {
        let queued_at = Instant::now();
        let ticket = {
            let mut st = lock(&self.state);
            if st.sending < self.max_batches {
                st.sending += 1;
                let started = st.clock.start();
                drop(st);
                let _slot = CallGuard {
                    lane: self,
                    started,
                    slot: true,
                };
                (self.on_batch)(self.op, 1);
                return backend.one(&input);
            }
            let t = Arc::new(Ticket {
                input,
                turn: Mutex::new(Turn::Queued),
                changed: Condvar::new(),
            });
            st.waiting.push_back(t.clone());
            t
        };
        loop {
            let mut turn = lock(&ticket.turn);
            match std::mem::replace(&mut *turn, Turn::Taken) {
                Turn::Done(out) => return out,
                Turn::Lead(batch, slot) => {
                    drop(turn);
                    return self.lead(&ticket, batch, slot, backend);
                }
                Turn::Queued => *turn = Turn::Queued,
                Turn::Taken => return backend.lost(),
            }
            let now = Instant::now();
            let in_batch_until = deadline + COALESCE_WAIT_GRACE;
            let caller_gone = gone();
            if caller_gone || now >= deadline {
                drop(turn);
                // Still queued: leave the queue, and no Vault call is made
                // for this request. Already taken into a batch: its result
                // is on the way (that batch is bounded by its own, earlier
                // deadline), unless even the grace has passed.
                if self.leave(&ticket) || now >= in_batch_until {
                    return backend.gave_up(caller_gone, queued_at.elapsed());
                }
                turn = lock(&ticket.turn);
                if matches!(*turn, Turn::Queued) {
                    let wait = in_batch_until.saturating_duration_since(now).min(CALLER_POLL);
                    drop(ticket.changed.wait_timeout(turn, wait));
                }
                continue;
            }
            drop(turn);
            if self.go_early(&ticket, deadline, now) {
                // Its turn (or a result, if further back) is in the ticket.
                continue;
            }
            let turn = lock(&ticket.turn);
            if matches!(*turn, Turn::Queued) {
                let wait = deadline.saturating_duration_since(now).min(CALLER_POLL);
                drop(ticket.changed.wait_timeout(turn, wait));
            }
        }
    }

    /// If `ticket`, still queued, cannot afford to wait for a slot: the
    /// queue's oldest requests (up to the batch caps, `ticket` among them
    /// unless further back) go at once as a batch on no slot, led by the
    /// oldest, whose deadline is the earliest. Those ahead of `ticket` have
    /// less time still, so they go too.
    fn go_early(&self, ticket: &Arc<Ticket<I, O>>, deadline: Instant, now: Instant) -> bool {
        let mut st = lock(&self.state);
        let Some(pos) = st.waiting.iter().position(|t| Arc::ptr_eq(t, ticket)) else {
            return false;
        };
        let left = deadline.saturating_duration_since(now);
        st.clock.must_go_early(st.sending, pos / self.max_items, left, now) && self.hand_over(&mut st, false)
    }

    /// Removes `ticket` from the queue; false if a batch has taken it.
    fn leave(&self, ticket: &Arc<Ticket<I, O>>) -> bool {
        let mut st = lock(&self.state);
        let before = st.waiting.len();
        st.waiting.retain(|t| !Arc::ptr_eq(t, ticket));
        st.waiting.len() != before
    }

    /// Sends `batch` (whose first ticket is `me`) and delivers each result
    /// into its own ticket; returns `me`'s. The call slot passes on when
    /// done, and every ticket gets an answer even if the backend panics.
    fn lead<B: Backend<I, O>>(
        &self,
        me: &Arc<Ticket<I, O>>,
        batch: Vec<Arc<Ticket<I, O>>>,
        slot: bool,
        backend: &B,
    ) -> O {
        let started = if slot {
            lock(&self.state).clock.start()
        } else {
            Instant::now()
        };
        let _call = CallGuard {
            lane: self,
            started,
            slot,
        };
        let mut deliver = Delivery {
            batch,
            delivered: 0,
            lost: || backend.lost(),
        };
        (self.on_batch)(self.op, deliver.batch.len());
        let outs = {
            let inputs: Vec<&I> = deliver.batch.iter().map(|t| &t.input).collect();
            // Work for every request in the batch: its own caller leaving
            // must not cut it short (the batch's deadline is this
            // request's, the earliest of them).
            crate::caller::detached(|| match inputs.as_slice() {
                [one] => vec![backend.one(one)],
                many => backend.many(many),
            })
        };
        let mut mine = None;
        for out in outs {
            let Some(t) = deliver.batch.get(deliver.delivered).cloned() else {
                break;
            };
            deliver.delivered += 1;
            if Arc::ptr_eq(&t, me) {
                mine = Some(out);
            } else {
                t.finish(out);
            }
        }
        // Fewer outputs than inputs (a backend bug): the rest get `lost`
        // when `deliver` drops, never someone else's output.
        mine.unwrap_or_else(|| backend.lost())
    }

    /// A call that started at `started` ended: its time goes into the
    /// lane's figure, and its slot (if it had one) passes on.
    fn call_ended(&self, started: Instant, slot: bool) {
        let mut st = lock(&self.state);
        st.clock.ended(started, slot);
        if slot {
            self.pass_on(&mut st);
        }
    }

    /// Passes a call slot to the queue's oldest requests, or frees it.
    fn pass_on(&self, st: &mut State<I, O>) {
        if !self.hand_over(st, true) {
            st.sending = st.sending.saturating_sub(1);
        }
    }

    /// Makes the queue's oldest requests (up to the caps) a batch, led by
    /// the oldest, on a call slot or not; false if none waits.
    fn hand_over(&self, st: &mut State<I, O>, slot: bool) -> bool {
        let mut bytes = 0;
        let mut take = 0;
        for t in st.waiting.iter().take(self.max_items) {
            let size = (self.size)(&t.input);
            if take > 0 && bytes + size > self.max_bytes {
                break;
            }
            bytes += size;
            take += 1;
        }
        let batch: Vec<_> = st.waiting.drain(..take).collect();
        let Some(leader) = batch.first().cloned() else {
            return false;
        };
        *lock(&leader.turn) = Turn::Lead(batch, slot);
        leader.changed.notify_one();
        true
    }
}

/// Times a call, and frees or passes on its slot (if it holds one) when
/// it ends, panic or not.
struct CallGuard<'l, I, O> {
    lane: &'l Lane<I, O>,
    started: Instant,
    slot: bool,
}

impl<I, O> Drop for CallGuard<'_, I, O> {
    fn drop(&mut self) {
        self.lane.call_ended(self.started, self.slot);
    }
}

/// The tickets of a batch being answered: those not yet delivered get
/// `lost` when it drops (fewer results than items, or a panic).
struct Delivery<I, O, L: Fn() -> O> {
    batch: Vec<Arc<Ticket<I, O>>>,
    delivered: usize,
    lost: L,
}

impl<I, O, L: Fn() -> O> Drop for Delivery<I, O, L> {
    fn drop(&mut self) {
        // The leader itself is the first ticket; it returns on its own.
        for t in self.batch.iter().skip(self.delivered.max(1)) {
            t.finish((self.lost)());
        }
    }
}

impl<I, O> Ticket<I, O> {
    fn finish(&self, out: O) {
        *lock(&self.turn) = Turn::Done(out);
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    /// A fake transit: answers input `x` with `Ok(x * 7 + 1)`, refuses odd
    /// multiples of 5 one by one, and takes `pause` per call so that
    /// concurrent requests queue. Counts calls and the items they carried.
    struct Fake {
        pause: Duration,
        calls: AtomicUsize,
        items: AtomicUsize,
        /// The most items one call carried.
        most: AtomicUsize,
        /// Outputs dropped from the end of every batch (a broken backend).
        short_by: usize,
        panic_on_batch: bool,
    }

    impl Fake {
        fn new(pause_ms: u64) -> Fake {
            Fake {
                pause: Duration::from_millis(pause_ms),
                calls: AtomicUsize::new(0),
                items: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                short_by: 0,
                panic_on_batch: false,
            }
        }
        fn answer(x: u64) -> Result<u64, String> {
            if x % 10 == 5 {
                Err(format!("refused {x}"))
            } else {
                Ok(x * 7 + 1)
            }
        }
    }

    impl Backend<u64, Result<u64, String>> for Fake {
        fn one(&self, x: &u64) -> Result<u64, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.items.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.pause);
            Fake::answer(*x)
        }
        fn many(&self, xs: &[&u64]) -> Vec<Result<u64, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.items.fetch_add(xs.len(), Ordering::SeqCst);
            self.most.fetch_max(xs.len(), Ordering::SeqCst);
            std::thread::sleep(self.pause);
            assert!(!self.panic_on_batch, "backend panics on a batch");
            let keep = xs.len().saturating_sub(self.short_by);
            xs.iter().take(keep).map(|x| Fake::answer(**x)).collect()
        }
        fn lost(&self) -> Result<u64, String> {
            Err("lost".into())
        }
        fn gave_up(&self, caller_gone: bool, _waited: Duration) -> Result<u64, String> {
            Err(if caller_gone { "gone" } else { "timeout" }.into())
        }
    }

    fn lane(limits: (usize, usize, usize)) -> Lane<u64, Result<u64, String>> {
        Lane::with_limits("test", |_, _| {}, |_| 8, limits)
    }

    /// Runs `n` requests at once (inputs `base..base+n`), returns each
    /// input with what it got.
    fn burst(
        l: &Arc<Lane<u64, Result<u64, String>>>,
        f: &Arc<Fake>,
        base: u64,
        n: u64,
    ) -> Vec<(u64, Result<u64, String>)> {
        let start = Arc::new(Barrier::new(n as usize));
        let handles: Vec<_> = (base..base + n)
            .map(|x| {
                let (l, f, start) = (l.clone(), f.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    (x, l.run(x, deadline, || false, f.as_ref()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    }

    #[test]
    fn every_request_gets_the_answer_to_its_own_input() {
        let (l, f) = (Arc::new(lane((2, 16, 1 << 20))), Arc::new(Fake::new(20)));
        for round in 0..3 {
            let got = burst(&l, &f, round * 1000, 64);
            for (x, r) in &got {
                assert_eq!(r, &Fake::answer(*x), "input {x}");
            }
        }
        // 192 requests, two go alone at first, the rest in batches of at
        // most 16: far fewer calls than requests, none of more than 16.
        let (calls, items) = (f.calls.load(Ordering::SeqCst), f.items.load(Ordering::SeqCst));
        assert_eq!(items, 192);
        assert_eq!(
            f.most.load(Ordering::SeqCst),
            16,
            "the item cap is reached, never passed"
        );
        assert!((12..=40).contains(&calls), "{calls} calls for 192 requests");
    }

    #[test]
    fn a_lone_request_goes_out_at_once_and_alone() {
        let (l, f) = (Arc::new(lane((2, 16, 1 << 20))), Arc::new(Fake::new(0)));
        for x in 0..50 {
            let t = Instant::now();
            assert_eq!(
                l.run(x, Instant::now() + Duration::from_secs(1), || false, f.as_ref()),
                Fake::answer(x)
            );
            assert!(t.elapsed() < Duration::from_millis(50));
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn batches_stay_within_the_item_and_byte_caps() {
        // Items of 8 bytes, 40 bytes a batch: at most 5 items a call.
        let (l, f) = (Arc::new(lane((1, 16, 40))), Arc::new(Fake::new(10)));
        let got = burst(&l, &f, 0, 31);
        assert!(got.iter().all(|(x, r)| r == &Fake::answer(*x)));
        assert_eq!(
            f.most.load(Ordering::SeqCst),
            5,
            "batches fill up to the byte cap, not past it"
        );
        assert!(f.calls.load(Ordering::SeqCst) > 30 / 5, "{:?}", f.calls);
    }

    #[test]
    fn a_short_or_panicking_batch_never_hands_out_another_answer() {
        let mut short = Fake::new(20);
        short.short_by = 3;
        let (l, f) = (Arc::new(lane((1, 64, 1 << 20))), Arc::new(short));
        for (x, r) in burst(&l, &f, 0, 32) {
            assert!(r == Fake::answer(x) || r == Err("lost".into()), "input {x} got {r:?}");
        }
        let mut panics = Fake::new(20);
        panics.panic_on_batch = true;
        let (l, f) = (Arc::new(lane((1, 64, 1 << 20))), Arc::new(panics));
        let start = Arc::new(Barrier::new(16));
        let handles: Vec<_> = (0..16u64)
            .map(|x| {
                let (l, f, start) = (l.clone(), f.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        l.run(x, Instant::now() + Duration::from_secs(5), || false, f.as_ref())
                    }));
                    (x, r)
                })
            })
            .collect();
        let mut leaders = 0;
        for h in handles {
            match h.join().expect("thread") {
                (x, Ok(r)) => assert!(r == Fake::answer(x) || r == Err("lost".into()), "input {x} got {r:?}"),
                (_, Err(_)) => leaders += 1,
            }
        }
        assert!(leaders >= 1, "no batch was sent");
        // The slot came back: the lane still serves.
        assert_eq!(
            l.run(3, Instant::now() + Duration::from_secs(1), || false, f.as_ref()),
            Fake::answer(3)
        );
    }

    #[test]
    fn a_queued_request_leaves_when_its_caller_goes_or_its_time_is_up() {
        let (l, f) = (Arc::new(lane((1, 16, 1 << 20))), Arc::new(Fake::new(300)));
        // The lane learns that a call takes 300 ms: a request with 100 ms
        // left could not finish even alone, so it stays queued (no call).
        assert_eq!(
            l.run(0, Instant::now() + Duration::from_secs(5), || false, f.as_ref()),
            Fake::answer(0)
        );
        let busy = {
            let (l, f) = (l.clone(), f.clone());
            std::thread::spawn(move || l.run(1, Instant::now() + Duration::from_secs(5), || false, f.as_ref()))
        };
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let r = l.run(2, Instant::now() + Duration::from_secs(5), || true, f.as_ref());
        assert_eq!(r, Err("gone".into()));
        let r = l.run(3, Instant::now() + Duration::from_millis(100), || false, f.as_ref());
        assert_eq!(r, Err("timeout".into()));
        assert!(t.elapsed() < Duration::from_millis(250), "{:?}", t.elapsed());
        assert_eq!(busy.join().expect("busy"), Fake::answer(1));
        // Neither left anything behind: one call, for the busy request
        // (and the first one).
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            l.run(4, Instant::now() + Duration::from_secs(1), || false, f.as_ref()),
            Fake::answer(4)
        );
    }

    /// `n` requests at once, each with `budget`; each input with what it
    /// got and how long it took.
    fn timed_burst(
        l: &Arc<Lane<u64, Result<u64, String>>>,
        f: &Arc<Fake>,
        n: u64,
        budget: Duration,
    ) -> Vec<(u64, Result<u64, String>, Duration)> {
        let start = Arc::new(Barrier::new(n as usize));
        let handles: Vec<_> = (0..n)
            .map(|x| {
                let (l, f, start) = (l.clone(), f.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    let r = l.run(x, t + budget, || false, f.as_ref());
                    (x, r, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    }

    /// Issue 21, 7: calls take 600 ms and requests have 1 s. Waiting for
    /// the slot (600 ms) and then a call (600 ms) would take 1.2 s, so a
    /// queued request must not wait: every one ends within its budget.
    #[test]
    fn a_request_that_cannot_afford_the_queue_goes_at_once() {
        let budget = Duration::from_millis(1000);
        let (l, f) = (Arc::new(lane((1, 16, 1 << 20))), Arc::new(Fake::new(600)));
        // Known figure: the queued requests see it at once and go alone.
        assert_eq!(
            l.run(99, Instant::now() + budget, || false, f.as_ref()),
            Fake::answer(99)
        );
        for (x, r, took) in timed_burst(&l, &f, 6, budget) {
            assert_eq!(r, Fake::answer(x));
            assert!(took < budget, "input {x} took {took:?} of its {budget:?}");
        }
        assert!(f.calls.load(Ordering::SeqCst) <= 7, "{:?} calls", f.calls);

        // No figure yet (a fresh lane): the queued requests watch the
        // running call and go together, in one early batch, once their
        // time left no longer covers three times what it has run.
        let (l, f) = (Arc::new(lane((1, 16, 1 << 20))), Arc::new(Fake::new(600)));
        for (x, r, took) in timed_burst(&l, &f, 8, Duration::from_millis(1200)) {
            assert_eq!(r, Fake::answer(x));
            assert!(took < Duration::from_millis(1200), "input {x} took {took:?}");
        }
        let calls = f.calls.load(Ordering::SeqCst);
        assert!((2..=3).contains(&calls), "{calls} calls for 8 requests");
    }
}
