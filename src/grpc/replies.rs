//! Replies on their way out. A worker writes its reply itself (no thread
//! hop on the reply path) and hands the write's completion here with the
//! request's in-flight permit; the thread is then free for its next
//! request at once, whatever the client does.
//!
//! The completion must be kept until gRPC core has finished the call:
//! dropping it drops the last reference to the call, and core cancels a
//! call unreferenced before it completes (measured: CANCELLED replies). So
//! each [`watch`]ed reply is polled by whoever wakes it: the completion-
//! queue thread that reports the write done (no extra thread wake-up), or,
//! for a reply no one accepts (a client whose flow-control window stays
//! at 0), the `grpc-replies` thread, which abandons it once it has waited
//! [`REPLY_DELIVERY_TIMEOUT`]: the completion is dropped, core cancels the
//! call and the permit is released. Nothing here ever blocks a worker.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::limits::{REPLY_DELIVERY_TIMEOUT, REPLY_REAP_TICK};
use crate::permits::Permit;

/// A reply's completion, as grpcio's `UnarySinkResult` resolves it.
pub type Completion = Pin<Box<dyn Future<Output = grpcio::Result<()>> + Send + 'static>>;

/// What a log line about the reply names.
pub struct Label {
    pub api: &'static str,
    pub op: &'static str,
    /// Already made log-safe.
    pub uid: String,
}

impl Label {
    pub fn new(api: &'static str, op: &'static str, uid: &str) -> Label {
        Label {
            api,
            op,
            uid: super::log_safe_uid(uid),
        }
    }
}

struct Pending {
    done: Completion,
    /// Released when the reply is delivered or abandoned, not before.
    _permit: Option<Permit>,
    label: Label,
}

/// One reply being delivered: its completion, polled from its waker.
struct Entry(Mutex<Option<Pending>>);

impl Entry {
    fn lock(&self) -> MutexGuard<'_, Option<Pending>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls the completion once; when it has resolved, drops it and the
    /// permit. Called by the worker once, then by the completion's waker.
    fn poll(self: &Arc<Self>) {
        let waker = Waker::from(self.clone());
        let mut slot = self.lock();
        let Some(p) = slot.as_mut() else { return };
        let Poll::Ready(r) = p.done.as_mut().poll(&mut Context::from_waker(&waker)) else {
            return;
        };
        let finished = slot.take();
        drop(slot);
        if let (Err(e), Some(p)) = (r, &finished) {
            let Label { api, op, uid } = &p.label;
            log::debug!("api={api} op={op} uid={uid} reply not delivered: {e}");
        }
        drop(finished);
    }

    /// Gives up on a reply that was not delivered in time.
    fn abandon(&self) {
        let Some(p) = self.lock().take() else { return };
        let Label { api, op, uid } = &p.label;
        match crate::logging::warn_repeat((*api, *op, "reply-abandoned")) {
            Some(quiet) => log::warn!(
                "api={api} op={op} uid={uid} reply not accepted by the client within {}s: call cancelled ({quiet} more like this logged at debug only)",
                REPLY_DELIVERY_TIMEOUT.as_secs()
            ),
            None => log::debug!("api={api} op={op} uid={uid} reply abandoned"),
        }
        // Dropped outside the lock: core cancels the call, and the waker
        // that reports it finds the entry empty.
        drop(p);
    }
}

impl Wake for Entry {
    fn wake(self: Arc<Self>) {
        self.poll();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.poll();
    }
}

/// Replies not yet known delivered, oldest first, for the `grpc-replies`
/// thread. Entries delivered meanwhile are dead weak references, pruned
/// as the queue grows.
struct Queue {
    /// Each reply's due time, and the length at which the list is pruned.
    list: Mutex<(VecDeque<Due>, usize)>,
    wake: Condvar,
}

type Due = (Instant, Weak<Entry>);

/// Never pruned below this many entries (a few KiB).
const PRUNE_FLOOR: usize = 256;

fn queue() -> &'static Arc<Queue> {
    static Q: OnceLock<Arc<Queue>> = OnceLock::new();
    Q.get_or_init(|| {
        let q = Arc::new(Queue {
            list: Mutex::new((VecDeque::new(), PRUNE_FLOOR)),
            wake: Condvar::new(),
        });
        let reaper = q.clone();
        let started = std::thread::Builder::new()
            .name("grpc-replies".into())
            .stack_size(crate::limits::REPLY_REAPER_STACK)
            .spawn(move || reap(&reaper));
        if let Err(e) = started {
            // Replies are still delivered and their permits released as
            // they are; only undeliverable ones are no longer abandoned.
            log::error!("cannot start the grpc-replies thread: {e}");
        }
        q
    })
}

/// Watches a reply just written: `done` is polled until it resolves or
/// [`REPLY_DELIVERY_TIMEOUT`] has passed; `permit` goes with it.
pub fn watch(done: Completion, permit: Option<Permit>, label: Label) {
    let entry = Arc::new(Entry(Mutex::new(Some(Pending {
        done,
        _permit: permit,
        label,
    }))));
    entry.poll();
    if entry.lock().is_none() {
        return; // Already delivered (or failed at once).
    }
    let q = queue();
    let mut guard = q.list.lock().unwrap_or_else(PoisonError::into_inner);
    let (list, prune_at) = &mut *guard;
    let was_empty = list.is_empty();
    list.push_back((Instant::now() + REPLY_DELIVERY_TIMEOUT, Arc::downgrade(&entry)));
    if list.len() >= *prune_at {
        list.retain(|(_, w)| w.strong_count() > 0);
        *prune_at = (list.len() * 2).max(PRUNE_FLOOR);
    }
    drop(guard);
    if was_empty {
        q.wake.notify_one();
    }
}

/// The `grpc-replies` thread: abandons what is overdue, then sleeps until
/// the oldest entry is due, but at least [`REPLY_REAP_TICK`] (so a busy
/// plugin wakes it about once a tick, not once per reply); idle while
/// nothing waits.
fn reap(q: &Queue) {
    let mut guard = q.list.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some((at, _)) = guard.0.front() {
            if *at > now {
                break;
            }
            if let Some((_, w)) = guard.0.pop_front() {
                due.push(w);
            }
        }
        if !due.is_empty() {
            drop(guard);
            for e in due.iter().filter_map(Weak::upgrade) {
                e.abandon();
            }
            guard = q.list.lock().unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        guard = match guard.0.front() {
            None => q.wake.wait(guard).unwrap_or_else(PoisonError::into_inner),
            Some((at, _)) => {
                let sleep = at.saturating_duration_since(now).max(REPLY_REAP_TICK);
                q.wake
                    .wait_timeout(guard, sleep)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}
