//! The upstream side of the end-to-end suite: etcd and kube-apiserver
//! processes on loopback ports (binaries built by `scripts/e2e.sh
//! --build-only` from their Go modules), an HTTPS client for the API with a
//! client certificate, kubectl and etcdctl, and a decoder for the
//! `EncryptedObject` the apiserver stores in etcd for KMS v2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::{free_port, Pki};

/// etcd elects itself (one member) well within this on a loaded 2-core
/// machine; measured here: about 1 s.
const ETCD_START: Duration = Duration::from_secs(30);
/// kube-apiserver's start to `/readyz` ok. Measured here: 6 to 12 s with
/// both cores busy; its post-start hooks (RBAC bootstrap, priority and
/// fairness config) dominate.
pub const APISERVER_START: Duration = Duration::from_secs(120);
/// One API call from the test client. The apiserver's own default request
/// timeout is 60 s; a list of a few thousand Secrets takes well under 10 s.
const API_CALL: Duration = Duration::from_secs(60);
/// A kubectl or etcdctl run (a `get -A -o json | replace` of 2,000 Secrets
/// included).
const TOOL_RUN: Duration = Duration::from_secs(300);
/// How long a stopped process gets after SIGTERM before SIGKILL; the
/// apiserver's graceful shutdown drains within a few seconds when idle.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The encryption prefix of a KMS v2 value stored by provider `name`.
pub fn v2_prefix(name: &str) -> String {
    format!("k8s:enc:kms:v2:{name}:")
}

/// The encryption prefix of a KMS v1 value stored by provider `name`.
pub fn v1_prefix(name: &str) -> String {
    format!("k8s:enc:kms:v1:{name}:")
}

/// A binary built by `scripts/e2e.sh --build-only`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("E2E_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/bin"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/e2e.sh (or scripts/e2e.sh --build-only)",
        p.display()
    );
    p
}

/// The repository's `deploy/` file `rel`.
pub fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)
}

/// Runs `cmd` to completion with `stdin` fed to it; after `bound` it is
/// killed with everything it started (its own process group).
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, bound: Duration) -> Output {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .process_group(0)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(bound).is_err() {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        panic!("{shown} did not finish within {bound:?}");
    }
    if let Some(f) = feeder {
        let _ = f.join();
    }
    waiter.join().unwrap().unwrap()
}

/// The stdout of a finished tool run; panics with its stderr unless it
/// exited 0. `what` names the run in the message.
pub fn stdout_ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-member etcd on loopback ports, data in the test's directory.
pub struct Etcd {
    pub url: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let log = dir.join(format!("etcd-{client}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin("etcd"))
            .args([
                "--name=e2e",
                &format!("--data-dir={}", dir.join(format!("etcd-{client}")).display()),
                &format!("--listen-client-urls={url}"),
                &format!("--advertise-client-urls={url}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=e2e=http://127.0.0.1:{peer}"),
                // No metrics or pprof listener beyond the client URL.
                "--listen-metrics-urls=",
                "--log-level=warn",
            ])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start etcd");
        let mut e = Etcd {
            url,
            child: Some(child),
            log,
        };
        let start = Instant::now();
        loop {
            let out = e.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                break;
            }
            if let Some(st) = e.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("etcd exited with {st}:\n{}", read(&e.log));
            }
            assert!(start.elapsed() < ETCD_START, "etcd not healthy after {ETCD_START:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        e
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("etcdctl"));
        c.arg(format!("--endpoints={}", self.url))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=60s")
            .args(args)
            .env("ETCDCTL_API", "3");
        run_bounded(c, None, TOOL_RUN)
    }

    /// Every key under `prefix` with its raw value, as etcd stores it.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let out = self.etcdctl(&["get", "--prefix", prefix, "-w", "json"]);
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
        let b64 = base64::engine::general_purpose::STANDARD;
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        let k = b64.decode(kv["key"].as_str().unwrap()).unwrap();
                        let val = b64.decode(kv["value"].as_str().unwrap_or("")).unwrap();
                        (String::from_utf8(k).unwrap(), val)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The raw stored value of Secret `ns/name`.
    pub fn secret_raw(&self, ns: &str, name: &str) -> Vec<u8> {
        let key = format!("/registry/secrets/{ns}/{name}");
        let kvs = self.get_prefix(&key);
        let (_, v) = kvs
            .into_iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} not in etcd"));
        v
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), tail(&read(&self.log), 30));
        }
    }
}

