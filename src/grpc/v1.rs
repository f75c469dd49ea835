//! KMS v1beta1 adapter: translates `v1beta1.KeyManagementService` messages
//! to the core and back. No Vault logic here.

use grpcio::{RpcContext, UnarySink};

use super::status::to_rpc_status;
use super::{dispatch, reply_inline, Shared};
use crate::kms::KmsError;
use crate::limits::{V1_MAX_CIPHER, V1_MAX_PLAINTEXT};
use crate::proto::v1beta1::*;
use crate::wire::{parse_v1_cipher, parse_v1_local, v1_cipher, v1_local_cipher, Purpose};

/// What a v1 DEK sealed under a local KEK is bound to (AES-GCM's
/// additional data): it opens as a v1 DEK only.
const LOCAL_AAD: &[u8] = b"trousseau local-kek kms-v1beta1";

/// The only version the apiserver accepts from a v1 plugin.
pub const API_VERSION: &str = "v1beta1";
pub const RUNTIME_NAME: &str = "trousseau";

#[derive(Clone)]
pub struct V1(pub Shared);

fn check_version(v: &str) -> Result<(), KmsError> {
    if v.is_empty() || v == API_VERSION {
        Ok(())
    } else {
        Err(KmsError::Invalid(format!(
            "unsupported KMS API version {v:?}; this service speaks {API_VERSION}"
        )))
    }
}

impl KeyManagementService for V1 {
    fn version(&mut self, _ctx: RpcContext<'_>, req: VersionRequest, sink: UnarySink<VersionResponse>) {
        // Answered inline: no Vault call, nothing to bound.
        let r = match check_version(&req.version) {
            Ok(()) => {
                let mut resp = VersionResponse::new();
                resp.version = API_VERSION.to_owned();
                resp.runtime_name = RUNTIME_NAME.to_owned();
                resp.runtime_version = env!("CARGO_PKG_VERSION").to_owned();
                Ok(resp)
            }
            Err(e) => Err(to_rpc_status(&e)),
        };
        reply_inline(sink, r, super::replies::Label::new("v1beta1", "version", ""));
    }

    fn encrypt(&mut self, ctx: RpcContext<'_>, req: EncryptRequest, sink: UnarySink<EncryptResponse>) {
        dispatch(&ctx, sink, &self.0, "v1beta1", "encrypt", String::new(), move |kms| {
            check_version(&req.version)?;
            let mut resp = EncryptResponse::new();
            resp.cipher = if kms.local_kek() {
                let local = kms.seal_local(&req.plain, V1_MAX_PLAINTEXT, LOCAL_AAD)?;
                v1_local_cipher(&local.key.name, &local.wrapped, &local.sealed)
            } else {
                let sealed = kms.encrypt(&req.plain, V1_MAX_PLAINTEXT, Purpose::DekV1)?;
                v1_cipher(&sealed.key.name, &sealed.ciphertext)
            };
            // Anything Encrypt returns, Decrypt must accept.
            if resp.cipher.len() > V1_MAX_CIPHER {
                return Err(KmsError::Internal(format!(
                    "the v1 cipher would be {} bytes; KMS v1 stores at most {V1_MAX_CIPHER}",
                    resp.cipher.len()
                )));
            }
            Ok(resp)
        });
    }

    fn decrypt(&mut self, ctx: RpcContext<'_>, req: DecryptRequest, sink: UnarySink<DecryptResponse>) {
        dispatch(&ctx, sink, &self.0, "v1beta1", "decrypt", String::new(), move |kms| {
            check_version(&req.version)?;
            let mut resp = DecryptResponse::new();
            if let Some((name, local)) = parse_v1_local(&req.cipher)? {
                resp.plain = kms.open_local(&name, &local, LOCAL_AAD)?;
                return Ok(resp);
            }
            let cipher = parse_v1_cipher(&req.cipher)?;
            resp.plain = match &cipher.key {
                Some(name) => kms.decrypt(name, &cipher.ciphertext, Purpose::DekV1)?,
                None => kms.decrypt_unnamed(&cipher.ciphertext, Purpose::DekV1)?,
            };
            Ok(resp)
        });
    }
}
