//! Small loopback servers of ours for what the plugin must or must not
//! reach: a recorder that keeps every byte it is sent, an HTTP CONNECT
//! proxy, and a redirector that answers every request with a 307. Each
//! runs on its own threads until dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a connection to one of these servers may stay silent.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts on a free loopback port and hands each connection to `serve`
/// on its own thread until `stop` is set.
fn accept_loop(stop: Arc<AtomicBool>, serve: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = c.set_write_timeout(Some(IO_TIMEOUT));
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(c));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port
}

/// Reads one request head (up to the blank line), at most 64 KiB.
fn read_head(c: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    head
}

/// Keeps every byte any client sends it; answers a 503 to each request
/// (or what `start_answering` was given) so a client does not wait.
pub struct Recorder {
    pub addr: String,
    connections: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub fn start() -> Recorder {
        Recorder::start_answering(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    }

    /// A recorder that answers every request with `answer` (a whole HTTP
    /// response), then closes.
    pub fn start_answering(answer: &'static [u8]) -> Recorder {
        let connections = Arc::new(AtomicU64::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, r) = (connections.clone(), received.clone());
        let port = accept_loop(stop.clone(), move |mut c| {
            n.fetch_add(1, Ordering::Relaxed);
            let head = read_head(&mut c);
            r.lock().unwrap().extend_from_slice(&head);
            let _ = c.write_all(answer);
            let _ = c.shutdown(Shutdown::Both);
        });
        Recorder {
            addr: format!("http://127.0.0.1:{port}"),
            connections,
            received,
            stop,
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An HTTP CONNECT proxy: tunnels each `CONNECT host:port` to that address
/// (loopback only) and counts the tunnels.
pub struct ConnectProxy {
    pub addr: String,
    tunnels: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let tunnels = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let t = tunnels.clone();
        let port = accept_loop(stop.clone(), move |mut c| {
            let head = String::from_utf8_lossy(&read_head(&mut c)).into_owned();
            let target = head
                .strip_prefix("CONNECT ")
                .and_then(|r| r.split(' ').next())
                .filter(|t| t.starts_with("127.0.0.1:"))
                .map(str::to_owned);
            let Some(target) = target else {
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
                return;
            };
            let Ok(up) = TcpStream::connect(&target) else {
                let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                return;
            };
            t.fetch_add(1, Ordering::Relaxed);
            let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = c.set_read_timeout(None);
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let mut up = up;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up2, &mut c2);
                let _ = c2.shutdown(Shutdown::Both);
            });
            let _ = std::io::copy(&mut c, &mut up);
            let _ = up.shutdown(Shutdown::Both);
        });
        ConnectProxy {
            addr: format!("http://127.0.0.1:{port}"),
            tunnels,
            stop,
        }
    }

