//! Vault misbehaving: stopped, sealed, slow, denying, missing the key, and
//! the plugin overloaded. Each failure is quick, clear and recoverable.

use crate::harness::*;
use grpcio::RpcStatusCode;
use std::time::{Duration, Instant};

#[test]
fn openbao_stopped_then_back_recovers_without_restart() {
    let dir = TempDir::new("outage");
    let mut bao = Bao::raft(dir.path());
    let mut p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    assert_eq!(status(&c).healthz, "ok");
    let pt = dek();
    let before = encrypt_v2(&c, &pt).unwrap();
    let before_v1 = encrypt_v1(&c, &pt).unwrap();

    bao.stop();
    // Let the healthy Status result age out (HEALTHY_CHECK_TTL is 10 s); in
    // the meantime every Encrypt/Decrypt must fail fast.
    let t0 = Instant::now();
    let mut saw_unhealthy = None;
    while t0.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        let (code, msg) = rpc_err(encrypt_v2(&c, &pt));
        assert!(t.elapsed() < DEADLINE, "encrypt took {:?}", t.elapsed());
        assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
        assert!(msg.contains(&bao.addr), "{msg}");
        let t = Instant::now();
        let (code, _) = rpc_err(decrypt_v2(&c, &before.ciphertext, &before.key_id));
        assert_eq!(code, RpcStatusCode::UNAVAILABLE);
        let (code, _) = rpc_err(decrypt_v1(&c, &before_v1));
        assert_eq!(code, RpcStatusCode::UNAVAILABLE);
        assert!(t.elapsed() < 2 * DEADLINE);
        let t = Instant::now();
        let s = status(&c);
        assert!(t.elapsed() < DEADLINE, "status took {:?}", t.elapsed());
        if s.healthz != "ok" {
            assert!(s.healthz.contains(&bao.addr), "{}", s.healthz);
            assert_eq!(s.version, "v2");
            saw_unhealthy = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = saw_unhealthy.expect("Status stayed ok with OpenBao down");
    eprintln!("Status unhealthy {after:?} after OpenBao stopped");

    let t = Instant::now();
    bao.restart();
    let recovered = loop {
        let s = status(&c);
        if s.healthz == "ok" {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never recovered: {}", s.healthz);
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("healthy again {recovered:?} after restart began");
    assert_eq!(decrypt_v2(&c, &before.ciphertext, &before.key_id).unwrap(), pt);
    assert_eq!(decrypt_v1(&c, &before_v1).unwrap(), pt);
    let e = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    assert!(p.try_exit().is_none(), "plugin must not restart");
}

#[test]
fn sealed_vault_is_unavailable_with_status_503() {
    let dir = TempDir::new("sealed");
    let mut bao = Bao::raft(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    vault_ok(&bao.addr, &bao.token, "POST", "sys/seal", None);
    let t = Instant::now();
    let (code, msg) = rpc_err(decrypt_v2(&c, &e.ciphertext, &e.key_id));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
    assert!(
        msg.contains("503") && msg.contains("sealed") && msg.contains(&bao.addr),
        "{msg}"
    );
    bao.unseal();
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
}

#[test]
fn denied_policy_and_missing_key_say_what_to_fix() {
    let dir = TempDir::new("denied");
    let bao = Bao::dev(dir.path());
    // Encrypt allowed, decrypt not.
    let token = bao.token_with_policy(
        "enc-only",
        "path \"transit/encrypt/kube\" { capabilities = [\"update\"] }",
    );
    let p = Plugin::start(dir.path(), &bao.addr, &token, &[]);
    let c = p.client();
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    let (code, msg) = rpc_err(decrypt_v2(&c, &e.ciphertext, &e.key_id));
    assert_eq!(code, RpcStatusCode::PERMISSION_DENIED, "{msg}");
    assert!(
        msg.contains("403") && msg.contains("update") && msg.contains("transit/decrypt/kube"),
        "{msg}"
    );
    assert!(!msg.contains(&token));
    let s = status(&c);
    assert_ne!(s.healthz, "ok", "Status must not be ok when decrypt is denied");
    assert!(s.healthz.contains("transit/decrypt/kube"), "{}", s.healthz);
    drop(p);

    // The key is missing, and the token cannot create it (no upsert).
    let dir2 = TempDir::new("nokey");
    let token = bao.token_with_policy(
        "no-create",
        "path \"transit/encrypt/*\" { capabilities = [\"update\"] }\npath \"transit/decrypt/*\" { capabilities = [\"update\"] }",
    );
    let p = start_with_key(dir2.path(), &bao, &token, "typo-key");
    let c = p.client();
    let (code, msg) = rpc_err(encrypt_v2(&c, &pt));
    assert!(
        code == RpcStatusCode::PERMISSION_DENIED || code == RpcStatusCode::FAILED_PRECONDITION,
        "{code:?} {msg}"
    );
    assert!(msg.contains("transit/encrypt/typo-key"), "{msg}");
    let (code, msg) = rpc_err(decrypt_v1(&c, b"vault-transit:transit/typo-key:vault:v1:AAAA"));
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("typo-key") && msg.contains("not found"), "{msg}");
    // Nothing was created behind the operator's back.
    let (s, _) = vault_call(&bao.addr, &bao.token, "GET", "transit/keys/typo-key", None);
    assert_eq!(s, 404);
}

fn start_with_key(dir: &std::path::Path, bao: &Bao, token: &str, key: &str) -> Plugin {
    let sock = dir.join(format!("{key}.sock"));
    let mut p = Plugin::spawn_raw(dir, &sock, &bao.addr, token, &["--transit-key", key]);
    p.wait_for_socket();
    p
}

#[test]
fn slow_vault_times_out_within_the_deadline() {
    let dir = TempDir::new("slow");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--vault-timeout", "1s"]);
    let c = p.client();
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    proxy.set_delay(Duration::from_millis(2500));
    let t = Instant::now();
    let (code, msg) = rpc_err(decrypt_v2(&c, &e.ciphertext, &e.key_id));
    let took = t.elapsed();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
    assert!(msg.contains("did not answer within"), "{msg}");
    assert!(took < Duration::from_millis(2500), "took {took:?} with a 1s budget");
    let t = Instant::now();
    let s = status(&c);
    assert!(t.elapsed() < DEADLINE);
    let _ = s;
    proxy.set_delay(Duration::ZERO);
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
}

#[test]
fn overload_gets_resource_exhausted_not_a_pile_up() {
    let dir = TempDir::new("overload");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--max-in-flight", "2"]);
    let c = std::sync::Arc::new(p.client());
    assert_eq!(status(&c).healthz, "ok");
    proxy.set_delay(Duration::from_millis(500));
    let mut ok = 0;
    let mut exhausted = 0;
    for r in encrypt_burst(&c, 8) {
        match r {
            Ok(()) => ok += 1,
            Err(grpcio::Error::RpcFailure(s)) if s.code() == RpcStatusCode::RESOURCE_EXHAUSTED => {
                assert!(s.message().contains("max-in-flight"), "{}", s.message());
                exhausted += 1
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(ok >= 2 && exhausted >= 1, "ok={ok} exhausted={exhausted}");
    proxy.set_delay(Duration::ZERO);
    round_trip_v2(&c);
}

#[test]
fn documented_least_privilege_policy_is_enough() {
    let dir = TempDir::new("policy");
    let bao = Bao::dev(dir.path());
    let hcl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/vault/policy.hcl")).unwrap();
    let token = bao.token_with_policy("trousseau", &hcl);
    let p = Plugin::start(dir.path(), &bao.addr, &token, &[]);
    let c = p.client();
    assert_eq!(status(&c).healthz, "ok");
    round_trip_v2(&c);
    let pt = dek();
    let cipher = encrypt_v1(&c, &pt).unwrap();
    assert_eq!(decrypt_v1(&c, &cipher).unwrap(), pt);
    // The same token cannot create, rotate or delete keys.
    for (method, path) in [
        ("POST", "transit/keys/new-key"),
        ("POST", "transit/keys/kube/rotate"),
        ("DELETE", "transit/keys/kube"),
    ] {
        let (s, _) = vault_call(&bao.addr, &token, method, path, Some(serde_json::json!({})));
        assert_eq!(s, 403, "{method} {path}");
    }
}

#[test]
fn tls_verified_with_the_given_ca_and_refused_without_it() {
    let dir = TempDir::new("tls");
    let (bao, ca) = Bao::dev_tls(dir.path());
    let pt = dek();

    let p = Plugin::start(
        dir.path(),
        &bao.addr,
        &bao.token,
        &["--vault-cacert", ca.to_str().unwrap()],
    );
    let c = p.client();
    assert_eq!(status(&c).healthz, "ok");
    let e = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    drop(p);

    // Without the CA the bundled web PKI roots do not trust the dev CA: the
    // start-up session check fails with a message that says what to set.
    let dir2 = TempDir::new("tls-noca");
    let sock = dir2.path().join("kms.sock");
    let mut p = Plugin::spawn(dir2.path(), &sock, &bao.addr, &bao.token, &[]);
    let st = p.wait_exit(Duration::from_secs(15));
    let msg = p.log_text();
    assert_eq!(st.code(), Some(1), "{msg}");
    assert!(
        msg.contains(&bao.addr) && msg.contains("TLS handshake failed") && msg.contains("--vault-cacert"),
        "{msg}"
    );
    assert!(!sock.exists() && !msg.contains("panicked"), "{msg}");
    drop(p);

    // Skipping verification works, and says so loudly.
    let dir3 = TempDir::new("tls-skip");
    let p = Plugin::start(dir3.path(), &bao.addr, &bao.token, &["--vault-skip-verify"]);
    let c = p.client();
    let e = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    assert!(p.log_text().contains("TLS VERIFICATION OF VAULT IS DISABLED"));
}

#[test]
fn vault_traffic_is_bounded_status_bursts_share_one_probe_and_encrypt_is_one_call() {
    let dir = TempDir::new("traffic");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &[]);
    let c = std::sync::Arc::new(p.client());
    // The first Status waits for (or is) the start-up probe.
    assert_eq!(status(&c).healthz, "ok");
    let warm = proxy.requests();
    // POSTs only: the probe's read of the key's metadata is a GET.
    assert_eq!(warm, 2, "one probe is one encrypt and one decrypt");

    // 64 concurrent Status calls while the probe result is fresh: no Vault call.
    let burst = |n: usize| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || status(&c))
            })
            .collect();
        for h in hs {
            let s = h.join().unwrap();
            assert_eq!(s.healthz, "ok");
            assert_eq!(key_id_base(&s.key_id), "vault-transit:transit/kube:v1");
        }
    };
    burst(64);
    assert_eq!(proxy.requests(), warm, "a burst of fresh Status calls reached Vault");

    // Encrypt derives key_id from Vault's answer: exactly one call each.
    for _ in 0..5 {
        encrypt_v2(&c, &dek()).unwrap();
    }
    assert_eq!(proxy.requests(), warm + 5, "Encrypt made extra Vault calls");
    let e = encrypt_v2(&c, &dek()).unwrap();
    decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap();
    assert_eq!(proxy.requests(), warm + 7);

    // Cold start with a slow Vault: a burst of Status calls joins the one
    // probe in flight instead of each probing.
    let dir2 = TempDir::new("traffic-cold");
    let slow = FaultProxy::start(&bao.addr);
    slow.set_delay(Duration::from_millis(300));
    let p2 = Plugin::start(dir2.path(), &slow.addr, &bao.token, &[]);
    let c2 = std::sync::Arc::new(p2.client());
    let hs: Vec<_> = (0..64)
        .map(|_| {
            let c = c2.clone();
            std::thread::spawn(move || status(&c).healthz)
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), "ok");
    }
    assert_eq!(slow.requests(), 2, "each Status probed Vault on its own");
}

