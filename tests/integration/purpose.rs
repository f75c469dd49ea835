//! No Decrypt returns a secret of another kind (issue 21, #4): a wrapped
//! local KEK (stored in the clear in an etcd annotation or a v1 cipher)
//! sent back as a DEK ciphertext is refused instead of returning the raw
//! KEK, and a transit ciphertext made through one KMS API does not open
//! through the other. Ciphertexts written before purpose tags existed
//! (untagged DEKs and KEKs) still open.

use std::collections::HashMap;

use base64::Engine as _;
use grpcio::RpcStatusCode;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::harness::*;

const ANNOTATION: &str = "local-kek.trousseau.io";

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Asserts a refusal that returned no plaintext at all.
fn refused(what: &str, r: grpcio::Result<Vec<u8>>) -> String {
    match r {
        Ok(pt) => panic!("{what}: Decrypt returned {} bytes of plaintext", pt.len()),
        Err(e) => {
            let (code, msg) = rpc_err::<()>(Err(e));
            assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{what}: {msg}");
            msg
        }
    }
}

/// Every way of handing a wrapped KEK to a DEK Decrypt.
fn wrapped_kek_is_never_returned(c: &KmsClient, key_id: &str, wrapped: &str) {
    let msg = refused("as a v2 ciphertext", decrypt_v2(c, wrapped.as_bytes(), key_id));
    assert!(msg.contains("wrapped local KEK"), "{msg}");
    refused("as a bare v1 cipher", decrypt_v1(c, wrapped.as_bytes()));
    let framed = format!("vault-transit:transit/kube:{wrapped}");
    refused("as a framed v1 cipher", decrypt_v1(c, framed.as_bytes()));
}

#[test]
fn a_wrapped_kek_sent_back_as_a_dek_is_refused_by_every_decrypt() {
    let dir = TempDir::new("purpose-kek");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &["--local-kek"]);
    let c = p.client();
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    let wrapped = String::from_utf8(e.annotations.get(ANNOTATION).expect("no annotation").clone()).unwrap();
    let v1 = encrypt_v1(&c, &pt).unwrap();
    let v1_wrapped = std::str::from_utf8(&v1)
        .unwrap()
        .split(':')
        .skip(2)
        .take(3)
        .collect::<Vec<_>>()
        .join(":");
    assert!(v1_wrapped.starts_with("vault:v1:"), "{v1_wrapped}");
    // On the plugin that made them, and on one that never held them (the
    // refusal cannot rest on a cache).
    wrapped_kek_is_never_returned(&c, &e.key_id, &wrapped);
    wrapped_kek_is_never_returned(&c, &e.key_id, &v1_wrapped);
    let dir2 = TempDir::new("purpose-kek-fresh");
    let fresh = Plugin::start(dir2.path(), &bao.addr, &bao.token, &[]);
    let cf = fresh.client();
    wrapped_kek_is_never_returned(&cf, &e.key_id, &wrapped);
    // And what they wrap still opens, as it should.
    assert_eq!(
        decrypt_v2_with(&cf, &e.ciphertext, &e.key_id, &e.annotations).unwrap(),
        pt
    );
    assert_eq!(decrypt_v1(&cf, &v1).unwrap(), pt);
    p.assert_no_secrets_in_log();
}

#[test]
fn each_api_opens_only_what_it_made() {
    let dir = TempDir::new("purpose-api");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    let ct = std::str::from_utf8(&e.ciphertext).unwrap().to_owned();
    let msg = refused("a v2 ciphertext as a bare v1 cipher", decrypt_v1(&c, ct.as_bytes()));
    assert!(msg.contains("other KMS API"), "{msg}");
    let framed = format!("vault-transit:transit/kube:{ct}");
    refused(
        "a v2 ciphertext as a framed v1 cipher",
        decrypt_v1(&c, framed.as_bytes()),
    );
    let v1 = encrypt_v1(&c, &pt).unwrap();
    let inner = std::str::from_utf8(&v1)
        .unwrap()
        .strip_prefix("vault-transit:transit/kube:")
        .unwrap()
        .to_owned();
    refused(
        "a v1 cipher as a v2 ciphertext",
        decrypt_v2(&c, inner.as_bytes(), &e.key_id),
    );
    // Each through its own API, as ever.
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    assert_eq!(decrypt_v1(&c, &v1).unwrap(), pt);
    // A caller cannot make a plaintext that would read back as a KEK.
    let mut forged = b"trousseau.kek.v1".to_vec();
    forged.extend_from_slice(&[0u8; 32]);
    let (code, msg) = rpc_err(encrypt_v2(&c, &forged));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
}

/// What plugins wrote before purpose tags: a DEK encrypted by transit as
/// it is, and a local KEK wrapped as it is with a DEK sealed under it.
#[test]
fn untagged_dek_and_kek_written_before_tags_still_open() {
    let dir = TempDir::new("purpose-legacy");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    let key_id = status(&c).key_id;
    let pt = dek();
    let transit = |raw: &[u8]| -> String {
        let body = serde_json::json!({ "plaintext": b64().encode(raw) });
        let (_, v) = vault_call(&bao.addr, &bao.token, "POST", "transit/encrypt/kube", Some(body));
        v["data"]["ciphertext"].as_str().unwrap().to_owned()
    };
    // An untagged transit DEK, through both APIs (as before).
    let old = transit(&pt);
    assert_eq!(decrypt_v2(&c, old.as_bytes(), &key_id).unwrap(), pt);
    assert_eq!(decrypt_v1(&c, old.as_bytes()).unwrap(), pt);

    // An untagged local KEK and a v2 DEK sealed under it.
    let kek = [0x5au8; 32];
    let wrapped = transit(&kek);
    let sealer = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &kek).unwrap());
    let nonce = [9u8; 12];
    let mut sealed = pt.clone();
    let tag = sealer
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(b"trousseau local-kek kms-v2"),
            &mut sealed,
        )
        .unwrap();
    let ciphertext = [&nonce[..], &sealed, tag.as_ref()].concat();
    let annotations = HashMap::from([(ANNOTATION.to_owned(), wrapped.as_bytes().to_vec())]);
    assert_eq!(decrypt_v2_with(&c, &ciphertext, &key_id, &annotations).unwrap(), pt);
    // Now that this plugin holds that KEK, it refuses it as a DEK too.
    let msg = refused("a held untagged KEK", decrypt_v2(&c, wrapped.as_bytes(), &key_id));
    assert!(msg.contains("wrapped local KEK"), "{msg}");
}
