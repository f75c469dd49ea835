//! The token endpoints: logging in with a method's credentials, looking up
//! and renewing the token in use.

use std::time::{Duration, Instant};

use super::error::bad;
use super::transport::{section, Answer, Call, Method};
use super::{Lease, LoginToken, VaultClient, VaultError};
use crate::limits::VAULT_MAX_LEASE;
use crate::secret::Secret;

impl VaultClient {
    /// `GET /v1/auth/token/lookup-self`: is the token valid, and its lease.
    pub fn lookup_self(&self, token: &Secret, deadline: Instant) -> Result<Lease, VaultError> {
        let path = "auth/token/lookup-self";
        let c = Call {
            op: "lookup-self",
            method: Method::Get,
            path,
            body: None,
            token: Some(token),
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        let d = section(&v, "data").ok_or_else(|| bad(&addr, path, "no data object"))?;
        let secs = |k: &str| d.get(k).and_then(|t| t.as_u64()).map(lease_secs);
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
        let c = Call {
            op: "renew-self",
            method: Method::Post,
            path,
            body: Some(&body),
            token: Some(token),
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        lease_of(&v).ok_or_else(|| bad(&addr, path, "no auth.lease_duration"))
    }

    /// `POST /v1/<path>` (an auth method's `auth/<mount>/login`) with the
    /// method's credentials as JSON; returns the new token and its lease.
    pub fn login(&self, path: &str, credentials: &Secret, deadline: Instant) -> Result<LoginToken, VaultError> {
        let c = Call {
            op: "login",
            method: Method::Post,
            path,
            body: Some(credentials.expose()),
            token: None,
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        let token = section(&v, "auth")
            .and_then(|a| a.get("client_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad(&addr, path, "no auth.client_token"))?;
        let lease = lease_of(&v).ok_or_else(|| bad(&addr, path, "no auth.lease_duration"))?;
        Ok(LoginToken {
            token: Secret::new(token.to_owned()),
            lease,
        })
    }
}

/// A lease length from Vault, at most [`VAULT_MAX_LEASE`].
fn lease_secs(secs: u64) -> Duration {
    Duration::from_secs(secs).min(VAULT_MAX_LEASE)
}

/// The lease of a login or renewal answer (`auth.lease_duration`).
fn lease_of(v: &serde_json::Value) -> Option<Lease> {
    let a = section(v, "auth")?;
    let ttl = lease_secs(a.get("lease_duration")?.as_u64()?);
    Some(Lease {
        ttl,
        renewable: a.get("renewable").and_then(|r| r.as_bool()).unwrap_or(false),
        granted: ttl,
    })
}
