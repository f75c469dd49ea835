//! Trousseau's pure parser modules, compiled by path from ../src so that
//! `crate::limits`, `crate::wire`, `crate::config`, ... resolve as they do
//! in the real crate, without grpcio or ureq. Nothing here is a copy: each
//! module is the plugin's own file.

#![forbid(unsafe_code)]

#[path = "../../src/limits/mod.rs"]
pub mod limits;

#[path = "../../src/wire/mod.rs"]
pub mod wire;

#[path = "../../src/secret.rs"]
pub mod secret;

#[path = "../../src/files.rs"]
pub mod files;

/// Only the ureq-free part of `crate::vault` (src/vault.rs here).
pub mod vault;

/// Only `crate::session::auth` (src/session.rs here).
pub mod session;

#[path = "../../src/config/mod.rs"]
pub mod config;