#[test]
fn cut_connections_and_bad_gateway_are_unavailable_and_recover() {
    let dir = TempDir::new("cut");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &[]);
    let c = p.client();
    round_trip_v2(&c);
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();

    proxy.set_mode(ProxyMode::Cut);
    let t = Instant::now();
    let (code, msg) = rpc_err(decrypt_v2(&c, &e.ciphertext, &e.key_id));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
    assert!(msg.contains(&proxy.addr), "{msg}");

    proxy.set_mode(ProxyMode::BadGateway);
    let (code, msg) = rpc_err(encrypt_v2(&c, &pt));
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
    assert!(msg.contains("HTTP 502") && msg.contains(&proxy.addr), "{msg}");
    assert!(msg.len() < 600, "error text not bounded: {msg}");

    // Back to normal: the pool's dead connections are replaced silently.
    proxy.set_mode(ProxyMode::Forward);
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    round_trip_v2(&c);
    assert!(p.log_text().contains("outcome=vault_unavailable"));
}

/// A slow but healthy active node listed with two dead ones is not cut
/// short by their shares of the budget: with --vault-timeout 3s the node
/// that answered last gets 2.5 s, not 1 s, so a 1.1 s answer (the fault
/// proxy delays each chunk; a request is one or two) still arrives.
#[test]
fn a_slow_preferred_node_keeps_most_of_the_budget() {
    let dir = TempDir::new("slow-preferred");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let dead = |_| format!("http://127.0.0.1:{}", free_port());
    let addrs = [proxy.addr.clone(), dead(1), dead(2)].join(",");
    let p = Plugin::start(dir.path(), &addrs, &bao.token, &["--vault-timeout", "3s"]);
    let c = p.client();
    round_trip_v2(&c);
    proxy.set_delay(Duration::from_millis(1100));
    let pt = dek();
    let t = Instant::now();
    let e = encrypt_v2(&c, &pt).expect("encrypt through the slow preferred node");
    eprintln!("slow preferred node: encrypt took {:?}", t.elapsed());
    proxy.set_delay(Duration::ZERO);
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
}