/// What a kube-apiserver is started with.
pub struct ApiserverOpts {
    /// `--encryption-provider-config`, if any.
    pub encryption_config: Option<PathBuf>,
    /// `--feature-gates`, e.g. `KMSv1=true`.
    pub feature_gates: Option<String>,
}

/// A kube-apiserver on a loopback port, backed by an [`Etcd`].
pub struct Apiserver {
    pub api: Api,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    kubeconfig: PathBuf,
    etcd_url: String,
    starts: u32,
}

impl Apiserver {
    /// Starts kube-apiserver and waits (bounded) until `/readyz` is ok.
    pub fn start(dir: &Path, etcd: &Etcd, pki: &Pki, opts: &ApiserverOpts) -> Apiserver {
        let mut a = Apiserver::spawn(dir, etcd, pki, opts);
        a.wait_ready(APISERVER_START);
        a
    }

    /// Starts kube-apiserver without waiting for it.
    pub fn spawn(dir: &Path, etcd: &Etcd, pki: &Pki, opts: &ApiserverOpts) -> Apiserver {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let sa_key = dir.join("sa.key");
        if !sa_key.exists() {
            let args = [
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.push(sa_key.display().to_string());
            crate::harness::openssl(&args);
            let pubkey = ["pkey", "-pubout", "-in", &sa_key.display().to_string(), "-out"];
            let mut pubkey: Vec<String> = pubkey.iter().map(|s| s.to_string()).collect();
            pubkey.push(dir.join("sa.pub").display().to_string());
            crate::harness::openssl(&pubkey);
        }
        let p = |x: &Path| x.display().to_string();
        let mut args = vec![
            format!("--etcd-servers={}", etcd.url),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The default reconciler refuses a loopback advertise address;
            // one apiserver needs no `kubernetes` Service endpoints here.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", p(&dir.join("apiserver-certs"))),
            // Serving cert with IP:127.0.0.1, from the test CA, so every
            // client verifies it.
            format!("--tls-cert-file={}", p(&pki.server_cert)),
            format!("--tls-private-key-file={}", p(&pki.server_key)),
            format!("--client-ca-file={}", p(&pki.ca)),
            "--authorization-mode=AlwaysAllow".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p(&dir.join("sa.pub"))),
            format!("--service-account-signing-key-file={}", p(&sa_key)),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--profiling=false".into(),
            "--v=2".into(),
        ];
        if let Some(c) = &opts.encryption_config {
            args.push(format!("--encryption-provider-config={}", p(c)));
        }
        if let Some(g) = &opts.feature_gates {
            args.push(format!("--feature-gates={g}"));
        }
        let kubeconfig = dir.join(format!("kubeconfig-{port}"));
        std::fs::write(
            &kubeconfig,
            serde_json::to_string_pretty(&json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e2e", "cluster": {
                    "server": url, "certificate-authority": p(&pki.ca)}}],
                "users": [{"name": "e2e", "user": {
                    "client-certificate": p(&pki.client_cert), "client-key": p(&pki.client_key)}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
                "current-context": "e2e",
            }))
            .unwrap(),
        )
        .unwrap();
        let mut a = Apiserver {
            api: Api::new(&url, pki),
            args,
            dir: dir.to_owned(),
            child: None,
            log: dir.join(format!("apiserver-{port}.log")),
            kubeconfig,
            etcd_url: etcd.url.clone(),
            starts: 0,
        };
        a.launch();
        a
    }

    fn launch(&mut self) {
        self.starts += 1;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin("kube-apiserver"))
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start kube-apiserver");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200; panics (with the log) if the
    /// process exits or `bound` passes.
    pub fn wait_ready(&mut self, bound: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("kube-apiserver exited with {st}:\n{}", tail(&read(&self.log), 60));
            }
            let (s, _) = self.api.get_text("/readyz");
            if s == 200 {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < bound,
                "kube-apiserver not ready after {bound:?}; /readyz?verbose: {}",
                self.api.get_text("/readyz?verbose").1
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the apiserver (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Stops and starts the same apiserver again, without waiting.
    pub fn restart_no_wait(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Runs kubectl against this apiserver.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new(bin("kubectl"));
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env("HOME", &self.dir);
        run_bounded(c, stdin, TOOL_RUN)
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        stdout_ok(self.kubectl(args, stdin), &format!("kubectl {}", args.join(" ")))
    }

    /// Runs `sh -c script` as an operator would type it: kubectl, etcdctl
    /// (and helm) on PATH, KUBECONFIG and ETCDCTL_* pointing at this
    /// control plane. Panics unless it exits 0; returns its stdout.
    pub fn shell_ok(&self, script: &str) -> String {
        let bins = bin("kubectl").parent().unwrap().to_owned();
        let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap_or_default());
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .current_dir(&self.dir)
            .env("PATH", path)
            .env("HOME", &self.dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", &self.etcd_url);
        let out = run_bounded(c, None, TOOL_RUN);
        assert!(
            out.status.success(),
            "`{script}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// How many times this apiserver process has been launched.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- {} (last lines) ----\n{}",
                self.log.display(),
                tail(&read(&self.log), 60)
            );
        }
    }
}

