//! Request coalescing against a real OpenBao: concurrent requests for one
//! key and operation share `batch_input` calls, and every caller still gets
//! exactly the answer to its own input: valid, tampered and foreign
//! ciphertexts mixed, through a key rotation, a failing proxy and an
//! OpenBao restart. A FaultProxy slows each call so that requests queue.

use crate::harness::*;
use grpcio::RpcStatusCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn calls_saved(p: &Plugin, op: &str) -> f64 {
    metric_sum(p, &format!("trousseau_vault_calls_saved_total{{operation=\"{op}\"}}"))
}

/// A DEK that names its caller and round, so a misdelivered one is seen.
fn own_dek(caller: usize, round: usize) -> Vec<u8> {
    let mut pt = dek();
    pt[..8].copy_from_slice(&(caller as u32).to_be_bytes().repeat(2));
    pt[8..16].copy_from_slice(&(round as u64).to_be_bytes());
    pt
}

/// One base64 character of the ciphertext's body changed: still well
/// formed, so it reaches Vault, whose AEAD check refuses it.
fn tampered(ct: &[u8]) -> Vec<u8> {
    let mut t = ct.to_vec();
    let i = t.len() - 6;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    t
}

#[test]
fn the_wrong_caller_never_gets_a_plaintext() {
    let dir = TempDir::new("coalesce-mix");
    let bao = Bao::dev(dir.path());
    bao.create_key("other");
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &[]);
    let c = Arc::new(p.client());
    const CALLERS: usize = 64;
    const ROUNDS: usize = 6;

    // Each caller's own DEKs, encrypted one by one before the load (v2 and
    // v1), and a ciphertext of transit key `other` (which this plugin does
    // not serve) made straight at OpenBao.
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    struct Mine {
        pt: Vec<u8>,
        v2: (Vec<u8>, String),
        v1: Vec<u8>,
        foreign: Vec<u8>,
    }
    let mine: Vec<Arc<Vec<Mine>>> = (0..CALLERS)
        .map(|caller| {
            Arc::new(
                (0..ROUNDS)
                    .map(|round| {
                        let pt = own_dek(caller, round);
                        let e = encrypt_v2(&c, &pt).unwrap();
                        let v1 = encrypt_v1(&c, &pt).unwrap();
                        let other = vault_ok(
                            &bao.addr,
                            &bao.token,
                            "POST",
                            "transit/encrypt/other",
                            Some(serde_json::json!({ "plaintext": b64(&pt) })),
                        );
                        let foreign = other["data"]["ciphertext"].as_str().unwrap().as_bytes().to_vec();
                        Mine {
                            pt,
                            v2: (e.ciphertext, e.key_id),
                            v1,
                            foreign,
                        }
                    })
                    .collect(),
            )
        })
        .collect();

    proxy.set_delay(Duration::from_millis(15));
    let posts_before = proxy.requests();
    let (saved_enc, saved_dec) = (calls_saved(&p, "encrypt"), calls_saved(&p, "decrypt"));
    let requests = {
        let c = c.clone();
        callers_at_once(&mine, 6, move |caller, round, m, case| {
            let mut requests = 1;
            let who = format!("caller {caller} round {round} case {case}");
            match case {
                0 => assert_eq!(decrypt_v2(&c, &m.v2.0, &m.v2.1).expect(&who), m.pt, "{who}"),
                1 => {
                    let (code, msg) = rpc_err(decrypt_v2(&c, &tampered(&m.v2.0), &m.v2.1));
                    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{who}: {msg}");
                }
                2 => {
                    // `other`'s ciphertext under this plugin's
                    // key id: Vault's check with `kube` fails.
                    let (code, msg) = rpc_err(decrypt_v2(&c, &m.foreign, &m.v2.1));
                    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{who}: {msg}");
                }
                3 => assert_eq!(decrypt_v1(&c, &m.v1).expect(&who), m.pt, "{who}"),
                4 => {
                    let (code, msg) = rpc_err(decrypt_v1(&c, &tampered(&m.v1)));
                    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{who}: {msg}");
                }
                _ => {
                    let e = encrypt_v2(&c, &m.pt).expect(&who);
                    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).expect(&who), m.pt, "{who}");
                    requests += 1;
                }
            }
            requests
        })
    };
    let posts = proxy.requests() - posts_before;
    let (saved_enc, saved_dec) = (
        calls_saved(&p, "encrypt") - saved_enc,
        calls_saved(&p, "decrypt") - saved_dec,
    );
    eprintln!("{requests} requests, {posts} transit calls; saved: {saved_enc} encrypt, {saved_dec} decrypt");
    assert_eq!(requests, CALLERS * ROUNDS * 7);
    assert!(saved_dec > 0.0 && saved_enc > 0.0, "nothing was coalesced");
    assert!(posts * 2 < requests as u64, "{posts} calls for {requests} requests");
    p.assert_no_secrets_in_log();
}

