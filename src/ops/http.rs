//! The operator's HTTP endpoints on `--http-addr`, served with std's
//! TcpListener and no async runtime:
//!
//! - `/livez`: the process runs and its Unix socket accepts connections.
//!   Never looks at Vault: a liveness probe that followed Vault would turn
//!   a Vault outage into a crash loop of every plugin.
//! - `/readyz`, `/healthz`: a real transit round trip succeeded recently
//!   (the same cached, single-flight health check as KMS v2 Status: at most one
//!   check per 10 s while healthy, per second while failing); the reason in
//!   the body when not.
//! - `/metrics`: Prometheus (OpenMetrics) text.
//!
//! Requests are `GET` (or `HEAD`) with a small head; every connection is
//! closed after one answer.
//!
//! Anything on the node reaches this port (the manifests use hostNetwork),
//! so clients that connect and never finish their head must not starve
//! kubelet's probe. Heads are therefore read by one thread (`http-heads`)
//! from non-blocking sockets, not by a thread per connection: a new
//! connection is read at once (a probe's head is there already), the
//! others at every [`HTTP_HEAD_POLL`]. When [`HTTP_MAX_PENDING_HEADS`]
//! unfinished heads wait, the oldest is shed. A finished head is answered
//! there and then when that costs nothing (errors, 404), else on an
//! `http-conn` thread, at most [`HTTP_MAX_CONNECTIONS`] of them, of which
//! [`HTTP_LIVEZ_RESERVE`] only `/livez` may take: slow `/readyz` or
//! `/metrics` callers cannot take the liveness probe's thread either.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use crate::kms::{Gauges, StatusReport};
use crate::limits::WORKER_STACK;
use crate::limits::{
    HTTP_ACCEPT_BACKOFF_MAX, HTTP_ACCEPT_BACKOFF_MIN, HTTP_HEAD_POLL, HTTP_HEAD_TIMEOUT, HTTP_IO_TIMEOUT,
    HTTP_LIVEZ_RESERVE, HTTP_MAX_CONNECTIONS, HTTP_MAX_HEAD, HTTP_MAX_PENDING_HEADS,
};
use crate::metrics::{metrics, Snapshot};
use crate::permits::Permits;

/// What the endpoints need to know, and nothing more: the plugin's health
/// (the same cached, single-flight health check as KMS v2 Status), its gauges and
/// the requests in flight.
pub trait Observed: Send + Sync + 'static {
    fn status(&self) -> StatusReport;
    fn gauges(&self) -> Gauges;
    fn in_flight(&self) -> usize;
}

type View = Arc<dyn Observed>;

/// Binds the listener (before the plugin's socket exists, so a taken port
/// stops start-up).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on --http-addr {addr}: {e}"))
}

/// Serves the endpoints on background threads for the process's life.
pub fn spawn(listener: TcpListener, shared: View, socket: PathBuf) -> std::io::Result<()> {
    // Bounded: when the head reader falls behind, accept waits and the
    // kernel's backlog holds the rest.
    let (tx, rx) = std::sync::mpsc::sync_channel::<TcpStream>(HTTP_MAX_PENDING_HEADS);
    let heads = Heads {
        shared,
        socket: Arc::new(socket),
        any: Permits::new(HTTP_MAX_CONNECTIONS - HTTP_LIVEZ_RESERVE),
        livez: Permits::new(HTTP_LIVEZ_RESERVE),
        pending: VecDeque::new(),
    };
    std::thread::Builder::new()
        .name("http-heads".into())
        .spawn(move || heads.run(&rx))?;
    std::thread::Builder::new().name("http-accept".into()).spawn(move || {
        let mut backoff = HTTP_ACCEPT_BACKOFF_MIN;
        for conn in listener.incoming() {
            match conn {
                Ok(s) => {
                    backoff = HTTP_ACCEPT_BACKOFF_MIN;
                    if tx.send(s).is_err() {
                        return; // the head reader is gone
                    }
                }
                Err(e) => {
                    log::debug!("http: accept failed ({e}); next try in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(HTTP_ACCEPT_BACKOFF_MAX);
                }
            }
        }
    })?;
    Ok(())
}

/// A connection whose request head is not complete yet.
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
    since: Instant,
}

/// What reading a pending head came to.
enum Progress {
    /// Nothing more to read now.
    Waiting,
    Done(Result<RequestLine, String>),
    /// The client went away: nothing to answer.
    Gone,
}

impl Pending {
    /// Reads what has arrived, without waiting.
    fn advance(&mut self) -> Progress {
        let mut chunk = [0u8; 512];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Progress::Gone,
                Ok(n) => {
                    self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    if self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        return Progress::Done(parse_head(&self.buf));
                    }
                    if self.buf.len() > HTTP_MAX_HEAD {
                        return Progress::Done(Err(format!("request head larger than {HTTP_MAX_HEAD} bytes")));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Waiting,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Progress::Gone,
            }
        }
    }
}

/// The head reader's state: the connections still sending their heads and
/// the threads that answer the finished ones.
struct Heads {
    shared: View,
    socket: Arc<PathBuf>,
    /// Answer threads any request may take.
    any: Permits,
    /// Answer threads only `/livez` may take.
    livez: Permits,
    pending: VecDeque<Pending>,
}

