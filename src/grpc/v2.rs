//! KMS v2 adapter: translates `v2.KeyManagementService` messages to the
//! core and back. No Vault logic here.

use grpcio::{RpcContext, UnarySink};

use super::{dispatch, log_outcome, reply_inline, Shared};
use crate::kms::{KmsError, StatusReport};
use crate::limits::{V2_MAX_CIPHERTEXT, V2_MAX_PLAINTEXT};
use crate::proto::v2::*;
use crate::wire::{parse_key_id, parse_v2_ciphertext, parse_v2_local, Purpose, LOCAL_KEK_ANNOTATION};

/// What a v2 DEK sealed under a local KEK is bound to (AES-GCM's
/// additional data): it opens as a v2 seed only.
const LOCAL_AAD: &[u8] = b"trousseau local-kek kms-v2";

/// The version string the apiserver requires from a v2 plugin.
pub const API_VERSION: &str = "v2";

#[derive(Clone)]
pub struct V2(pub Shared);

fn status_response(r: StatusReport) -> StatusResponse {
    let mut resp = StatusResponse::new();
    resp.version = API_VERSION.to_owned();
    resp.healthz = match r.healthy {
        Ok(()) => "ok".to_owned(),
        Err(why) => why,
    };
    resp.key_id = r.key_id.unwrap_or_default();
    resp
}

impl KeyManagementService for V2 {
    fn status(&mut self, ctx: RpcContext<'_>, _req: StatusRequest, sink: UnarySink<StatusResponse>) {
        // A fresh cached answer needs no Vault call and no thread.
        if let Some(r) = self.0.kms.status_if_fresh() {
            let start = std::time::Instant::now();
            let resp = status_response(r);
            log_outcome("v2", "status", "", start, Ok(()));
            return reply_inline(sink, Ok(resp), super::replies::Label::new("v2", "status", ""));
        }
        dispatch(&ctx, sink, &self.0, "v2", "status", String::new(), move |kms| {
            Ok(status_response(kms.status()))
        });
    }

    fn encrypt(&mut self, ctx: RpcContext<'_>, req: EncryptRequest, sink: UnarySink<EncryptResponse>) {
        let uid = req.uid.clone();
        dispatch(&ctx, sink, &self.0, "v2", "encrypt", uid, move |kms| {
            let mut resp = EncryptResponse::new();
            let what = if kms.local_kek() {
                let local = kms.seal_local(&req.plaintext, V2_MAX_PLAINTEXT, LOCAL_AAD)?;
                resp.ciphertext = local.sealed;
                resp.key_id = local.key.key_id();
                let wrapped = local.wrapped.as_str().as_bytes().to_vec();
                resp.annotations.insert(LOCAL_KEK_ANNOTATION.to_owned(), wrapped);
                "the sealed DEK"
            } else {
                let sealed = kms.encrypt(&req.plaintext, V2_MAX_PLAINTEXT, Purpose::DekV2)?;
                resp.ciphertext = sealed.ciphertext.as_str().as_bytes().to_vec();
                resp.key_id = sealed.key.key_id();
                "vault ciphertext"
            };
            if resp.ciphertext.len() > V2_MAX_CIPHERTEXT {
                return Err(KmsError::Internal(format!(
                    "{what} is {} bytes; KMS v2 allows {V2_MAX_CIPHERTEXT}",
                    resp.ciphertext.len()
                )));
            }
            Ok(resp)
        });
    }

    fn decrypt(&mut self, ctx: RpcContext<'_>, req: DecryptRequest, sink: UnarySink<DecryptResponse>) {
        let uid = req.uid.clone();
        dispatch(&ctx, sink, &self.0, "v2", "decrypt", uid, move |kms| {
            let kv = parse_key_id(&req.key_id)?;
            let same_version = |v: u64, what: &str| {
                if v == kv.version {
                    return Ok(());
                }
                Err(KmsError::Invalid(format!(
                    "{what} is from key version {v} but key_id names version {}; the two were not stored together",
                    kv.version
                )))
            };
            let mut resp = DecryptResponse::new();
            resp.plaintext = match req.annotations.get(LOCAL_KEK_ANNOTATION) {
                Some(wrapped) => {
                    let local = parse_v2_local(&req.ciphertext, wrapped)?;
                    same_version(local.wrapped.version(), "the wrapped local KEK")?;
                    kms.open_local(&kv.name, &local, LOCAL_AAD)?
                }
                None => {
                    let ct = parse_v2_ciphertext(&req.ciphertext)?;
                    same_version(ct.version(), "ciphertext")?;
                    kms.decrypt(&kv.name, &ct, Purpose::DekV2)?
                }
            };
            Ok(resp)
        });
    }
}
