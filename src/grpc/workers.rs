//! Request threads, parked between requests. Each request in flight still
//! owns one OS thread for its whole life and makes blocking calls on it;
//! what changes is that a thread whose request is done waits
//! [`WORKER_IDLE_EXIT`] for the next one instead of exiting, so a busy
//! plugin does not pay a `clone3`, a fresh stack and a TLS-slot setup per
//! call (docs/performance.md has both figures). No queue builds up: a job
//! goes to a parked thread only when one is waiting for it, otherwise a new
//! thread is started, so the in-flight cap (taken before [`Workers::run`])
//! still bounds the threads that work, and idle ones exit on their own.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{WORKER_IDLE_EXIT, WORKER_STACK};

/// What a job leaves to do once its thread is counted free: handing its
/// reply's completion to `replies` (never blocking). Run after the thread
/// says it is parked, so the client's next request, which may arrive as
/// soon as the reply is written, finds this thread instead of starting a
/// new one.
pub type Leftover = Box<dyn FnOnce() + Send + 'static>;

/// A job never waits for anything after its reply is written: the reply's
/// delivery is watched by `replies`, so a parked thread is always free.
type Job = Box<dyn FnOnce() -> Option<Leftover> + Send + 'static>;

/// The parked threads, shared by cloning.
#[derive(Clone)]
pub struct Workers(Arc<Pool>);

struct Pool {
    state: Mutex<State>,
    wake: Condvar,
    /// How long a thread stays parked ([`WORKER_IDLE_EXIT`]; shorter in tests).
    idle_exit: Duration,
}

#[derive(Default)]
struct State {
    /// Jobs handed to parked threads that have not picked them up yet.
    /// Never longer than the number of parked threads.
    queue: VecDeque<Job>,
    /// Parked threads no job has been handed to yet.
    idle: usize,
    /// Threads alive (working or parked), for the tests and the log.
    alive: usize,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only this module writes the state, and never panics while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Workers {
    fn default() -> Workers {
        Workers::new(WORKER_IDLE_EXIT)
    }
}

impl Workers {
    fn new(idle_exit: Duration) -> Workers {
        Workers(Arc::new(Pool {
            state: Mutex::default(),
            wake: Condvar::new(),
            idle_exit,
        }))
    }

    /// Runs `job` on a parked thread, or on a new one when none is parked.
    /// Fails only when a new thread cannot be started (the job is dropped).
    pub fn run(&self, job: impl FnOnce() -> Option<Leftover> + Send + 'static) -> std::io::Result<()> {
        let job: Job = Box::new(job);
        {
            let mut st = self.0.lock();
            if st.idle > 0 {
                st.idle -= 1;
                st.queue.push_back(job);
                drop(st);
                self.0.wake.notify_one();
                return Ok(());
            }
            st.alive += 1;
        }
        let pool = self.0.clone();
        let started = std::thread::Builder::new()
            .name("kms-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || work(&pool, job));
        if started.is_err() {
            self.0.lock().alive -= 1;
        }
        started.map(drop)
    }

    /// Threads alive, working or parked.
    #[cfg(test)]
    fn alive(&self) -> usize {
        self.0.lock().alive
    }
}

/// A worker's life: its first job, then whatever is handed to it while it
/// is parked, until it has waited [`WORKER_IDLE_EXIT`] for nothing.
fn work(pool: &Pool, first: Job) {
    let mut job = first;
    loop {
        // The job catches its own panics (dispatch); a panic escaping it
        // would end this thread only, and `alive` would stay one too high.
        let leftover = job();
        let mut st = pool.lock();
        st.idle += 1;
        if let Some(finish) = leftover {
            // Counted idle first; the leftover never blocks, and a job
            // handed over meanwhile waits in the queue for this thread.
            drop(st);
            finish();
            st = pool.lock();
        }
        let parked_at = Instant::now();
        let next = loop {
            if let Some(j) = st.queue.pop_front() {
                break Some(j);
            }
            let left = pool.idle_exit.saturating_sub(parked_at.elapsed());
            if left.is_zero() {
                // Nothing was handed over (the queue is empty), so this
                // thread is still counted idle: take it off and exit.
                st.idle -= 1;
                st.alive -= 1;
                break None;
            }
            st = pool
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(st);
        match next {
            Some(j) => job = j,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_parked_thread_takes_the_next_job() {
        let w = Workers::default();
        let (tx, rx) = mpsc::channel();
        for _ in 0..50 {
            let tx = tx.clone();
            w.run(move || {
                let _ = tx.send(std::thread::current().id());
                None
            })
            .unwrap();
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
            // Let the worker park before the next job comes.
            for _ in 0..500 {
                if w.0.lock().idle == 1 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(w.alive(), 1, "50 jobs one after another need one thread");
    }

    #[test]
    fn concurrent_jobs_each_get_their_own_thread() {
        let w = Workers::default();
        let gate = Arc::new(std::sync::Barrier::new(9));
        let (tx, rx) = mpsc::channel();
        for _ in 0..8 {
            let (gate, tx) = (gate.clone(), tx.clone());
            w.run(move || {
                let _ = tx.send(std::thread::current().id());
                // All 8 are in flight at once: none waits for another's thread.
                gate.wait();
                None
            })
            .unwrap();
        }
        gate.wait();
        let mut ids: Vec<_> = (0..8)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        assert_eq!(ids.len(), 8);
        assert_eq!(w.alive(), 8);
    }

    #[test]
    fn parked_threads_exit_after_the_idle_time() {
        let w = Workers::new(Duration::from_millis(100));
        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            w.run(move || {
                std::thread::sleep(Duration::from_millis(20));
                let _ = tx.send(());
                None
            })
            .unwrap();
        }
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.alive() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(w.alive(), 0, "idle threads must exit");
        // And the pool still works afterwards.
        w.run(move || {
            let _ = tx.send(());
            None
        })
        .unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    /// The client's next request can arrive while the thread hands its
    /// reply's completion over (the leftover): the thread is already
    /// counted parked then, so that request is queued for it instead of
    /// starting a second thread (a soak with 16 callers otherwise grew
    /// to 28 threads where 16 do).
    #[test]
    fn a_job_handed_over_during_the_leftover_goes_to_the_same_thread() {
        let w = Workers::default();
        let (tx, rx) = mpsc::channel();
        let (w2, tx2) = (w.clone(), tx.clone());
        w.run(move || {
            let _ = tx.send(std::thread::current().id());
            Some(Box::new(move || {
                w2.run(move || {
                    let _ = tx2.send(std::thread::current().id());
                    None
                })
                .unwrap();
            }) as Leftover)
        })
        .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first, second, "the next job went to another thread");
        assert_eq!(w.alive(), 1);
    }
}