/// SIGTERM by pid, then SIGKILL if it has not exited within [`STOP_GRACE`].
pub fn stop_child(child: &mut Option<Child>) {
    let Some(mut c) = child.take() else { return };
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    let start = Instant::now();
    while start.elapsed() < STOP_GRACE {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An HTTPS client for the Kubernetes API that verifies the serving cert
/// against the test CA and authenticates with the test client cert.
pub struct Api {
    pub base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: &str, pki: &Pki) -> Api {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
        let cert = Certificate::from_pem(&std::fs::read(&pki.client_cert).unwrap()).unwrap();
        let key = PrivateKey::from_pem(&std::fs::read(&pki.client_key).unwrap()).unwrap();
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            // No proxy from the environment: everything here is loopback.
            .proxy(None)
            .timeout_global(Some(API_CALL))
            .build()
            .into();
        Api {
            base: base.to_owned(),
            agent,
        }
    }

    /// GET `path`; returns the status and body text (status 0 when the
    /// apiserver could not be reached, with the error as the text).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        match self.agent.get(format!("{}{path}", self.base)).call() {
            Ok(mut r) => {
                let s = r.status().as_u16();
                let t = r
                    .body_mut()
                    .with_config()
                    .limit(256 << 20)
                    .read_to_string()
                    .unwrap_or_default();
                (s, t)
            }
            Err(e) => (0, e.to_string()),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (s, t) = self.get_text(path);
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    pub fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let b = body.to_string();
        let r = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b.as_bytes()),
            "PUT" => self
                .agent
                .put(&url)
                .header("Content-Type", "application/json")
                .send(b.as_bytes()),
            other => panic!("method {other}"),
        };
        match r {
            Ok(mut r) => {
                let s = r.status().as_u16();
                let t = r.body_mut().read_to_string().unwrap_or_default();
                (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// Creates Secret `ns/name` holding `data`; returns the status and body.
    pub fn create_secret(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) -> (u16, Value) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(b64.encode(v))))
            .collect();
        self.send(
            "POST",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            &json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns}, "data": data}),
        )
    }

    /// Creates Secret `ns/name`; panics unless the apiserver answers 201.
    pub fn create_secret_ok(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
        let (s, v) = self.create_secret(ns, name, data);
        assert_eq!(s, 201, "create secret {ns}/{name}: {v}");
    }

    /// The decoded value of key `key` of Secret `ns/name`.
    pub fn secret_value(&self, ns: &str, name: &str, key: &str) -> Vec<u8> {
        let (s, v) = self.get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"));
        assert_eq!(s, 200, "get secret {ns}/{name}: {v}");
        let b64 = v["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{ns}/{name} has no {key}: {v}"));
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }

    pub fn create_namespace(&self, ns: &str) {
        let (s, v) = self.send(
            "POST",
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        assert_eq!(s, 201, "create namespace {ns}: {v}");
    }
}

