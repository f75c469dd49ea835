//! End-to-end tests: the real `trousseau` binary on a real Unix socket,
//! driven by a grpcio client, against real OpenBao servers started here.

mod auth;
mod bad_input;
mod coalesce;
mod deploy;
mod grpc_abuse;
mod h2_raw;
mod ha;
mod hardening;
mod harness;
mod health_signal;
mod hostile_vault;
mod key_identity;
mod layout;
mod lifecycle;
mod local_kek;
mod ops;
mod purpose;
mod security;
mod session;
mod vault_faults;

use grpcio::RpcStatusCode;
use harness::*;
use std::time::{Duration, Instant};

#[test]
fn v2_status_encrypt_decrypt_round_trip() {
    let dir = TempDir::new("v2");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();

    let s = status(&c);
    assert_eq!(s.version, "v2");
    assert_eq!(s.healthz, "ok");
    assert_eq!(key_id_base(&s.key_id), "vault-transit:transit/kube:v1");

    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(e.key_id, s.key_id, "Encrypt's key_id must equal Status's");
    assert!(
        !e.ciphertext.is_empty() && e.ciphertext.len() <= 1024,
        "{} bytes",
        e.ciphertext.len()
    );
    assert!(e.ciphertext.starts_with(b"vault:v1:"));
    assert!(e.annotations.is_empty());
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);

    // Nothing secret in the logs, even at debug level.
    let log = p.log_text();
    assert!(
        log.contains("op=encrypt") && log.contains("uid=it-uid"),
        "request lines missing:\n{log}"
    );
    assert!(!log.contains(ROOT_TOKEN), "token in log");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pt);
    assert!(!log.contains(&b64), "plaintext in log");
}

#[test]
fn v1_version_encrypt_decrypt_round_trip() {
    let dir = TempDir::new("v1");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();

    let mut vr = v1beta1::VersionRequest::new();
    vr.version = "v1beta1".into();
    let v = c.v1.version(&vr, c.opt()).unwrap();
    assert_eq!(v.version, "v1beta1");
    assert_eq!(v.runtime_name, "trousseau");
    let parts: Vec<&str> = v.runtime_version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "not semver: {}",
        v.runtime_version
    );

    let pt = dek();
    let cipher = encrypt_v1(&c, &pt).unwrap();
    assert!(
        cipher.starts_with(b"vault-transit:transit/kube:vault:v1:"),
        "{}",
        String::from_utf8_lossy(&cipher)
    );
    assert_eq!(decrypt_v1(&c, &cipher).unwrap(), pt);

    // The apiserver's v1 health check encrypts "ping".
    let ping = encrypt_v1(&c, b"ping").unwrap();
    assert_eq!(decrypt_v1(&c, &ping).unwrap(), b"ping");

    // A bare Vault ciphertext (as older plugins stored) decrypts with the configured key.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pt);
    let r = vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "transit/encrypt/kube",
        Some(serde_json::json!({ "plaintext": b64 })),
    );
    let bare = r["data"]["ciphertext"].as_str().unwrap();
    assert_eq!(decrypt_v1(&c, bare.as_bytes()).unwrap(), pt);

    // A wrong API version is refused.
    let mut bad = v1beta1::EncryptRequest::new();
    bad.version = "v2beta7".into();
    bad.plain = pt.clone();
    let (code, msg) = rpc_err(c.v1.encrypt(&bad, c.opt()));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(msg.contains("v2beta7"), "{msg}");
}

