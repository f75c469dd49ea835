//! Only Trousseau's `session::auth` (std, serde_json, limits and secret):
//! the rest of `session` needs the Vault client.

#[path = "../../src/session/auth.rs"]
pub mod auth;
