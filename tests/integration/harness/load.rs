//! Continuous KMS v2 round trips from several client threads, recording
//! every outcome with its time, and a TCP black hole for timeout tests.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{decrypt_v2, dek, encrypt_v2, KmsClient, DEADLINE};

/// One Encrypt+Decrypt round trip.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub start: Instant,
    pub end: Instant,
    /// None: decrypted == original. Some: what went wrong.
    pub error: Option<String>,
    /// The plugin answered both calls but the plaintext differs.
    pub wrong: bool,
}

/// `threads` clients doing v2 Encrypt then Decrypt of fresh DEKs until
/// stopped. A wrong plaintext stops every thread and makes [`Load::check`]
/// panic.
pub struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    handles: Vec<JoinHandle<()>>,
    pub started: Instant,
}

impl Load {
    pub fn start(socket: &Path, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|_| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                let c = KmsClient::connect(socket, DEADLINE);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let o = round_trip(&c);
                        let wrong = o.wrong;
                        let failed = o.error.is_some();
                        outcomes.lock().unwrap().push(o);
                        if wrong {
                            stop.store(true, Ordering::SeqCst);
                        }
                        if failed {
                            // Do not spin on instant failures.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            outcomes,
            handles,
            started: Instant::now(),
        }
    }

    /// Panics at once if any round trip returned a wrong plaintext.
    pub fn check(&self) {
        let o = self.outcomes.lock().unwrap();
        if let Some(w) = o.iter().find(|o| o.wrong) {
            panic!("WRONG PLAINTEXT: {:?}", w.error);
        }
    }

    /// Runs `check` every 100 ms for `d`.
    pub fn run_for(&self, d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            self.check();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.check();
    }

    pub fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Stops the threads (each finishes its round trip) and returns every
    /// outcome, after checking for wrong plaintexts.
    pub fn stop(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            h.join().expect("load thread panicked");
        }
        self.check();
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A failed call as "CODE: message", without grpcio's debug string.
fn short(e: &grpcio::Error) -> String {
    match e {
        grpcio::Error::RpcFailure(s) => format!("{:?}: {}", s.code(), s.message()),
        other => format!("{other:?}"),
    }
}

fn round_trip(c: &KmsClient) -> Outcome {
    let start = Instant::now();
    let pt = dek();
    let (error, wrong) = match encrypt_v2(c, &pt) {
        Err(e) => (Some(format!("encrypt: {}", short(&e))), false),
        Ok(e) => match decrypt_v2(c, &e.ciphertext, &e.key_id) {
            Err(err) => (Some(format!("decrypt: {}", short(&err))), false),
            Ok(got) if got == pt => (None, false),
            Ok(got) => (
                Some(format!(
                    "decrypted {} bytes that differ from the {} encrypted",
                    got.len(),
                    pt.len()
                )),
                true,
            ),
        },
    };
    Outcome {
        start,
        end: Instant::now(),
        error,
        wrong,
    }
}

/// Figures over a set of outcomes.
pub struct Figures<'a>(pub &'a [Outcome]);

impl Figures<'_> {
    pub fn ok(&self) -> usize {
        self.0.iter().filter(|o| o.error.is_none()).count()
    }
    pub fn failed(&self) -> usize {
        self.0.iter().filter(|o| o.error.is_some()).count()
    }
    pub fn wrong(&self) -> usize {
        self.0.iter().filter(|o| o.wrong).count()
    }
    /// Failures among round trips that started in [from, to).
    pub fn failed_started_between(&self, from: Instant, to: Instant) -> usize {
        self.0
            .iter()
            .filter(|o| o.start >= from && o.start < to && o.error.is_some())
            .count()
    }
    /// How long after `t` the first round trip that started after `t`
    /// succeeded (its end).
    pub fn first_ok_started_after(&self, t: Instant) -> Option<Duration> {
        self.0
            .iter()
            .filter(|o| o.start >= t && o.error.is_none())
            .map(|o| o.end - t)
            .min()
    }
    pub fn max_latency(&self) -> Duration {
        self.0.iter().map(|o| o.end - o.start).max().unwrap_or_default()
    }
    /// Distinct error messages with their counts (at most 8), for the
    /// test's output.
    pub fn error_samples(&self) -> Vec<(usize, String)> {
        let mut v: Vec<(usize, String)> = Vec::new();
        for e in self.0.iter().filter_map(|o| o.error.as_ref()) {
            if let Some((n, _)) = v.iter_mut().find(|(_, m)| m == e) {
                *n += 1;
            } else if v.len() < 8 {
                v.push((1, e.clone()));
            }
        }
        v
    }
    pub fn summary(&self) -> String {
        format!(
            "{} round trips: {} ok, {} failed, {} wrong; max latency {:?}",
            self.0.len(),
            self.ok(),
            self.failed(),
            self.wrong(),
            self.max_latency()
        )
    }
}

/// A loopback port that accepts connections and never answers: a Vault
/// node that hangs.
pub struct BlackHole {
    pub addr: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
