//! The only code that speaks HTTP to Vault: one pooled, keep-alive ureq
//! agent; every call bounded by a deadline; transit encrypt and decrypt; and
//! an error type whose variants say what happened and whose messages name
//! the address, path and HTTP status but never a token or a plaintext.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::Config;
use crate::envelope::{KeyName, VaultCiphertext};
use crate::limits::MAX_VAULT_RESPONSE;
use crate::secret::Secret;

/// Connection setup (TCP + TLS) gets at most this much of a call's budget:
/// a healthy Vault on the control plane's network connects in milliseconds,
/// and a dead node must fail fast enough to report UNAVAILABLE in time.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Idle keep-alive connections kept to Vault. Matches the default in-flight
/// cap so a burst does not open and close connections.
const MAX_IDLE_CONNECTIONS: usize = 256;
/// How long an idle connection is reused; Vault's own idle timeout is 5 min.
const MAX_IDLE_AGE: Duration = Duration::from_secs(60);
/// Vault error strings are short; cap what we copy into a message.
const MAX_ERROR_TEXT: usize = 300;

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

impl VaultError {
    pub fn class(&self) -> VaultErrorClass {
        match self {
            VaultError::Unreachable { .. } | VaultError::Timeout { .. } => VaultErrorClass::Unavailable,
            VaultError::BadResponse { .. } => VaultErrorClass::Internal,
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
                    (307, _) => write!(f, " (a standby redirected us; point --vault-addr at the active node or enable request forwarding)"),
                    (_, VaultErrorClass::Denied) if *op == "encrypt" => write!(f, " (the token is invalid or expired, or its policy must grant \"update\" on {path}; also check that the key exists, as trousseau never creates keys)"),
                    (_, VaultErrorClass::Denied) => write!(f, " (the token is invalid or expired, or its policy must grant \"update\" on {path})"),
                    (_, VaultErrorClass::NotFound) => write!(f, " (check the transit mount and key name, and that the key exists)"),
                    _ => Ok(()),
                }
            }
            VaultError::BadResponse { addr, path, what } => {
                write!(f, "vault at {addr} sent an unusable answer to {path}: {what}")
            }
        }
    }
}

