//! A TCP proxy between plugin and OpenBao for faults the real server cannot
//! produce on demand.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP proxy between plugin and OpenBao that can slow traffic down and
/// counts the HTTP requests the plugin sends: what the real server cannot
/// show on demand.
pub struct FaultProxy {
    pub addr: String,
    delay_ms: Arc<AtomicU64>,
    /// Delay applied only to chunks that start a request (see
    /// [`FaultProxy::set_request_delay`]).
    request_delay_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    redirects: Arc<AtomicU64>,
    mode: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Connections from the plugin open now, and the most at once.
    open: Arc<AtomicU64>,
    most_open: Arc<AtomicU64>,
}

/// What the proxy does with each chunk the plugin sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward it (after the configured delay).
    Forward = 0,
    /// Close both connections without an answer.
    Cut = 1,
    /// Answer `502 Bad Gateway` with an HTML body, like a load balancer.
    BadGateway = 2,
    /// Forward each request with `X-Vault-No-Request-Forwarding: true`
    /// added, so that a real OpenBao standby answers 307 to the active node.
    NoForwarding = 3,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let request_delay_ms = Arc::new(AtomicU64::new(0));
        let rq = request_delay_ms.clone();
        let requests = Arc::new(AtomicU64::new(0));
        let redirects = Arc::new(AtomicU64::new(0));
        let mode = Arc::new(AtomicU64::new(ProxyMode::Forward as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, r, m, s) = (delay_ms.clone(), requests.clone(), mode.clone(), stop.clone());
        let rd = redirects.clone();
        let open = Arc::new(AtomicU64::new(0));
        let most_open = Arc::new(AtomicU64::new(0));
        let (o, mo) = (open.clone(), most_open.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let up = Upstream {
                            delay_ms: d.clone(),
                            request_delay_ms: rq.clone(),
                            requests: r.clone(),
                            mode: m.clone(),
                        };
                        let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                        mo.fetch_max(now, Ordering::SeqCst);
                        let o = o.clone();
                        std::thread::spawn(move || {
                            pipe(client, server, Some(up));
                            o.fetch_sub(1, Ordering::SeqCst);
                        });
                        let rd = rd.clone();
                        std::thread::spawn(move || pipe_back(s2, c2, rd));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr: format!("http://127.0.0.1:{port}"),
            delay_ms,
            request_delay_ms,
            requests,
            redirects,
            mode,
            stop,
            open,
            most_open,
        }
    }

    /// The most connections from the plugin that were open at once.
    pub fn most_open(&self) -> u64 {
        self.most_open.load(Ordering::SeqCst)
    }

    /// Delay applied to each chunk sent from the plugin towards OpenBao.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Delay applied once per request (to the chunk that carries its
    /// request line), however the plugin's writes are split: a Vault that
    /// takes `d` longer to answer each call.
    pub fn set_request_delay(&self, d: Duration) {
        self.request_delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_mode(&self, m: ProxyMode) {
        self.mode.store(m as u64, Ordering::SeqCst);
    }

    /// POST requests (transit calls, logins, renewals) the plugin has sent
    /// to OpenBao through this proxy; GETs (lookups, key reads) are not
    /// counted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// `307` answers OpenBao sent back through this proxy.
    pub fn redirects(&self) -> u64 {
        self.redirects.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Upstream {
    delay_ms: Arc<AtomicU64>,
    request_delay_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    mode: Arc<AtomicU64>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream, upstream: Option<Upstream>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(up) = &upstream {
            let chunk = &buf[..n];
            let count = chunk.windows(9).filter(|w| *w == b"POST /v1/").count();
            up.requests.fetch_add(count as u64, Ordering::SeqCst);
            match up.mode.load(Ordering::SeqCst) {
                1 => {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                2 => {
                    let body = "<html><body><h1>502 Bad Gateway</h1></body></html>";
                    let resp = format!(
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = from.write_all(resp.as_bytes());
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                3 => {
                    let out = inject_no_forwarding(chunk);
                    if to.write_all(&out).is_err() {
                        break;
                    }
                    continue;
                }
                _ => {}
            }
            let mut ms = up.delay_ms.load(Ordering::Relaxed);
            if chunk.windows(11).any(|w| w == b" HTTP/1.1\r\n") {
                ms += up.request_delay_ms.load(Ordering::Relaxed);
            }
            if ms > 0 {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Adds the no-forwarding header after each request line in `chunk`.
fn inject_no_forwarding(chunk: &[u8]) -> Vec<u8> {
    const LINE_END: &[u8] = b" HTTP/1.1\r\n";
    const HEADER: &[u8] = b"X-Vault-No-Request-Forwarding: true\r\n";
    let mut out = Vec::with_capacity(chunk.len() + 64);
    let mut i = 0;
    while i < chunk.len() {
        if chunk[i..].starts_with(LINE_END) {
            out.extend_from_slice(LINE_END);
            out.extend_from_slice(HEADER);
            i += LINE_END.len();
        } else {
            out.push(chunk[i]);
            i += 1;
        }
    }
    out
}

/// Copies OpenBao's answers back to the plugin, counting 307s.
fn pipe_back(mut from: TcpStream, mut to: TcpStream, redirects: Arc<AtomicU64>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let count = buf[..n].windows(13).filter(|w| *w == b"HTTP/1.1 307 ").count();
        redirects.fetch_add(count as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
