//! Trousseau: a Kubernetes KMS provider plugin (KMS v2 and v1beta1) that
//! encrypts the apiserver's data keys with a key held in Vault's (or
//! OpenBao's) transit engine.
//!
//! Layers, top to bottom: [`daemon`] wires everything; the adapters
//! ([`grpc`] with its `v1` and `v2` services, [`ops`] for the HTTP
//! endpoints) call the one core, [`kms`]; it reads and writes the formats of
//! [`wire`] and calls [`vault`], the only code that speaks HTTP to Vault,
//! with a token [`session`] keeps valid (its `auth` describes the login
//! methods). [`socket`] owns the Unix socket's lifecycle, [`config`] turns
//! flags, environment and file into one validated struct, and [`tools`]
//! holds `check` and `probe`.

// Denied, not forbidden: `hardening` allows it for its one prctl call (a
// `forbid` could not be lifted there). Nothing else may use `unsafe`.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod caller;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod environ;
pub mod files;
pub mod grpc;
pub mod hardening;
pub mod kms;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod permits;
pub mod proto;
pub mod secret;
pub mod session;
pub mod socket;
pub mod tools;
pub mod vault;
pub mod wire;

#[cfg(test)]
mod testutil;