/// A blocking Vault client. Cheap to share across threads: the agent's
/// connection pool is internally synchronised and no lock is held here.
#[derive(Clone)]
pub struct VaultClient {
    agent: ureq::Agent,
    addr: Arc<str>,
    token: Secret,
    namespace: Option<String>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("addr", &self.addr)
            .field("token", &self.token)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl VaultClient {
    /// Builds the agent: TLS roots, timeouts, pool. Fails on an unreadable CA.
    pub fn new(cfg: &Config) -> Result<VaultClient, String> {
        use ureq::tls::{RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(path) = &cfg.vault_cacert {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => return Err(format!("CA file {}: {e}", path.display())),
                }
            }
            if certs.is_empty() {
                return Err(format!("CA file {} holds no PEM certificate", path.display()));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        if cfg.vault_skip_verify {
            tls = tls.disable_verification(true);
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls.build())
            .timeout_global(Some(cfg.vault_timeout))
            .timeout_connect(Some(CONNECT_TIMEOUT.min(cfg.vault_timeout)))
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS)
            .max_idle_age(MAX_IDLE_AGE)
            .user_agent(concat!("trousseau/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(VaultClient {
            agent,
            addr: Arc::from(cfg.vault_addr.as_str()),
            token: cfg.vault_token.clone(),
            namespace: cfg.vault_namespace.clone(),
        })
    }

    /// `POST /v1/<mount>/encrypt/<key>`; returns Vault's `vault:vN:` ciphertext.
    pub fn encrypt(&self, key: &KeyName, plaintext: &[u8], deadline: Instant) -> Result<VaultCiphertext, VaultError> {
        let path = format!("{}/encrypt/{}", key.mount, key.key);
        let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
        let body = serde_json::json!({ "plaintext": b64 }).to_string();
        let data = self.post("encrypt", &path, &body, deadline)?;
        let ct = data
            .get("ciphertext")
            .and_then(|v| v.as_str())
            .ok_or_else(|| self.bad(&path, "no data.ciphertext"))?;
        VaultCiphertext::parse(ct, "vault's ciphertext").map_err(|e| self.bad(&path, &e.to_string()))
    }

    /// `POST /v1/<mount>/decrypt/<key>`; returns the plaintext bytes.
    pub fn decrypt(&self, key: &KeyName, ct: &VaultCiphertext, deadline: Instant) -> Result<Vec<u8>, VaultError> {
        let path = format!("{}/decrypt/{}", key.mount, key.key);
        let body = serde_json::json!({ "ciphertext": ct.as_str() }).to_string();
        let data = self.post("decrypt", &path, &body, deadline)?;
        // Vault omits `plaintext` for an empty plaintext; we never encrypt one.
        let pt = data
            .get("plaintext")
            .and_then(|v| v.as_str())
            .ok_or_else(|| self.bad(&path, "no data.plaintext"))?;
        base64::engine::general_purpose::STANDARD
            .decode(pt)
            .map_err(|_| self.bad(&path, "data.plaintext is not base64"))
    }

    fn bad(&self, path: &str, what: &str) -> VaultError {
        VaultError::BadResponse {
            addr: self.addr.to_string(),
            path: path.to_owned(),
            what: what.to_owned(),
        }
    }

    /// One POST with the remaining budget; one retry when a pooled
    /// connection turned out dead (transit encrypt/decrypt are safe to repeat).
    fn post(
        &self,
        op: &'static str,
        path: &str,
        body: &str,
        deadline: Instant,
    ) -> Result<serde_json::Value, VaultError> {
        match self.post_once(op, path, body, deadline) {
            Err(VaultError::Unreachable { .. }) if deadline > Instant::now() + Duration::from_millis(50) => {
                self.post_once(op, path, body, deadline)
            }
            r => r,
        }
    }

    fn post_once(
        &self,
        op: &'static str,
        path: &str,
        body: &str,
        deadline: Instant,
    ) -> Result<serde_json::Value, VaultError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(VaultError::Timeout {
                addr: self.addr.to_string(),
                after: Duration::ZERO,
            });
        }
        let url = format!("{}/v1/{path}", self.addr);
        let mut req = self
            .agent
            .post(&url)
            .header("X-Vault-Token", self.token.expose())
            .header("Content-Type", "application/json");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.as_str());
        }
        let req = req.config().timeout_global(Some(budget)).build();
        let mut resp = req.send(body.as_bytes()).map_err(|e| self.transport_error(e, budget))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_VAULT_RESPONSE)
            .read_to_string()
            .map_err(|e| self.transport_error(e, budget))?;
        if !(200..300).contains(&status) {
            return Err(VaultError::Status {
                addr: self.addr.to_string(),
                op,
                path: path.to_owned(),
                status,
                message: error_text(&text),
            });
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| self.bad(path, "body is not JSON"))?;
        match v.get("data") {
            Some(d) if d.is_object() => Ok(d.clone()),
            _ => Err(self.bad(path, "no data object")),
        }
    }

    fn transport_error(&self, e: ureq::Error, budget: Duration) -> VaultError {
        let addr = self.addr.to_string();
        match e {
            ureq::Error::Timeout(_) => VaultError::Timeout { addr, after: budget },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                VaultError::Timeout { addr, after: budget }
            }
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
                     point --vault-cacert or VAULT_CACERT at that CA's PEM file)"
                ),
            },
            other => VaultError::Unreachable {
                addr,
                cause: other.to_string(),
            },
        }
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
    match one_line.char_indices().nth(MAX_ERROR_TEXT) {
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
        assert_eq!(error_text(&long).len(), MAX_ERROR_TEXT + 3);
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
            assert!(t.chars().count() <= MAX_ERROR_TEXT + 3);
            assert!(!t.chars().any(|c| c.is_control()), "{t:?}");
        }
    }

    #[test]
    fn debug_redacts_the_token() {
        let cfg = crate::config::tests::sample_config();
        let c = VaultClient::new(&cfg).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains(cfg.vault_token.expose()) && d.contains("<redacted>"), "{d}");
    }
}
