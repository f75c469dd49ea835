//! The operator's HTTP endpoints on `--http-addr`, served with std's
//! TcpListener and a thread per connection (no async runtime):
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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use crate::kms::{Gauges, StatusReport};
use crate::limits::WORKER_STACK;
use crate::limits::{
    HTTP_ACCEPT_BACKOFF_MAX, HTTP_ACCEPT_BACKOFF_MIN, HTTP_HEAD_TIMEOUT, HTTP_IO_TIMEOUT, HTTP_MAX_CONNECTIONS,
    HTTP_MAX_HEAD,
};
use crate::metrics::{metrics, Snapshot};

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

/// Serves the endpoints on a background thread for the process's life.
pub fn spawn(listener: TcpListener, shared: View, socket: PathBuf) -> std::io::Result<()> {
    let slots = crate::permits::Permits::new(HTTP_MAX_CONNECTIONS);
    let socket = Arc::new(socket);
    std::thread::Builder::new().name("http-accept".into()).spawn(move || {
        let mut backoff = HTTP_ACCEPT_BACKOFF_MIN;
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => {
                    backoff = HTTP_ACCEPT_BACKOFF_MIN;
                    s
                }
                Err(e) => {
                    log::debug!("http: accept failed ({e}); next try in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(HTTP_ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let Some(slot) = slots.try_acquire() else {
                continue; // dropped: closed without an answer
            };
            let (shared2, socket2) = (shared.clone(), socket.clone());
            // The slot goes with the thread; if it cannot start, the
            // closure is dropped and the slot with it.
            let _ = std::thread::Builder::new()
                .name("http-conn".into())
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    let _slot = slot;
                    handle(stream, &shared2, &socket2);
                });
        }
    })?;
    Ok(())
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

fn handle(mut stream: TcpStream, shared: &View, socket: &std::path::Path) {
    // read_head bounds each read by what is left of HTTP_HEAD_TIMEOUT.
    let _ = stream.set_write_timeout(Some(HTTP_IO_TIMEOUT));
    let (method, answer) = match read_head(&mut stream) {
        Ok(RequestLine { method, path }) => {
            let a = if method != "GET" && method != "HEAD" {
                text(405, "only GET\n".into())
            } else {
                route(&path, shared, socket)
            };
            (method, a)
        }
        Err(why) => (String::new(), text(400, format!("{why}\n"))),
    };
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
    if method != "HEAD" {
        out.push_str(&answer.body);
    }
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

fn route(path: &str, shared: &View, socket: &std::path::Path) -> Answer {
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

/// Reads up to the end of the request head.
fn read_head(stream: &mut TcpStream) -> Result<RequestLine, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let deadline = std::time::Instant::now() + HTTP_HEAD_TIMEOUT;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("request head not complete within {HTTP_HEAD_TIMEOUT:?}"));
        }
        // Each read waits only for what is left of the head's time, so a
        // client dripping a byte at a time is cut off on time.
        let _ = stream.set_read_timeout(Some(left));
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.len() > HTTP_MAX_HEAD {
            return Err(format!("request head larger than {HTTP_MAX_HEAD} bytes"));
        }
    }
    let head = String::from_utf8_lossy(&buf);
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
