//! The token endpoints: logging in with a method's credentials, looking up
//! and renewing the token in use.

use std::time::{Duration, Instant};

use super::answer::{auth_lease, login_token, lookup_lease};
use super::error::bad;
use super::transport::{Answer, Call, Method};
use super::{Lease, LoginToken, VaultClient, VaultError};
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
            batch: false,
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        lookup_lease(&v).ok_or_else(|| bad(&addr, path, "no data object"))
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
            batch: false,
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        auth_lease(&v).ok_or_else(|| bad(&addr, path, "no auth.lease_duration"))
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
            batch: false,
        };
        let Answer { addr, body: v } = self.call(&c, deadline)?;
        login_token(&v).map_err(|what| bad(&addr, path, what))
    }
}
