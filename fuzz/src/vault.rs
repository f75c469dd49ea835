//! The ureq-free part of Trousseau's `vault` module: its settings, the one
//! parser of a Vault address (also used on a standby's 307 Location), and
//! the readers of Vault's answers. The rest of `vault` (client, transport,
//! error mapping) needs ureq.

#[path = "../../src/vault/settings.rs"]
mod settings;

pub use settings::{parse_addr, Settings};

#[path = "../../src/vault/answer.rs"]
pub mod answer;
