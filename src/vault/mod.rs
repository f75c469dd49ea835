//! The only code that speaks HTTP to Vault: one pooled, keep-alive ureq
//! agent; every call bounded by a deadline; transit encrypt and decrypt; and
//! an error type whose variants say what happened and whose messages name
//! the address, path and HTTP status but never a token or a plaintext.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::auth::LoginRequest;
use crate::limits::MAX_VAULT_RESPONSE;
use crate::limits::{VAULT_MAX_ERROR_TEXT, VAULT_MAX_LOCATION, VAULT_MIN_ATTEMPT, VAULT_ROUND_PAUSE};
use crate::secret::Secret;
use crate::wire::{KeyName, VaultCiphertext};

mod settings;
mod tls;

pub use settings::{parse_addr, Settings};

/// A failed Vault call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VaultError {
    /// TCP connect, DNS, TLS or I/O failed before an HTTP answer arrived.
    Unreachable { addr: String, cause: String },
    /// No complete answer within the call's budget.
    Timeout { addr: String, after: Duration },
    /// Vault answered with a non-2xx status.
    Status {
        addr: String,
        op: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    /// Vault answered 2xx with a body we cannot use.
    BadResponse { addr: String, path: String, what: String },
    /// A credential file could not be used for a login (no call was made).
    Credentials(String),
}

/// The kind of failure, for mapping to gRPC codes and for log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaultErrorClass {
    /// Vault down, sealed, overloaded, slow or a standby: retry later.
    Unavailable,
    /// 401/403: token or policy problem.
    Denied,
    /// The key or the transit mount does not exist.
    NotFound,
    /// Vault refused the input (tampered, wrong key, malformed).
    Rejected,
    /// Anything else: a Vault or plugin bug.
    Internal,
}

impl VaultErrorClass {
    /// Short name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            VaultErrorClass::Unavailable => "vault_unavailable",
            VaultErrorClass::Denied => "vault_denied",
            VaultErrorClass::NotFound => "vault_not_found",
            VaultErrorClass::Rejected => "vault_rejected",
            VaultErrorClass::Internal => "vault_internal",
        }
    }
}

impl VaultError {
    pub fn class_name(&self) -> &'static str {
        self.class().name()
    }

    pub fn class(&self) -> VaultErrorClass {
        match self {
            VaultError::Unreachable { .. } | VaultError::Timeout { .. } => VaultErrorClass::Unavailable,
            VaultError::BadResponse { .. } => VaultErrorClass::Internal,
            VaultError::Credentials(_) => VaultErrorClass::Denied,
            VaultError::Status { status, message, .. } => match *status {
                401 | 403 => VaultErrorClass::Denied,
                404 => VaultErrorClass::NotFound,
                400 if message.contains("not found") => VaultErrorClass::NotFound,
                400 | 422 => VaultErrorClass::Rejected,
                // 307 (standby without forwarding), 412, 429 (rate limit),
                // 472/473 (DR/perf standby), 5xx incl. 503 (sealed).
                307 | 412 | 429 | 472 | 473 | 500..=599 => VaultErrorClass::Unavailable,
                _ => VaultErrorClass::Internal,
            },
        }
    }
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::Unreachable { addr, cause } => write!(f, "vault at {addr} unreachable: {cause}"),
            VaultError::Timeout { addr, after } => write!(f, "vault at {addr} did not answer within {after:?}"),
            VaultError::Status {
                addr,
                op,
                path,
                status,
                message,
            } => {
                write!(f, "vault at {addr} answered HTTP {status} to {op} {path}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                match (*status, self.class()) {
                    (503, _) => write!(f, " (vault is sealed or in maintenance)"),
                    (429, _) => write!(f, " (rate limited or a standby node)"),
                    (307, _) => write!(f, " (a standby redirected us somewhere unusable; list the active node in --vault-addr)"),
                    (_, _) if *op == "login" => write!(f, " (check the credentials, the role and the auth mount)"),
                    (_, VaultErrorClass::Denied) if op.ends_with("-self") => write!(f, " (the token is invalid, expired or revoked, or lacks Vault's default policy, which allows {path})"),
                    (_, VaultErrorClass::Denied) if *op == "encrypt" => write!(f, " (the token is invalid or expired, or its policy must grant \"update\" on {path}; also check that the key exists, as trousseau never creates keys)"),
                    (_, VaultErrorClass::Denied) => write!(f, " (the token is invalid or expired, or its policy must grant \"update\" on {path})"),
                    (_, VaultErrorClass::NotFound) => write!(f, " (check the transit mount and key name, and that the key exists)"),
                    _ => Ok(()),
                }
            }
            VaultError::BadResponse { addr, path, what } => {
                write!(f, "vault at {addr} sent an unusable answer to {path}: {what}")
            }
            VaultError::Credentials(m) => write!(f, "cannot log in: {m}"),
        }
    }
}

