//! The one place where a [`KmsError`] becomes what goes on the wire: a gRPC
//! status code and a message (which names the key, the Vault address and
//! the HTTP status, never a token, plaintext or ciphertext).

use grpcio::{RpcStatus, RpcStatusCode};

use crate::kms::KmsError;
use crate::vault::VaultErrorClass;

/// The single mapping from our errors to what goes on the wire.
pub fn to_rpc_status(e: &KmsError) -> RpcStatus {
    let code = match e {
        KmsError::Invalid(_) | KmsError::ForeignKey(_) => RpcStatusCode::INVALID_ARGUMENT,
        KmsError::Vault(e) => match e.class() {
            VaultErrorClass::Unavailable => RpcStatusCode::UNAVAILABLE,
            VaultErrorClass::Denied => RpcStatusCode::PERMISSION_DENIED,
            VaultErrorClass::NotFound => RpcStatusCode::FAILED_PRECONDITION,
            VaultErrorClass::Rejected => RpcStatusCode::INVALID_ARGUMENT,
            VaultErrorClass::Internal => RpcStatusCode::INTERNAL,
            VaultErrorClass::Abandoned => RpcStatusCode::DEADLINE_EXCEEDED,
        },
        KmsError::Overloaded(_) => RpcStatusCode::RESOURCE_EXHAUSTED,
        KmsError::DeadlineExceeded => RpcStatusCode::DEADLINE_EXCEEDED,
        KmsError::Internal(_) => RpcStatusCode::INTERNAL,
    };
    RpcStatus::with_message(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::VaultError;

    #[test]
    fn wire_codes() {
        let v = |status: u16, message: &str| {
            KmsError::Vault(VaultError::Status {
                addr: "http://127.0.0.1:1".into(),
                op: "decrypt",
                path: "transit/decrypt/k".into(),
                status,
                message: message.into(),
            })
        };
        let code = |e: KmsError| to_rpc_status(&e).code();
        assert_eq!(code(KmsError::Invalid("x".into())), RpcStatusCode::INVALID_ARGUMENT);
        assert_eq!(code(KmsError::ForeignKey("x".into())), RpcStatusCode::INVALID_ARGUMENT);
        assert_eq!(code(v(503, "sealed")), RpcStatusCode::UNAVAILABLE);
        assert_eq!(code(v(403, "permission denied")), RpcStatusCode::PERMISSION_DENIED);
        assert_eq!(
            code(v(400, "encryption key not found")),
            RpcStatusCode::FAILED_PRECONDITION
        );
        assert_eq!(
            code(v(400, "cipher: message authentication failed")),
            RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(code(KmsError::Overloaded(3)), RpcStatusCode::RESOURCE_EXHAUSTED);
        assert_eq!(
            code(KmsError::Vault(VaultError::Unreachable {
                addr: "a".into(),
                cause: "refused".into()
            })),
            RpcStatusCode::UNAVAILABLE
        );
        let s = to_rpc_status(&v(503, "Vault is sealed"));
        assert!(
            s.message().contains("503") && s.message().contains("127.0.0.1:1"),
            "{}",
            s.message()
        );
    }
}
