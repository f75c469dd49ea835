//! Status tells the truth right after a request saw Vault fail: a cached
//! "ok" is not answered for the rest of its lifetime once an Encrypt has
//! timed out against a frozen Vault, and a client's own mistake (a bad
//! ciphertext) does not make Status flap (issue 21, "Also").

use std::time::{Duration, Instant};

use super::harness::*;

#[test]
fn status_checks_again_after_a_request_found_vault_frozen_but_not_after_a_bad_ciphertext() {
    let dir = TempDir::new("health-signal");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--vault-timeout", "2s"]);
    let c = p.client();
    assert_eq!(status(&c).healthz, "ok");

    // A client's mistake is no Vault failure: Status stays ok, from its cache.
    let e = encrypt_v2(&c, &dek()).unwrap();
    let mut bad = e.ciphertext.clone();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let (code, _) = rpc_err(decrypt_v2(&c, &bad, &e.key_id));
    assert_eq!(code, grpcio::RpcStatusCode::INVALID_ARGUMENT);
    let before = proxy.requests();
    assert_eq!(status(&c).healthz, "ok");
    assert_eq!(
        proxy.requests(),
        before,
        "a bad ciphertext made Status check Vault again"
    );

    // Vault freezes: every answer takes far longer than the budget. Eight
    // Encrypts at once (some queue behind the key's two call slots) while
    // an apiserver-like poller keeps asking Status.
    proxy.set_delay(Duration::from_secs(30));
    let t = Instant::now();
    let c = std::sync::Arc::new(c);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.v2.status(&v2::StatusRequest::new(), c.opt());
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let outcomes = encrypt_burst(&c, 8);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.join();
    for r in outcomes {
        let (code, msg) = rpc_err(r);
        assert_eq!(code, grpcio::RpcStatusCode::UNAVAILABLE, "{msg}");
    }
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // The very next Status must not answer "ok" from the cache.
    let s =
        c.v2.status(&v2::StatusRequest::new(), c.opt())
            .map(|s| s.healthz)
            .unwrap_or_else(|e| format!("{e:?}"));
    assert_ne!(
        s, "ok",
        "Status answered ok from its cache right after Vault failed a request"
    );

    // Vault back: Status recovers.
    proxy.set_delay(Duration::ZERO);
    wait_for("Status ok again", Duration::from_secs(15), || {
        (status(&c).healthz == "ok").then_some(())
    });
}

/// The health check's read of the key's versions (for key ids) is part of
/// the check: when Vault answers the round trip but not that read within
/// the budget, Status says so instead of "ok" with the read's failure
/// only in a debug line.
#[test]
fn a_key_read_vault_does_not_answer_fails_the_health_check() {
    let dir = TempDir::new("health-read");
    let bao = Bao::dev(dir.path());
    let fake = FakeVault::start(&bao.addr);
    let p = Plugin::start(dir.path(), &fake.addr, &bao.token, &["--vault-timeout", "1s"]);
    let c = p.client();
    assert_eq!(status(&c).healthz, "ok");
    fake.answer(
        "transit/keys/kube",
        Canned::Drip {
            len: 1000,
            every: Duration::from_millis(50),
        },
    );
    // Once the cached "ok" is over (HEALTHY_CHECK_TTL, 10 s), the next
    // check meets the read that does not end.
    std::thread::sleep(Duration::from_millis(10_200));
    let s = status(&c);
    assert_ne!(s.healthz, "ok", "Status ok while Vault did not answer the key's read");
    assert!(s.healthz.contains("reading the key's versions"), "{}", s.healthz);
    fake.clear();
    wait_for("Status ok again", Duration::from_secs(5), || {
        (status(&c).healthz == "ok").then_some(())
    });
}