/// A token's lease as Vault reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Time left; zero for a token that never expires (root).
    pub ttl: Duration,
    pub renewable: bool,
    /// The lease the token was issued with: what a renewal asks for.
    pub granted: Duration,
}

/// A new token from a login, with its lease.
pub struct LoginToken {
    pub token: Secret,
    pub lease: Lease,
}

/// A node's `sys/health` answer.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    pub standby: bool,
    pub version: String,
}

/// What `read_key` learns about a transit key.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub kind: String,
    pub latest_version: u64,
    pub min_decryption_version: u64,
    pub exportable: bool,
    pub deletion_allowed: bool,
}

/// One HTTP call to Vault.
struct Call<'a> {
    op: &'static str,
    post: bool,
    path: &'a str,
    body: Option<&'a str>,
    token: Option<&'a Secret>,
}

/// One configured Vault address.
struct Node {
    /// As configured, for messages and for matching redirect targets.
    addr: String,
    /// What request URLs start with (the host is the TLS server name when
    /// one is set).
    base: String,
    agent: ureq::Agent,
}

/// A blocking Vault client over one or more nodes. Cheap to clone and share
/// across threads: each agent's pool is internally synchronised and no lock
/// is held here.
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    /// For a standby's 307 to an address that is not a configured node.
    redirect_agent: ureq::Agent,
    /// Index of the node that answered last: tried first.
    preferred: AtomicUsize,
    namespace: Option<String>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<&str> = self.inner.nodes.iter().map(|n| n.addr.as_str()).collect();
        f.debug_struct("VaultClient")
            .field("addrs", &addrs)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl VaultClient {
    /// Builds one agent per node: TLS roots, client certificate, timeouts,
    /// pool. Fails on an unreadable CA, certificate or key.
    pub fn new(cfg: &Settings) -> Result<VaultClient, String> {
        let tls = tls::tls_config(cfg)?;
        let mut nodes = Vec::with_capacity(cfg.addrs.len());
        for addr in &cfg.addrs {
            let (base, agent) = tls::node_agent(cfg, &tls, addr)?;
            nodes.push(Node {
                addr: addr.clone(),
                base,
                agent,
            });
        }
        if nodes.is_empty() {
            return Err("no Vault address configured".into());
        }
        Ok(VaultClient {
            inner: Arc::new(Inner {
                nodes,
                redirect_agent: tls::plain_agent(cfg, &tls),
                preferred: AtomicUsize::new(0),
                namespace: cfg.namespace.clone(),
            }),
        })
    }

    /// The address of the node requests go to first.
    pub fn preferred_addr(&self) -> &str {
        let i = self.inner.preferred.load(Ordering::Relaxed);
        self.inner.nodes.get(i).map(|n| n.addr.as_str()).unwrap_or_default()
    }

    /// `POST /v1/<mount>/encrypt/<key>`; returns Vault's `vault:vN:` ciphertext.
    pub fn encrypt(
        &self,
        token: &Secret,
        key: &KeyName,
        plaintext: &[u8],
        deadline: Instant,
    ) -> Result<VaultCiphertext, VaultError> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
        let body = serde_json::json!({ "plaintext": b64 }).to_string();
        let (addr, path, ct) = self.transit("encrypt", token, key, &body, "ciphertext", deadline)?;
        VaultCiphertext::parse(&ct, "vault's ciphertext").map_err(|e| bad(&addr, &path, &e.to_string()))
    }

    /// `POST /v1/<mount>/decrypt/<key>`; returns the plaintext bytes exactly
    /// as one transit call returned them.
    pub fn decrypt(
        &self,
        token: &Secret,
        key: &KeyName,
        ct: &VaultCiphertext,
        deadline: Instant,
    ) -> Result<Vec<u8>, VaultError> {
        let body = serde_json::json!({ "ciphertext": ct.as_str() }).to_string();
        // Vault omits `plaintext` for an empty plaintext; we never encrypt one.
        let (addr, path, pt) = self.transit("decrypt", token, key, &body, "plaintext", deadline)?;
        base64::engine::general_purpose::STANDARD
            .decode(pt)
            .map_err(|_| bad(&addr, &path, "data.plaintext is not base64"))
    }

    /// `POST /v1/<mount>/<op>/<key>` with `body`; returns the answering
    /// node, the path (both for error messages) and `data.<field>`.
    fn transit(
        &self,
        op: &'static str,
        token: &Secret,
        key: &KeyName,
        body: &str,
        field: &str,
        deadline: Instant,
    ) -> Result<(String, String, String), VaultError> {
        let path = format!("{}/{op}/{}", key.mount, key.key);
        let c = Call {
            op,
            post: true,
            path: &path,
            body: Some(body),
            token: Some(token),
        };
        let (addr, v) = self.call(&c, deadline)?;
        let value = section(&v, "data")
            .and_then(|d| d.get(field))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| bad(&addr, &path, &format!("no data.{field}")))?;
        Ok((addr, path, value))
    }

    /// `GET /v1/auth/token/lookup-self`: is the token valid, and its lease.
    pub fn lookup_self(&self, token: &Secret, deadline: Instant) -> Result<Lease, VaultError> {
        let path = "auth/token/lookup-self";
        let (addr, v) = self.call(
            &Call {
                op: "lookup-self",
                post: false,
                path,
                body: None,
                token: Some(token),
            },
            deadline,
        )?;
        let d = section(&v, "data").ok_or_else(|| bad(&addr, path, "no data object"))?;
        let secs = |k: &str| d.get(k).and_then(|t| t.as_u64()).map(Duration::from_secs);
        let ttl = secs("ttl").unwrap_or(Duration::ZERO);
        Ok(Lease {
            ttl,
            renewable: d.get("renewable").and_then(|r| r.as_bool()).unwrap_or(false),
            granted: secs("creation_ttl").filter(|d| !d.is_zero()).unwrap_or(ttl),
        })
    }

    /// `POST /v1/auth/token/renew-self` asking for `increment` more.
    pub fn renew_self(&self, token: &Secret, increment: Duration, deadline: Instant) -> Result<Lease, VaultError> {
        let path = "auth/token/renew-self";
        let body = serde_json::json!({ "increment": format!("{}s", increment.as_secs()) }).to_string();
        let (addr, v) = self.call(
            &Call {
                op: "renew-self",
                post: true,
                path,
                body: Some(&body),
                token: Some(token),
            },
            deadline,
        )?;
        lease_of(&v).ok_or_else(|| bad(&addr, path, "no auth.lease_duration"))
    }

    /// `POST /v1/auth/<mount>/login`; returns the new token and its lease.
    pub fn login(&self, req: &LoginRequest, deadline: Instant) -> Result<LoginToken, VaultError> {
        let (addr, v) = self.call(
            &Call {
                op: "login",
                post: true,
                path: &req.path,
                body: Some(req.body.expose()),
                token: None,
            },
            deadline,
        )?;
        let token = section(&v, "auth")
            .and_then(|a| a.get("client_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad(&addr, &req.path, "no auth.client_token"))?;
        let lease = lease_of(&v).ok_or_else(|| bad(&addr, &req.path, "no auth.lease_duration"))?;
        Ok(LoginToken {
            token: Secret::new(token.to_owned()),
            lease,
        })
    }

    /// `GET /v1/sys/health` of every node, without a token, for `check`:
    /// each node's answer (`standbyok` makes a standby answer 200).
    pub fn health_of_each(&self, deadline: Instant) -> Vec<(String, Result<NodeHealth, VaultError>)> {
        let c = Call {
            op: "health",
            post: false,
            path: "sys/health?standbyok=true&perfstandbyok=true",
            body: None,
            token: None,
        };
        self.inner
            .nodes
            .iter()
            .map(|node| {
                let r = self.attempt(node, &c, deadline).map(|v| NodeHealth {
                    standby: v.get("standby").and_then(|b| b.as_bool()).unwrap_or(false),
                    version: v.get("version").and_then(|s| s.as_str()).unwrap_or("?").to_owned(),
                });
                (node.addr.clone(), r)
            })
            .collect()
    }

    /// `GET /v1/<mount>/keys/<key>`: the key's type and versions. Needs
    /// `read` on that path, which the plugin itself never uses.
    pub fn read_key(&self, token: &Secret, key: &KeyName, deadline: Instant) -> Result<KeyInfo, VaultError> {
        let path = format!("{}/keys/{}", key.mount, key.key);
        let c = Call {
            op: "read-key",
            post: false,
            path: &path,
            body: None,
            token: Some(token),
        };
        let (addr, v) = self.call(&c, deadline)?;
        let d = section(&v, "data").ok_or_else(|| bad(&addr, &path, "no data object"))?;
        let num = |k: &str| d.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
        let flag = |k: &str| d.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
        Ok(KeyInfo {
            kind: d.get("type").and_then(|t| t.as_str()).unwrap_or("?").to_owned(),
            latest_version: num("latest_version"),
            min_decryption_version: num("min_decryption_version"),
            exportable: flag("exportable"),
            deletion_allowed: flag("deletion_allowed"),
        })
    }

    /// Sends one call, trying nodes in order of preference within the
    /// deadline. A node that is down, slow, sealed or failing (5xx, 429)
    /// hands over to the next; each untried node keeps a fair share of the
    /// time left. When every node of a cluster failed, another pass starts
    /// after [`VAULT_ROUND_PAUSE`] while time is left, so a request that meets an
    /// election succeeds once a new active node serves. Any other answer,
    /// good or bad, is final. Returns the answering node's address and the
    /// body.
    fn call(&self, c: &Call<'_>, deadline: Instant) -> Result<(String, serde_json::Value), VaultError> {
        let nodes = &self.inner.nodes;
        let n = nodes.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for pass in 0.. {
            for i in 0..n {
                let idx = (first + i) % n;
                let Some(node) = nodes.get(idx) else { break };
                let left = deadline.saturating_duration_since(Instant::now());
                if left < VAULT_MIN_ATTEMPT && last.is_some() {
                    break;
                }
                let share = u32::try_from(n - i).unwrap_or(1).max(1);
                match self.attempt(node, c, Instant::now() + left / share) {
                    Ok(v) => {
                        if idx != first {
                            self.inner.preferred.store(idx, Ordering::Relaxed);
                            log::info!("vault: now preferring {} (the node that answers)", node.addr);
                        }
                        return Ok((node.addr.clone(), v));
                    }
                    Err(e) if fails_over(&e) => {
                        log::debug!("vault: {} failed {} ({})", node.addr, c.op, e.class_name());
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let again = if n == 1 {
                // A single node is retried once, at once, when a pooled
                // keep-alive connection turned out dead (it restarted).
                pass == 0 && matches!(last, Some(VaultError::Unreachable { .. })) && left >= VAULT_MIN_ATTEMPT
            } else {
                left >= VAULT_ROUND_PAUSE + VAULT_MIN_ATTEMPT
            };
            if !again {
                break;
            }
            if n > 1 {
                log::debug!(
                    "vault: no node could serve {}; next pass in {VAULT_ROUND_PAUSE:?}",
                    c.op
                );
                std::thread::sleep(VAULT_ROUND_PAUSE);
            }
        }
        Err(last.unwrap_or_else(|| VaultError::Timeout {
            addr: self.preferred_addr().to_owned(),
            after: Duration::ZERO,
        }))
    }

    /// One node: one request, and one hop more if a standby answers 307.
    fn attempt(&self, node: &Node, c: &Call<'_>, deadline: Instant) -> Result<serde_json::Value, VaultError> {
        let url = format!("{}/v1/{}", node.base, c.path);
        match self.send(&node.agent, &node.addr, &url, c, deadline) {
            Err(Redirect::To(location)) => {
                let (agent, addr, url) = self
                    .redirect_target(node, &location)
                    .ok_or_else(|| VaultError::Status {
                        addr: node.addr.clone(),
                        op: c.op,
                        path: c.path.to_owned(),
                        status: 307,
                        message: "redirect to an unusable location".into(),
                    })?;
                log::debug!("vault: {} redirected {} to {addr}", node.addr, c.op);
                self.send(agent, &addr, &url, c, deadline).map_err(|r| match r {
                    Redirect::To(_) => VaultError::Status {
                        addr,
                        op: c.op,
                        path: c.path.to_owned(),
                        status: 307,
                        message: "redirected twice".into(),
                    },
                    Redirect::Failed(e) => e,
                })
            }
            Err(Redirect::Failed(e)) => Err(e),
            Ok(v) => Ok(v),
        }
    }

    /// Where a 307 points: a configured node (its agent, so a server name
    /// override still applies) or another address of the same scheme. An
    /// https node is never redirected to plain http.
    fn redirect_target<'s>(&'s self, from: &Node, location: &str) -> Option<(&'s ureq::Agent, String, String)> {
        let (scheme, rest) = location.split_once("://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let base = format!("{scheme}://{authority}");
        let from_scheme = from.addr.split("://").next().unwrap_or("");
        if parse_addr(&base).is_err() || (from_scheme == "https" && scheme != "https") {
            return None;
        }
        let path = path.strip_prefix("v1/")?;
        match self.inner.nodes.iter().find(|n| n.addr == base) {
            Some(n) => Some((&n.agent, n.addr.clone(), format!("{}/v1/{path}", n.base))),
            None => Some((&self.inner.redirect_agent, base.clone(), format!("{base}/v1/{path}"))),
        }
    }

    fn send(
        &self,
        agent: &ureq::Agent,
        addr: &str,
        url: &str,
        c: &Call<'_>,
        deadline: Instant,
    ) -> Result<serde_json::Value, Redirect> {
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(Redirect::Failed(VaultError::Timeout {
                addr: addr.to_owned(),
                after: Duration::ZERO,
            }));
        }
        let ns = self.inner.namespace.as_deref();
        let started = Instant::now();
        let sent = if c.post {
            let req = headers(agent.post(url), c.token, ns).header("Content-Type", "application/json");
            req.config()
                .timeout_global(Some(budget))
                .build()
                .send(c.body.unwrap_or("{}").as_bytes())
        } else {
            headers(agent.get(url), c.token, ns)
                .config()
                .timeout_global(Some(budget))
                .build()
                .call()
        };
        let record = |status| crate::metrics::metrics().vault_call(c.op, status, started.elapsed());
        let mut resp = sent.map_err(|e| {
            record(None);
            Redirect::Failed(transport_error(addr, e, budget))
        })?;
        let status = resp.status().as_u16();
        if status == 307 {
            if let Some(loc) = resp.headers().get("location").and_then(|l| l.to_str().ok()) {
                if loc.len() <= VAULT_MAX_LOCATION {
                    record(Some(status));
                    return Err(Redirect::To(loc.to_owned()));
                }
            }
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_VAULT_RESPONSE)
            .read_to_string()
            .map_err(|e| {
                record(None);
                Redirect::Failed(transport_error(addr, e, budget))
            })?;
        record(Some(status));
        if !(200..300).contains(&status) {
            return Err(Redirect::Failed(VaultError::Status {
                addr: addr.to_owned(),
                op: c.op,
                path: c.path.to_owned(),
                status,
                message: error_text(&text),
            }));
        }
        serde_json::from_str(&text).map_err(|_| Redirect::Failed(bad(addr, c.path, "body is not JSON")))
    }
}

/// Token and namespace headers; `X-Vault-Request` as Vault's own CLI sends.
fn headers<B>(mut req: ureq::RequestBuilder<B>, token: Option<&Secret>, ns: Option<&str>) -> ureq::RequestBuilder<B> {
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t.expose());
    }
    if let Some(ns) = ns {
        req = req.header("X-Vault-Namespace", ns);
    }
    req.header("X-Vault-Request", "true")
}

/// A 307's target, or the call's outcome.
enum Redirect {
    To(String),
    Failed(VaultError),
}

/// Errors that say "this node cannot serve now", not "this request is wrong".
fn fails_over(e: &VaultError) -> bool {
    e.class() == VaultErrorClass::Unavailable
}

fn section<'v>(v: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Map<String, serde_json::Value>> {
    v.get(name).and_then(|d| d.as_object())
}

