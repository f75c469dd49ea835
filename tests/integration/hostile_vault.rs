//! Issue 21, 7 and 8: a Vault that is slow but healthy, and one whose
//! error pages echo the request. Through proxies of ours in front of the
//! real OpenBao: the FaultProxy delays each request, the FakeVault answers
//! chosen paths with an error page that holds the whole request.

use crate::harness::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Vault that takes 1.2 s per call, with the default 2 s budget and
/// coalescing on (the defaults): 8 Encrypts at once all succeed, as each
/// would alone, and no request reports Vault unavailable. Queued requests
/// that cannot afford the wait for a call slot go at once (issue 21, 7).
#[test]
fn a_slow_vault_fails_no_coalesced_request() {
    let dir = TempDir::new("slow-coalesce");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &[]);
    let c = Arc::new(p.client());
    assert_eq!(status(&c).healthz, "ok");
    let calls_before = proxy.requests();
    proxy.set_request_delay(Duration::from_millis(1200));

    // A fresh lane (no call timed yet), then one that knows calls take
    // 1.2 s.
    let mut took = Vec::new();
    for burst in ["fresh", "timed"] {
        let t = Instant::now();
        let results = encrypt_burst(&c, 8);
        took.push(t.elapsed());
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| format!("{e:?}")))
            .collect();
        assert!(
            failed.is_empty(),
            "{burst} lane: {} of 8 Encrypts failed against a slow but healthy Vault: {failed:?}",
            failed.len()
        );
    }
    let calls = proxy.requests() - calls_before;
    eprintln!("two bursts of 8 took {took:?}; {calls} transit calls");
    // At most one call per request (and a health check's two).
    assert!(calls <= 18, "{calls} calls for 16 requests");
    assert!(
        !p.log_text().contains("vault unavailable to a request"),
        "a request marked Status unhealthy:\n{}",
        p.log_text()
    );
    assert_eq!(metric_sum(&p, "trousseau_ready "), 1.0, "/metrics says not ready");
    proxy.set_request_delay(Duration::ZERO);
    assert_eq!(status(&c).healthz, "ok");
    round_trip_v2(&c);
}

/// Whether `msg` holds any secret the tests handed out (the DEKs, the
/// token, a secret_id) in any form.
fn assert_clean(what: &str, msg: &str) {
    let leaks = secrets::leaks_in(msg.as_bytes());
    assert!(leaks.is_empty(), "{what}: {leaks:?} in {msg:?}");
}

/// Error pages that echo the request (a 400 and a 500, in Vault's JSON
/// error format and as HTML) put neither the DEK (raw or base64) nor the
/// token into the gRPC error or the log, at the default level and at
/// trace; the error still names the HTTP status (issue 21, 8).
#[test]
fn an_echoing_error_page_puts_no_secret_in_errors_or_logs() {
    let dir = TempDir::new("echo");
    let bao = Bao::dev(dir.path());
    let fake = FakeVault::start(&bao.addr);
    for level in ["info", "trace"] {
        let pdir = TempDir::new(&format!("echo-{level}"));
        let p = Plugin::start_with_env(
            pdir.path(),
            &fake.addr,
            &bao.token,
            &["--vault-timeout", "1s"],
            &[("RUST_LOG", level)],
        );
        let c = Arc::new(p.client());
        let good = encrypt_v2(&c, &dek()).unwrap();
        for (status, json) in [(400, true), (500, true), (400, false), (500, false)] {
            fake.answer("transit/encrypt/kube", Canned::Echo { status, json });
            fake.answer("transit/decrypt/kube", Canned::Echo { status, json });
            let what = format!("{level}: HTTP {status}, json {json}");
            let pt = dek();
            let (_, msg) = rpc_err(encrypt_v2(&c, &pt));
            assert!(msg.contains(&format!("HTTP {status}")), "{what}: {msg}");
            assert_clean(&what, &msg);
            let (_, msg) = rpc_err(decrypt_v2(&c, &good.ciphertext, &good.key_id));
            assert!(msg.contains(&format!("HTTP {status}")), "{what}: {msg}");
            assert_clean(&what, &msg);
            // Coalesced batches: their bodies hold many DEKs.
            let hs: Vec<_> = (0..16)
                .map(|_| {
                    let c = c.clone();
                    std::thread::spawn(move || rpc_err(encrypt_v2(&c, &dek())).1)
                })
                .collect();
            for h in hs {
                let msg = h.join().unwrap();
                assert!(msg.contains(&format!("HTTP {status}")), "{what}: {msg}");
                assert_clean(&what, &msg);
            }
            if json {
                assert!(msg.contains("permission denied"), "Vault's own words are kept: {msg}");
            }
        }
        fake.clear();
        round_trip_v2(&c);
        let log = p.log_text();
        assert!(log.contains("HTTP 500"), "{level}: the failures are logged:\n{log}");
        // Dropping the plugin scans its log for every secret too.
        p.assert_no_secrets_in_log();
    }
}

/// An AppRole login answered by a page that echoes the request: the
/// secret_id is in neither the log nor the error (issue 21, 8).
#[test]
fn an_echoing_login_error_puts_no_secret_id_in_the_log() {
    let dir = TempDir::new("echo-login");
    let bao = Bao::dev(dir.path());
    let role = AppRole::setup(&bao, dir.path(), "kms", PLUGIN_POLICY, serde_json::json!({}));
    let fake = FakeVault::start(&bao.addr);
    fake.answer(
        "auth/approle/login",
        Canned::Echo {
            status: 400,
            json: true,
        },
    );
    let args = role.plugin_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sock = dir.path().join("run/kms.sock");
    let mut p = Plugin::spawn(dir.path(), &sock, &fake.addr, "", &args);
    let log = wait_for("the login failure in the log", Duration::from_secs(20), || {
        let _ = p.try_exit();
        let log = p.log_text();
        log.contains("HTTP 400").then_some(log)
    });
    assert!(log.contains("auth/approle/login"), "{log}");
    let secret_id = std::fs::read_to_string(&role.secret_id_file).unwrap();
    assert!(!log.contains(secret_id.trim()), "secret_id in the log:\n{log}");
    assert_clean("login log", &log);
}
