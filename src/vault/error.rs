//! What a failed Vault call was, in words an operator can act on: the
//! variants say what happened, the class says what to do about it (retry,
//! fix the policy, fix the input), and the messages name the address, path
//! and HTTP status but never a token or a plaintext.

use std::fmt;
use std::time::Duration;

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
    /// A 2xx whose body is not JSON at all: not Vault speaking (a proxy or
    /// load balancer page), so another node may do better.
    Garbled { addr: String, path: String },
    /// A credential file could not be used for a login (no call was made).
    Credentials(String),
    /// The caller's (gRPC) deadline passed before an answer: the call was
    /// given up, with nothing learned about the node.
    Abandoned { addr: String },
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
    /// The caller gave up first; says nothing about Vault's health.
    Abandoned,
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
            VaultErrorClass::Abandoned => "deadline",
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
            VaultError::Garbled { .. } => VaultErrorClass::Unavailable,
            VaultError::Credentials(_) => VaultErrorClass::Denied,
            VaultError::Abandoned { .. } => VaultErrorClass::Abandoned,
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

impl VaultError {
    /// Whether this failure is evidence that Vault cannot serve, for the
    /// health signal: the Unavailable class, except a timeout of a call
    /// that was `cut_short`, that started with less than the full
    /// `--vault-timeout` because its time went elsewhere first (a
    /// coalescing queue, an earlier try): running out of that says nothing
    /// of Vault, which may have answered other calls meanwhile.
    pub fn shows_outage(&self, cut_short: bool) -> bool {
        match self {
            VaultError::Timeout { .. } if cut_short => false,
            e => e.class() == VaultErrorClass::Unavailable,
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
            VaultError::Garbled { addr, path } => write!(
                f,
                "vault at {addr} answered {path} with a success status but a body that is not JSON (a proxy or load balancer in the way?)"
            ),
            VaultError::BadResponse { addr, path, what } => {
                write!(f, "vault at {addr} sent an unusable answer to {path}: {what}")
            }
            VaultError::Credentials(m) => write!(f, "cannot log in: {m}"),
            VaultError::Abandoned { addr } => write!(
                f,
                "the caller's deadline passed before vault at {addr} answered; the call was given up"
            ),
        }
    }
}

/// Errors that say "this node cannot serve now", not "this request is
/// wrong": the only ones that hand a call over to the next node.
pub(super) fn fails_over(e: &VaultError) -> bool {
    e.class() == VaultErrorClass::Unavailable
}

/// A 2xx answer we cannot use.
pub(super) fn bad(addr: &str, path: &str, what: &str) -> VaultError {
    VaultError::BadResponse {
        addr: addr.to_owned(),
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

/// A ureq failure (no HTTP status) as ours.
pub(super) fn transport_error(addr: &str, path: &str, e: ureq::Error, budget: Duration) -> VaultError {
    let addr = addr.to_owned();
    match e {
        ureq::Error::Timeout(_) => VaultError::Timeout { addr, after: budget },
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => VaultError::Timeout { addr, after: budget },
        ureq::Error::BodyExceedsLimit(n) => VaultError::BadResponse {
            addr,
            path: path.to_owned(),
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
    fn a_timeout_after_a_queue_is_no_outage() {
        let t = VaultError::Timeout {
            addr: "http://v:8200".into(),
            after: Duration::from_millis(800),
        };
        assert!(t.shows_outage(false) && !t.shows_outage(true));
        // Vault's own failures count, however little time the call had.
        assert!(status(503, "sealed").shows_outage(true));
        let down = VaultError::Unreachable {
            addr: "http://v:8200".into(),
            cause: "connection refused".into(),
        };
        assert!(down.shows_outage(true));
        assert!(!status(400, "bad").shows_outage(false));
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
}