fn lease_of(v: &serde_json::Value) -> Option<Lease> {
    let a = section(v, "auth")?;
    let ttl = Duration::from_secs(a.get("lease_duration")?.as_u64()?);
    Some(Lease {
        ttl,
        renewable: a.get("renewable").and_then(|r| r.as_bool()).unwrap_or(false),
        granted: ttl,
    })
}

fn bad(addr: &str, path: &str, what: &str) -> VaultError {
    VaultError::BadResponse {
        addr: addr.to_owned(),
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

fn transport_error(addr: &str, e: ureq::Error, budget: Duration) -> VaultError {
    let addr = addr.to_owned();
    match e {
        ureq::Error::Timeout(_) => VaultError::Timeout { addr, after: budget },
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => VaultError::Timeout { addr, after: budget },
        ureq::Error::BodyExceedsLimit(n) => VaultError::BadResponse {
            addr,
            path: String::new(),
            what: format!("body larger than {n} bytes"),
        },
        // rustls failures arrive as ureq::Error::Rustls, ::Tls or wrapped in ::Io.
        e if is_tls_failure(&e) => VaultError::Unreachable {
            addr,
            cause: format!(
                "TLS handshake failed: {e} (if Vault's certificate is signed by a private CA, \
                 point --vault-cacert or VAULT_CACERT at that CA's PEM file; if it names another \
                 host, set --vault-tls-server-name)"
            ),
        },
        other => VaultError::Unreachable {
            addr,
            cause: other.to_string(),
        },
    }
}

fn is_tls_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => true,
        ureq::Error::Io(io) => {
            let m = io.to_string().to_ascii_lowercase();
            m.contains("certificate") || m.contains("handshake") || m.contains("tls")
        }
        _ => false,
    }
}