#[test]
fn key_rotation_reaches_status_and_old_data_still_decrypts() {
    let dir = TempDir::new("rotate");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();

    let before = status(&c).key_id;
    assert_eq!(key_id_base(&before), "vault-transit:transit/kube:v1");
    let pt = dek();
    let old = encrypt_v2(&c, &pt).unwrap();
    let old_v1 = encrypt_v1(&c, &pt).unwrap();

    bao.rotate("kube");
    let t = Instant::now();
    let after = loop {
        let s = status(&c);
        assert_eq!(s.healthz, "ok");
        if s.key_id != before {
            break s.key_id;
        }
        // The contract allows about a minute; our probe TTL is 10 s.
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "rotation not visible in Status after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(key_id_base(&after), "vault-transit:transit/kube:v2");
    eprintln!("rotation visible in Status after {:?}", t.elapsed());

    let new = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(new.key_id, after, "Encrypt's key_id must equal Status's after rotation");
    assert!(new.ciphertext.starts_with(b"vault:v2:"));
    assert_eq!(decrypt_v2(&c, &old.ciphertext, &old.key_id).unwrap(), pt);
    assert_eq!(decrypt_v2(&c, &new.ciphertext, &new.key_id).unwrap(), pt);
    assert_eq!(decrypt_v1(&c, &old_v1).unwrap(), pt);
}

#[test]
fn sixty_four_concurrent_round_trips() {
    let dir = TempDir::new("concurrent");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = std::sync::Arc::new(p.client());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (c, b) = (c.clone(), barrier.clone());
            std::thread::spawn(move || {
                let pt = dek();
                b.wait();
                if i % 2 == 0 {
                    let e = encrypt_v2(&c, &pt).expect("encrypt");
                    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).expect("decrypt"), pt);
                } else {
                    let e = encrypt_v1(&c, &pt).expect("encrypt");
                    assert_eq!(decrypt_v1(&c, &e).expect("decrypt"), pt);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a round trip failed");
    }
}

#[test]
fn bad_ciphertexts_are_clear_errors_and_the_plugin_keeps_serving() {
    let dir = TempDir::new("badct");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    let pt = dek();
    let good = encrypt_v2(&c, &pt).unwrap();
    let kid = good.key_id.clone();
    let ct = good.ciphertext.clone();

    // Flip one base64 character in the body: Vault's AEAD check must fail.
    let mut tampered = ct.clone();
    let i = tampered.len() - 6;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let truncated = ct[..ct.len() - 8].to_vec();

    let cases: Vec<(&str, Vec<u8>, String, &str)> = vec![
        ("empty", vec![], kid.clone(), "ciphertext is empty"),
        ("garbage", b"\x00\x01garbage\xff".to_vec(), kid.clone(), "not text"),
        (
            "wrong prefix",
            b"aws:v1:AAAA".to_vec(),
            kid.clone(),
            "was not produced by trousseau",
        ),
        ("truncated", truncated, kid.clone(), ""),
        ("tampered", tampered, kid.clone(), "vault"),
        (
            "foreign key_id",
            ct.clone(),
            "vault-transit:transit/other:v1".into(),
            "belongs to transit key transit/other",
        ),
        (
            "alien key_id",
            ct.clone(),
            "arn:aws:kms:eu-west-1:1:key/x".into(),
            "not a trousseau key id",
        ),
        ("empty key_id", ct.clone(), String::new(), "key_id is empty"),
        (
            "version mismatch",
            ct.clone(),
            "vault-transit:transit/kube:v2".into(),
            "key version 1 but key_id names version 2",
        ),
    ];
    for (name, ct, kid, want) in cases {
        let (code, msg) = rpc_err(decrypt_v2(&c, &ct, &kid));
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg:?} lacks {want:?}");
        assert!(!msg.contains(ROOT_TOKEN));
    }
    for (name, cipher, want) in [
        ("v1 empty", b"".to_vec(), "cipher is empty"),
        ("v1 garbage", b"hello".to_vec(), "was not produced by trousseau"),
        (
            "v1 foreign key",
            b"vault-transit:transit/other:vault:v1:AAAA".to_vec(),
            "transit/other",
        ),
    ] {
        let (code, msg) = rpc_err(decrypt_v1(&c, &cipher));
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg:?} lacks {want:?}");
    }
    // Encrypt input checks.
    let (code, _) = rpc_err(encrypt_v2(&c, b""));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    let (code, msg) = rpc_err(encrypt_v2(&c, &vec![7u8; 100_000]));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    let (code, msg) = rpc_err(encrypt_v2(&c, &[7u8; 513]));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("at most 512"), "{msg}");
    // The largest accepted v2 plaintext still fits the 1024-byte ciphertext limit.
    let big = [9u8; 512];
    let e = encrypt_v2(&c, &big).unwrap();
    assert!(e.ciphertext.len() <= 1024, "{}", e.ciphertext.len());
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), big.to_vec());
    // v1 accepts larger DEKs (its cipher limit is 64 KiB).
    let pt1 = vec![5u8; 4096];
    let c1 = encrypt_v1(&c, &pt1).unwrap();
    assert_eq!(decrypt_v1(&c, &c1).unwrap(), pt1);

    // Still serving, still correct.
    assert_eq!(decrypt_v2(&c, &good.ciphertext, &good.key_id).unwrap(), pt);
    assert_eq!(status(&c).healthz, "ok");
    assert!(p.log_text().contains("outcome=invalid"));
}

#[test]
fn version_and_help() {
    let out = std::process::Command::new(plugin_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("trousseau {}", env!("CARGO_PKG_VERSION"))
    );
    let out = std::process::Command::new(plugin_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in ["--socket", "--vault-addr", "--transit-key", "VAULT_TOKEN", "--config"] {
        assert!(help.contains(want), "serve --help lacks {want}");
    }
    let out = std::process::Command::new(plugin_bin())
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The design card forbids an async runtime anywhere in the tree.
#[test]
fn no_async_runtime_in_the_dependency_tree() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("grpcio v") && tree.contains("ureq v"),
        "unexpected tree:\n{tree}"
    );
    for banned in ["tokio ", "async-std ", "hyper ", "mio ", "smol ", "tower ", "async-io "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(banned)),
            "{banned} is in the tree:\n{tree}"
        );
    }
}
