//! KMS v2 adapter: translates `v2.KeyManagementService` messages to the
//! core and back. No Vault logic here.

use grpcio::{RpcContext, UnarySink};

use super::{dispatch, log_outcome, reply_inline, Shared};
use crate::kms::{KmsError, StatusReport};
use crate::limits::{V2_MAX_CIPHERTEXT, V2_MAX_PLAINTEXT};
use crate::proto::v2::*;
use crate::wire::{parse_key_id, parse_v2_ciphertext};

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
            return reply_inline(&ctx, sink, Ok(resp));
        }
        dispatch(&ctx, sink, &self.0, "v2", "status", String::new(), move |kms| {
            Ok(status_response(kms.status()))
        });
    }

    fn encrypt(&mut self, ctx: RpcContext<'_>, req: EncryptRequest, sink: UnarySink<EncryptResponse>) {
        let uid = req.uid.clone();
        dispatch(&ctx, sink, &self.0, "v2", "encrypt", uid, move |kms| {
            let sealed = kms.encrypt(&req.plaintext, V2_MAX_PLAINTEXT)?;
            let mut resp = EncryptResponse::new();
            resp.ciphertext = sealed.ciphertext.as_str().as_bytes().to_vec();
            if resp.ciphertext.len() > V2_MAX_CIPHERTEXT {
                return Err(KmsError::Internal(format!(
                    "vault ciphertext is {} bytes; KMS v2 allows {V2_MAX_CIPHERTEXT}",
                    resp.ciphertext.len()
                )));
            }
            resp.key_id = sealed.key.key_id();
            Ok(resp)
        });
    }

    fn decrypt(&mut self, ctx: RpcContext<'_>, req: DecryptRequest, sink: UnarySink<DecryptResponse>) {
        let uid = req.uid.clone();
        dispatch(&ctx, sink, &self.0, "v2", "decrypt", uid, move |kms| {
            let kv = parse_key_id(&req.key_id)?;
            let ct = parse_v2_ciphertext(&req.ciphertext)?;
            if ct.version() != kv.version {
                return Err(KmsError::Invalid(format!(
                    "ciphertext is from key version {} but key_id names version {}; the two were not stored together",
                    ct.version(),
                    kv.version
                )));
            }
            let plaintext = kms.decrypt(&kv.name, &ct)?;
            let mut resp = DecryptResponse::new();
            resp.plaintext = plaintext;
            Ok(resp)
        });
    }
}