/// The work for a request ends soon after the caller's gRPC deadline, not
/// at `--vault-timeout`: with Vault 4 s slow, a 10 s budget and a 500 ms
/// deadline, the plugin gives the call up (logged as `outcome=deadline`)
/// about when the apiserver did, and serves normally once Vault is fast.
#[test]
fn work_ends_at_the_callers_deadline() {
    let dir = TempDir::new("caller-deadline");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--vault-timeout", "10s"]);
    let c = p.client();
    // The start-up health check is over before Vault turns slow.
    assert_eq!(status(&c).healthz, "ok");
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    proxy.set_delay(Duration::from_secs(4));
    let mut r = v2::DecryptRequest::new();
    r.ciphertext = e.ciphertext.clone();
    r.key_id = e.key_id.clone();
    r.uid = "short-deadline".into();
    let opt = grpcio::CallOption::default().timeout(Duration::from_millis(500));
    let (code, _) = rpc_err(c.v2.decrypt(&r, opt));
    assert_eq!(code, RpcStatusCode::DEADLINE_EXCEEDED);
    // The plugin's own account of that request, once it has ended.
    let t = Instant::now();
    let line = loop {
        let log = p.log_text();
        if let Some(l) = log.lines().find(|l| l.contains("uid=short-deadline")) {
            break l.to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the request was still running 3 s after its deadline\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("outcome=deadline"), "{line}");
    let ms: f64 = line
        .split("latency_ms=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no latency in {line}"));
    assert!((450.0..1500.0).contains(&ms), "ended after {ms} ms: {line}");
    proxy.set_delay(Duration::ZERO);
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    assert_eq!(status(&c).healthz, "ok", "a caller leaving is no evidence of an outage");
}

/// A burst wider than the per-node connection cap (32) waits for free
/// connections instead of opening one per request: with Vault 150 ms slow
/// per chunk sent and 96 Encrypts at once, every one succeeds within its budget and no more
/// than 32 connections to the node are ever open at once. Coalescing is off:
/// it would fold the burst into a couple of calls (tests/integration/coalesce.rs),
/// and the cap is for the calls that cannot be folded (many keys, or
/// `--coalesce=false`).
#[test]
fn a_burst_shares_at_most_32_connections_per_node() {
    let dir = TempDir::new("connection-cap");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--coalesce=false"]);
    let c = std::sync::Arc::new(p.client());
    assert_eq!(status(&c).healthz, "ok");
    proxy.set_delay(Duration::from_millis(150));
    let failed: Vec<_> = encrypt_burst(&c, 96).into_iter().filter_map(Result::err).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let most = proxy.most_open();
    assert!((8..=32).contains(&most), "{most} connections open at once");
    proxy.set_delay(Duration::ZERO);
    round_trip_v2(&c);
}