#[test]
fn coalescing_off_sends_every_request_alone_and_a_lone_request_is_never_batched() {
    let dir = TempDir::new("coalesce-off");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    proxy.set_delay(Duration::from_millis(15));
    let off = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--coalesce=false"]);
    let c = Arc::new(off.client());
    let before = proxy.requests();
    assert!(encrypt_burst(&c, 32).iter().all(|r| r.is_ok()));
    // One call per request; a health check (one encrypt and one decrypt)
    // may fall in the window too.
    let calls = proxy.requests() - before;
    assert!(
        (32..=34).contains(&calls),
        "--coalesce=false made {calls} calls for 32 requests"
    );
    assert_eq!(calls_saved(&off, "encrypt"), 0.0);
    assert!(off.log_text().contains("coalesce=false"), "the config line shows it");
    drop(off);

    // On (the default), one caller at a time: every call alone, at once.
    let dir2 = TempDir::new("coalesce-lone");
    let on = Plugin::start(dir2.path(), &proxy.addr, &bao.token, &[]);
    let c = on.client();
    let before = proxy.requests();
    for _ in 0..10 {
        let t = Instant::now();
        round_trip_v2(&c);
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    }
    let calls = proxy.requests() - before;
    assert!((20..=22).contains(&calls), "{calls} calls for 20 requests");
    assert_eq!(calls_saved(&on, "encrypt") + calls_saved(&on, "decrypt"), 0.0);
    assert_eq!(
        metric_sum(&on, "trousseau_coalesced_requests_per_call_sum{operation=\"encrypt\"}"),
        metric_sum(
            &on,
            "trousseau_coalesced_requests_per_call_count{operation=\"encrypt\"}"
        ),
        "every call served one request"
    );
}

/// `n` Decrypts of one ciphertext, released at once (a barrier), so they
/// queue behind each other in the key's lane.
fn decrypt_burst(c: &Arc<KmsClient>, e: &v2::EncryptResponse, n: usize) -> Vec<grpcio::Result<Vec<u8>>> {
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (c, e, start) = (c.clone(), e.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                decrypt_v2(&c, &e.ciphertext, &e.key_id)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn a_failing_batch_fails_all_its_requests_with_the_right_code() {
    let dir = TempDir::new("coalesce-fail");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--vault-timeout", "1s"]);
    let c = Arc::new(p.client());
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    proxy.set_delay(Duration::from_millis(15));
    proxy.set_mode(ProxyMode::BadGateway);
    let saved = calls_saved(&p, "decrypt");
    for r in decrypt_burst(&c, &e, 32) {
        let (code, msg) = rpc_err(r);
        assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
    }
    assert!(calls_saved(&p, "decrypt") > saved, "the failures were not coalesced");
    proxy.set_mode(ProxyMode::Forward);
    for r in decrypt_burst(&c, &e, 32) {
        assert_eq!(r.expect("decrypt after the proxy recovered"), pt);
    }
}

#[test]
fn coalesced_requests_follow_a_rotation_and_an_openbao_restart() {
    let dir = TempDir::new("coalesce-rotate");
    let mut bao = Bao::raft(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    proxy.set_delay(Duration::from_millis(10));
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &[]);
    let c = Arc::new(p.client());

    // 32 callers: Encrypt then Decrypt of their own DEK, in a loop, until
    // told to stop; each answer is checked, and failures are counted.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawn_load = || -> Vec<std::thread::JoinHandle<(usize, usize, Vec<String>)>> {
        (0..32)
            .map(|caller| {
                let (c, stop) = (c.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut ok, mut failed, mut key_ids) = (0, 0, Vec::new());
                    let mut round = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        round += 1;
                        let pt = own_dek(caller, round);
                        match encrypt_v2(&c, &pt) {
                            Ok(e) => {
                                if let Ok(back) = decrypt_v2(&c, &e.ciphertext, &e.key_id) {
                                    assert_eq!(back, pt, "caller {caller} got another plaintext");
                                }
                                if !key_ids.contains(&e.key_id) {
                                    key_ids.push(e.key_id);
                                }
                                ok += 1;
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (ok, failed, key_ids)
                })
            })
            .collect()
    };
    let collect = |hs: Vec<std::thread::JoinHandle<(usize, usize, Vec<String>)>>| {
        let (mut ok, mut failed, mut ids) = (0, 0, Vec::new());
        for h in hs {
            let (o, f, k) = h.join().expect("a caller got a wrong answer");
            ok += o;
            failed += f;
            for id in k {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        (ok, failed, ids)
    };

    let old = encrypt_v2(&c, &dek()).unwrap();
    let load = spawn_load();
    std::thread::sleep(Duration::from_millis(500));
    bao.rotate("kube");
    let v2_id = wait_for("Encrypt to use key version 2", Duration::from_secs(15), || {
        let e = encrypt_v2(&c, &dek()).ok()?;
        e.ciphertext.starts_with(b"vault:v2:").then_some(e.key_id)
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, ids) = collect(load);
    eprintln!("rotation under load: {ok} ok, {failed} failed, key ids {ids:?}");
    assert_eq!(failed, 0, "a rotation must not fail requests");
    assert!(ids.contains(&old.key_id) && ids.contains(&v2_id), "{ids:?}");
    assert!(calls_saved(&p, "encrypt") > 0.0);

    // OpenBao restarts under load: requests fail while it is down (never
    // with another caller's answer) and succeed again once it is back.
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let load = spawn_load();
    std::thread::sleep(Duration::from_millis(300));
    bao.restart();
    wait_for("Encrypt to succeed after the restart", Duration::from_secs(30), || {
        encrypt_v2(&c, &dek()).ok()
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, _) = collect(load);
    eprintln!("restart under load: {ok} ok, {failed} failed");
    assert!(ok > 0);
    let back = encrypt_v2(&c, &dek()).unwrap();
    assert_eq!(key_id_base(&back.key_id), key_id_base(&v2_id));
    assert_eq!(decrypt_v2(&c, &old.ciphertext, &old.key_id).unwrap().len(), 32);
    p.assert_no_secrets_in_log();
}