/// Vault's `{"errors": [...]}` joined, shortened; raw text if not JSON.
fn error_text(body: &str) -> String {
    let joined = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => v
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; "))
            .unwrap_or_default(),
        Err(_) => body.trim().to_owned(),
    };
    let one_line: String = joined.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let one_line = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(VAULT_MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}...", one_line.get(..i).unwrap_or_default()),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, msg: &str) -> VaultError {
        VaultError::Status {
            addr: "http://v:8200".into(),
            op: "encrypt",
            path: "transit/encrypt/k".into(),
            status: code,
            message: msg.into(),
        }
    }

    #[test]
    fn classes() {
        assert_eq!(status(503, "Vault is sealed").class(), VaultErrorClass::Unavailable);
        assert_eq!(status(500, "").class(), VaultErrorClass::Unavailable);
        assert_eq!(status(429, "").class(), VaultErrorClass::Unavailable);
        assert_eq!(status(307, "").class(), VaultErrorClass::Unavailable);
        assert_eq!(status(403, "permission denied").class(), VaultErrorClass::Denied);
        assert_eq!(
            status(400, "encryption key not found").class(),
            VaultErrorClass::NotFound
        );
        assert_eq!(status(404, "").class(), VaultErrorClass::NotFound);
        assert_eq!(
            status(400, "cipher: message authentication failed").class(),
            VaultErrorClass::Rejected
        );
        assert_eq!(status(418, "").class(), VaultErrorClass::Internal);
    }

    #[test]
    fn messages_name_address_status_and_advice() {
        let m = status(403, "permission denied").to_string();
        assert!(
            m.contains("http://v:8200") && m.contains("403") && m.contains("update") && m.contains("transit/encrypt/k"),
            "{m}"
        );
        let m = status(503, "Vault is sealed").to_string();
        assert!(m.contains("sealed") && m.contains("503"), "{m}");
    }

    #[test]
    fn error_text_is_short_and_single_line() {
        assert_eq!(error_text(r#"{"errors":["a","b\nc"]}"#), "a; b c");
        assert_eq!(error_text("<html>\n bad gateway</html>"), "<html> bad gateway</html>");
        let long = "x".repeat(5000);
        assert_eq!(error_text(&long).len(), VAULT_MAX_ERROR_TEXT + 3);
        assert_eq!(error_text(""), "");
    }

    /// Whatever a server or proxy sends, the message we build stays one
    /// bounded line and never panics.
    #[test]
    fn error_text_on_arbitrary_bodies() {
        let pieces = [
            "{",
            "}",
            "\"errors\"",
            ":",
            "[",
            "]",
            "\"x\"",
            ",",
            "\n",
            "é",
            "\u{7}",
            "null",
            "1",
        ];
        let mut rng = crate::testutil::Rng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let body: String = rng.pick(&pieces, 16).concat();
            let t = error_text(&body);
            assert!(t.chars().count() <= VAULT_MAX_ERROR_TEXT + 3);
            assert!(!t.chars().any(|c| c.is_control()), "{t:?}");
        }
    }

    #[test]
    fn redirects_go_to_a_known_node_or_the_same_scheme() {
        let mut cfg = crate::config::tests::sample_config();
        cfg.vault.addrs = vec!["https://v1:8200".into(), "https://v2:8200".into()];
        cfg.vault.tls_server_name = Some("vault.internal".into());
        let c = VaultClient::new(&cfg.vault).unwrap();
        let from = c.inner.nodes.first().unwrap();
        // A configured node keeps its own agent and server name.
        let (_, addr, url) = c.redirect_target(from, "https://v2:8200/v1/transit/encrypt/k").unwrap();
        assert_eq!(addr, "https://v2:8200");
        assert_eq!(url, "https://vault.internal:8200/v1/transit/encrypt/k");
        // Another https address is followed as is.
        let (_, addr, url) = c.redirect_target(from, "https://v9:8200/v1/transit/decrypt/k").unwrap();
        assert_eq!(
            (addr.as_str(), url.as_str()),
            ("https://v9:8200", "https://v9:8200/v1/transit/decrypt/k")
        );
        // Never from https down to http, never outside /v1/, never junk.
        for bad in [
            "http://v2:8200/v1/transit/encrypt/k",
            "https://v2:8200/ui/",
            "https://user@v2:8200/v1/x",
            "/v1/relative",
            "",
        ] {
            assert!(c.redirect_target(from, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_no_credentials() {
        let cfg = crate::config::tests::sample_config();
        let c = VaultClient::new(&cfg.vault).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("topsecret") && d.contains("127.0.0.1:8200"), "{d}");
    }
}
