//! What can go wrong in a KMS operation, named by who is at fault. The
//! one mapping to gRPC status codes is the gRPC layer's
//! (`grpc::status`); this module knows nothing of the wire.

use std::fmt;

use crate::vault::VaultError;
use crate::wire::WireError;

/// A failed KMS operation, named by who is at fault.
#[derive(Debug)]
pub enum KmsError {
    /// The caller sent something we cannot accept (bad ciphertext or key id).
    Invalid(String),
    /// The ciphertext or key id names a key this plugin does not serve.
    ForeignKey(String),
    /// Vault failed or refused.
    Vault(VaultError),
    /// Too many requests in flight.
    Overloaded(usize),
    /// The caller's deadline passed before we started.
    DeadlineExceeded,
    /// Cannot happen; reported instead of panicking.
    Internal(String),
}

impl From<WireError> for KmsError {
    fn from(e: WireError) -> Self {
        KmsError::Invalid(e.to_string())
    }
}

impl From<VaultError> for KmsError {
    fn from(e: VaultError) -> Self {
        KmsError::Vault(e)
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::Invalid(m) => write!(f, "invalid request: {m}"),
            KmsError::ForeignKey(m) => write!(f, "foreign key: {m}"),
            KmsError::Vault(e) => write!(f, "{e}"),
            KmsError::Overloaded(n) => write!(f, "overloaded: {n} requests already in flight (--max-in-flight)"),
            KmsError::DeadlineExceeded => write!(f, "deadline exceeded before the request was handled"),
            KmsError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl KmsError {
    /// Short class for log lines.
    pub fn class(&self) -> &'static str {
        match self {
            KmsError::Invalid(_) => "invalid",
            KmsError::ForeignKey(_) => "foreign_key",
            KmsError::Vault(e) => e.class_name(),
            KmsError::Overloaded(_) => "overloaded",
            KmsError::DeadlineExceeded => "deadline",
            KmsError::Internal(_) => "internal",
        }
    }
}
