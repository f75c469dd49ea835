//! The ureq-free part of Trousseau's `vault` module: its settings and the
//! one parser of a Vault address (also used on a standby's 307 Location).
//! The rest of `vault` (client, transport, error mapping) needs ureq.

#[path = "../../src/vault/settings.rs"]
mod settings;

pub use settings::{parse_addr, Settings};
