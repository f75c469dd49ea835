//! Trousseau: a Kubernetes KMS provider plugin (KMS v2 and v1beta1) that
//! encrypts the apiserver's data keys with a key held in Vault's (or
//! OpenBao's) transit engine.
//!
//! Layers, top to bottom: the gRPC adapters ([`server`], with `v1` and `v2`
//! inside) translate wire messages; [`kms`] is the one core that knows what
//! a key id and a ciphertext are; [`session`] keeps a valid Vault token
//! (login, renewal, re-login) using the method [`auth`] describes; [`vault`]
//! is the only code that speaks HTTP to Vault (all nodes, TLS, failover).
//! [`socket`] owns the Unix socket's lifecycle and [`config`] turns flags,
//! environment and file into one validated struct.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod auth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod grpc;
pub mod kms;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod proto;
pub mod secret;
pub mod session;
pub mod socket;
pub mod tools;
pub mod vault;
pub mod wire;

#[cfg(test)]
mod testutil;