/// The KMS v2 `EncryptedObject` stored after the `k8s:enc:kms:v2:<name>:`
/// prefix (k8s.io/apiserver .../envelope/kmsv2/v2/api.proto).
#[derive(Debug, Default)]
pub struct EncryptedObject {
    /// Field 1: the object, sealed with a key derived from the seed.
    pub encrypted_data: Vec<u8>,
    /// Field 2: the key_id the plugin returned with the Encrypt.
    pub key_id: String,
    /// Field 3: the DEK seed as the plugin encrypted it.
    pub encrypted_dek_source: Vec<u8>,
    /// Field 4: annotations (map entries), counted.
    pub annotations: usize,
    /// Field 5: `EncryptedDEKSourceType` (1 = HKDF_SHA256_XNONCE_AES_GCM_SEED).
    pub encrypted_dek_source_type: u64,
}

/// Decodes a stored v2 value: checks the prefix, then the protobuf fields.
pub fn decode_v2(raw: &[u8], provider: &str) -> EncryptedObject {
    let prefix = v2_prefix(provider);
    let body = raw
        .strip_prefix(prefix.as_bytes())
        .unwrap_or_else(|| panic!("stored value does not start with {prefix}: {:?}", lossy_head(raw)));
    let mut o = EncryptedObject::default();
    let mut r = Wire(body);
    while !r.0.is_empty() {
        let tag = r.varint();
        match (tag >> 3, tag & 7) {
            (1, 2) => o.encrypted_data = r.bytes().to_vec(),
            (2, 2) => o.key_id = String::from_utf8(r.bytes().to_vec()).expect("key_id utf-8"),
            (3, 2) => o.encrypted_dek_source = r.bytes().to_vec(),
            (4, 2) => {
                r.bytes();
                o.annotations += 1;
            }
            (5, 0) => o.encrypted_dek_source_type = r.varint(),
            (f, w) => panic!("unexpected field {f} (wire type {w}) in EncryptedObject"),
        }
    }
    o
}

fn lossy_head(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..raw.len().min(40)]).into_owned()
}

/// A minimal protobuf wire reader (varints and length-delimited fields).
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().expect("truncated varint");
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint longer than 10 bytes")
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = usize::try_from(self.varint()).unwrap();
        assert!(n <= self.0.len(), "field length {n} past the end");
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// Every form in which `secret` could sit in a stored value: raw, base64
/// (standard and URL-safe, with and without padding) and hex.
pub fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        secret.to_vec(),
        STANDARD.encode(secret).into_bytes(),
        STANDARD_NO_PAD.encode(secret).into_bytes(),
        URL_SAFE.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
    ]
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn decode_v2_reads_every_field_and_refuses_a_foreign_prefix() {
    // key_id "k", data "d", source "s", one annotation, type 1.
    let mut raw = v2_prefix("p").into_bytes();
    raw.extend_from_slice(&[0x0a, 1, b'd', 0x12, 1, b'k', 0x1a, 1, b's', 0x22, 2, 0x0a, 0, 0x28, 1]);
    let o = decode_v2(&raw, "p");
    assert_eq!(
        (
            o.encrypted_data,
            o.key_id.as_str(),
            o.encrypted_dek_source,
            o.annotations,
            o.encrypted_dek_source_type
        ),
        (b"d".to_vec(), "k", b"s".to_vec(), 1, 1)
    );
    assert!(std::panic::catch_unwind(|| decode_v2(&raw, "other")).is_err());
}

#[test]
fn run_bounded_kills_what_the_command_started_when_time_runs_out() {
    let dir = crate::harness::TempDir::new("run-bounded");
    let pidfile = dir.path().join("child.pid");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_bounded(cmd, None, Duration::from_secs(1))
    }));
    assert!(r.is_err(), "a command past its bound must fail the check");
    let pid = read(&pidfile).trim().to_owned();
    assert!(!pid.is_empty());
    // Gone, or a zombie waiting for init to reap it: not running.
    let start = Instant::now();
    loop {
        let stat = read(Path::new(&format!("/proc/{pid}/stat")));
        let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
        if matches!(state, None | Some("Z")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sleep {pid} still running: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