impl Heads {
    /// Takes connections from the accept thread and reads their heads until
    /// the accept thread ends.
    fn run(mut self, rx: &Receiver<TcpStream>) {
        let mut next_pass = Instant::now() + HTTP_HEAD_POLL;
        loop {
            let first = if self.pending.is_empty() {
                match rx.recv() {
                    Ok(s) => Some(s),
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(next_pass.saturating_duration_since(Instant::now())) {
                    Ok(s) => Some(s),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            if let Some(s) = first {
                self.admit(s);
                while let Ok(s) = rx.try_recv() {
                    self.admit(s);
                }
            }
            let now = Instant::now();
            if now >= next_pass {
                self.pass(now);
                next_pass = now + HTTP_HEAD_POLL;
            }
        }
    }

    /// A new connection: read at once; if its head is not all there, it
    /// waits in line, and the oldest waiting one is shed when the line is
    /// full.
    fn admit(&mut self, stream: TcpStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut p = Pending {
            stream,
            buf: Vec::new(),
            since: Instant::now(),
        };
        match p.advance() {
            Progress::Waiting => {
                if self.pending.len() >= HTTP_MAX_PENDING_HEADS {
                    // Dropped: closed without an answer.
                    self.pending.pop_front();
                }
                self.pending.push_back(p);
            }
            Progress::Done(head) => self.answer(p.stream, head),
            Progress::Gone => {}
        }
    }

    /// Reads every waiting head once; answers the finished ones and those
    /// past [`HTTP_HEAD_TIMEOUT`].
    fn pass(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.pending);
        for mut p in waiting {
            match p.advance() {
                Progress::Waiting if now.saturating_duration_since(p.since) >= HTTP_HEAD_TIMEOUT => {
                    let why = format!("request head not complete within {HTTP_HEAD_TIMEOUT:?}");
                    self.answer(p.stream, Err(why));
                }
                Progress::Waiting => self.pending.push_back(p),
                Progress::Done(head) => self.answer(p.stream, head),
                Progress::Gone => {}
            }
        }
    }

    /// Answers a finished head: at once when the answer costs nothing,
    /// else on an answer thread (or 503 when none is free).
    fn answer(&self, stream: TcpStream, head: Result<RequestLine, String>) {
        let head = match head {
            Ok(h) if h.method != "GET" && h.method != "HEAD" => {
                return reply(stream, false, &text(405, "only GET\n".into()));
            }
            Ok(h) if !matches!(h.path.as_str(), "/livez" | "/readyz" | "/healthz" | "/metrics") => {
                let body = "endpoints: /livez /readyz /healthz /metrics\n";
                return reply(stream, h.method == "HEAD", &text(404, body.into()));
            }
            Ok(h) => h,
            Err(why) => return reply(stream, false, &text(400, format!("{why}\n"))),
        };
        let slot = if head.path == "/livez" {
            self.livez.try_acquire().or_else(|| self.any.try_acquire())
        } else {
            self.any.try_acquire()
        };
        let Some(slot) = slot else {
            let busy = format!("busy: {HTTP_MAX_CONNECTIONS} requests being answered\n");
            return reply(stream, head.method == "HEAD", &text(503, busy));
        };
        let (shared, socket) = (self.shared.clone(), self.socket.clone());
        // The slot goes with the thread; if it cannot start, the closure
        // is dropped and the slot with it.
        let _ = std::thread::Builder::new()
            .name("http-conn".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let _slot = slot;
                if stream.set_nonblocking(false).is_err() {
                    return;
                }
                let _ = stream.set_write_timeout(Some(HTTP_IO_TIMEOUT));
                let a = route(&head.path, &shared, &socket);
                reply(stream, head.method == "HEAD", &a);
            });
    }
}

struct Answer {
    code: u16,
    content_type: &'static str,
    body: String,
}

fn text(code: u16, body: String) -> Answer {
    Answer {
        code,
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

/// Writes the answer and closes the connection. On a non-blocking socket
/// the short answers given at once fit its empty send buffer; if one does
/// not, the client is not waited for.
fn reply(mut stream: TcpStream, head_only: bool, answer: &Answer) {
    let reason = match answer.code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        answer.code,
        answer.content_type,
        answer.body.len()
    );
    if !head_only {
        out.push_str(&answer.body);
    }
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

fn route(path: &str, shared: &View, socket: &Path) -> Answer {
    match path {
        "/livez" => match UnixStream::connect(socket) {
            Ok(_) => text(200, "ok\n".into()),
            Err(e) => text(503, format!("socket {} does not accept: {e}\n", socket.display())),
        },
        "/readyz" | "/healthz" => {
            let r = shared.status();
            match r.healthy {
                Ok(()) => text(200, format!("ok\nkey_id {}\n", r.key_id.unwrap_or_default())),
                Err(why) => text(503, format!("not ready: {why}\n")),
            }
        }
        "/metrics" => {
            let g = shared.gauges();
            Answer {
                code: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: metrics().render(&Snapshot {
                    in_flight: shared.in_flight(),
                    token_ttl: g.token_ttl,
                    key_version: g.key_version,
                    ready: g.ready,
                }),
            }
        }
        _ => text(404, "endpoints: /livez /readyz /healthz /metrics\n".into()),
    }
}

/// What a request asks for.
struct RequestLine {
    method: String,
    /// The query string dropped.
    path: String,
}

/// The request line of a complete head.
fn parse_head(buf: &[u8]) -> Result<RequestLine, String> {
    let head = String::from_utf8_lossy(buf);
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err("malformed request line".into());
    };
    let path = target.split('?').next().unwrap_or_default();
    Ok(RequestLine {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}