    pub fn tunnels(&self) -> u64 {
        self.tunnels.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers every request with `307 Temporary Redirect` to `target` (the
/// same path appended), as a standby would to its active node.
pub struct Redirector {
    pub addr: String,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Redirector {
    pub fn start(target: &str) -> Redirector {
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, target) = (requests.clone(), target.to_owned());
        let port = accept_loop(stop.clone(), move |mut c| loop {
            let head = String::from_utf8_lossy(&read_head(&mut c)).into_owned();
            let Some(path) = head.split(' ').nth(1).map(str::to_owned) else {
                return;
            };
            // Drain a body so the connection can be reused.
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if c.read_exact(&mut body).is_err() {
                return;
            }
            n.fetch_add(1, Ordering::Relaxed);
            let answer =
                format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}{path}\r\ncontent-length: 0\r\n\r\n");
            if c.write_all(answer.as_bytes()).is_err() {
                return;
            }
        });
        Redirector {
            addr: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What [`FakeVault`] answers instead of OpenBao for a matching path.
#[derive(Clone, Debug)]
pub enum Canned {
    /// This status and JSON (or any) body, with a correct length.
    Body(u16, String),
    /// A 200 whose head promises `len` bytes, then one byte every `every`.
    Drip { len: usize, every: Duration },
    /// A 200 with a body of `len` spaces.
    Huge(usize),
    /// A 307 to `location` (the request's path appended).
    Redirect(String),
    /// This status, with a body that echoes the whole request (head, with
    /// its token, and body), as a misbehaving proxy's error page may: in
    /// Vault's JSON error format (`{"errors": ["...<request>..."]}`) when
    /// `json`, else in an HTML page.
    Echo { status: u16, json: bool },
}

/// An HTTP server in front of a real OpenBao: forwards every request to it
/// unchanged, except those whose path contains a configured fragment,
/// which get a canned answer. For Vault answers the real server cannot be
/// made to give (garbled JSON, wrong types, huge or dripping bodies).
pub struct FakeVault {
    pub addr: String,
    rules: Arc<Mutex<Vec<(String, Canned)>>>,
    stop: Arc<AtomicBool>,
}

impl FakeVault {
    pub fn start(upstream: &str) -> FakeVault {
        let rules: Arc<Mutex<Vec<(String, Canned)>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, upstream) = (rules.clone(), upstream.to_owned());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let port = accept_loop(stop.clone(), move |mut c| loop {
            let head = String::from_utf8_lossy(&read_head(&mut c)).into_owned();
            let mut words = head.split(' ');
            let (Some(method), Some(path)) = (words.next().map(str::to_owned), words.next().map(str::to_owned)) else {
                return;
            };
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; len];
            if c.read_exact(&mut body).is_err() {
                return;
            }
            let canned = r
                .lock()
                .unwrap()
                .iter()
                .find(|(frag, _)| path.contains(frag.as_str()))
                .map(|(_, a)| a.clone());
            let ok = match canned {
                Some(Canned::Body(status, text)) => c
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        )
                        .as_bytes(),
                    )
                    .is_ok(),
                Some(Canned::Huge(n)) => {
                    let _ = c.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes());
                    let chunk = vec![b' '; 64 * 1024];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(chunk.len());
                        if c.write_all(&chunk[..k]).is_err() {
                            break;
                        }
                        left -= k;
                    }
                    false
                }
                Some(Canned::Drip { len, every }) => {
                    let _ = c.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").as_bytes());
                    for _ in 0..len {
                        if c.write_all(b" ").is_err() {
                            break;
                        }
                        std::thread::sleep(every);
                    }
                    false
                }
                Some(Canned::Echo { status, json }) => {
                    let request = format!("{head}{}", String::from_utf8_lossy(&body));
                    let (kind, text) = if json {
                        let errors = [format!("invalid request: {request}"), "permission denied".to_owned()];
                        ("application/json", serde_json::json!({ "errors": errors }).to_string())
                    } else {
                        (
                            "text/html",
                            format!("<html><body><h1>Error</h1><pre>{request}</pre></body></html>"),
                        )
                    };
                    c.write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        )
                        .as_bytes(),
                    )
                    .is_ok()
                }
                Some(Canned::Redirect(to)) => c
                    .write_all(
                        format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {to}{path}\r\ncontent-length: 0\r\n\r\n")
                            .as_bytes(),
                    )
                    .is_ok(),
                None => {
                    let url = format!("{upstream}{path}");
                    let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
                    for h in ["x-vault-token", "x-vault-namespace", "content-type", "x-vault-request"] {
                        if let Some(v) = header(h) {
                            req = req.header(h, v);
                        }
                    }
                    let resp = req.body(body).ok().and_then(|r| agent.run(r).ok());
                    match resp {
                        Some(mut resp) => {
                            let status = resp.status().as_u16();
                            let text = resp.body_mut().read_to_string().unwrap_or_default();
                            c.write_all(
                                format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}", text.len())
                                    .as_bytes(),
                            )
                            .is_ok()
                        }
                        None => false,
                    }
                }
            };
            if !ok {
                let _ = c.shutdown(Shutdown::Both);
                return;
            }
        });
        FakeVault {
            addr: format!("http://127.0.0.1:{port}"),
            rules,
            stop,
        }
    }

    /// Answers requests whose path contains `fragment` with `canned` (the
    /// latest rule for a fragment replaces an earlier one).
    pub fn answer(&self, fragment: &str, canned: Canned) {
        let mut r = self.rules.lock().unwrap();
        r.retain(|(f, _)| f != fragment);
        r.push((fragment.to_owned(), canned));
    }

    /// Forwards everything again.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
