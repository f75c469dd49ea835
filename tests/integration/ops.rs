//! What operators touch: the HTTP endpoints while Vault goes down and comes
//! back, `/metrics` read with Prometheus' own OpenMetrics parser, `trousseau
//! check` against a good setup and each broken one, `trousseau probe`.

use crate::harness::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn http_get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

/// Parses an exposition with prometheus_client's strict OpenMetrics parser
/// and returns `name{k="v",...}` (labels sorted) -> value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(test_python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "/metrics does not parse as OpenMetrics (or prometheus_client is missing: run scripts/test.sh): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn http_endpoints_follow_vault_down_and_back() {
    let dir = TempDir::new("http");
    let mut bao = Bao::raft(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();

    let (code, body) = http_get(&format!("{}/livez", p.http));
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = http_get(&format!("{}/readyz", p.http));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("vault-transit:transit/kube:v1@"), "{body}");
    assert_eq!(http_get(&format!("{}/healthz", p.http)).0, 200);
    assert_eq!(http_get(&format!("{}/nothing", p.http)).0, 404);

    let enc_ok = "trousseau_kms_requests_total{api=\"v2\",operation=\"encrypt\",outcome=\"ok\"}";
    let dec_ok = "trousseau_kms_requests_total{api=\"v2\",operation=\"decrypt\",outcome=\"ok\"}";
    let vault_enc = "trousseau_vault_requests_total{endpoint=\"encrypt\",status=\"200\"}";
    let before = parse_metrics(&http_get(&format!("{}/metrics", p.http)).1);
    for _ in 0..5 {
        round_trip_v2(&c);
    }
    let after = parse_metrics(&http_get(&format!("{}/metrics", p.http)).1);
    assert_eq!(metric(&after, enc_ok) - metric(&before, enc_ok), 5.0);
    assert_eq!(metric(&after, dec_ok) - metric(&before, dec_ok), 5.0);
    assert!(metric(&after, vault_enc) - metric(&before, vault_enc) >= 5.0);
    assert!(
        metric(
            &after,
            "trousseau_kms_request_duration_seconds_count{api=\"v2\",operation=\"encrypt\"}"
        ) >= 5.0
    );
    assert_eq!(metric(&after, "trousseau_transit_key_version{}"), 1.0);
    assert_eq!(metric(&after, "trousseau_ready{}"), 1.0);
    assert_eq!(metric(&after, "trousseau_kms_requests_in_flight{}"), 0.0);
    assert_eq!(
        metric(&after, "trousseau_vault_token_ttl_seconds{}"),
        -1.0,
        "a root token never expires"
    );
    assert_eq!(
        metric(
            &after,
            &format!("trousseau_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );

    // Vault down: liveness stays, readiness flips with the reason.
    bao.stop();
    let t = Instant::now();
    let why = loop {
        assert_eq!(
            http_get(&format!("{}/livez", p.http)).0,
            200,
            "livez must not follow Vault"
        );
        let (code, body) = http_get(&format!("{}/readyz", p.http));
        if code == 503 {
            break body;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "readyz still {code} after 20 s");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("readyz 503 after {:?}: {why}", t.elapsed());
    assert!(why.contains(&bao.addr) && why.contains("unreachable"), "{why}");
    assert!(
        http_get(&format!("{}/metrics", p.http)).1.contains("trousseau_ready 0"),
        "ready gauge still 1"
    );
    let m = parse_metrics(&http_get(&format!("{}/metrics", p.http)).1);
    assert!(m
        .keys()
        .any(|k| k.starts_with("trousseau_vault_requests_total{endpoint=\"encrypt\",status=\"error\"}")));

    // Back: readiness recovers without a restart.
    let t = Instant::now();
    bao.restart();
    loop {
        let (code, _) = http_get(&format!("{}/readyz", p.http));
        if code == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "readyz not back after 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("readyz 200 again {:?} after the restart began", t.elapsed());
    round_trip_v2(&c);
}

/// Runs `trousseau check` with VAULT_ADDR/VAULT_TOKEN and `args`.
fn check(addr: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(plugin_bin())
        .arg("check")
        .args(args)
        .env_clear()
        .env("VAULT_ADDR", addr)
        .env("VAULT_TOKEN", token)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_passes_a_good_setup_and_names_the_step_that_fails() {
    let dir = TempDir::new("check");
    let bao = Bao::dev(dir.path());
    let good = bao.token_with_policy(
        "kms-read",
        "path \"transit/encrypt/kube\" { capabilities = [\"update\"] }\n\
         path \"transit/decrypt/kube\" { capabilities = [\"update\"] }\n\
         path \"transit/keys/kube\" { capabilities = [\"read\"] }\n",
    );
    let (code, out) = check(&bao.addr, &good, &["--transit-key", "kube"]);
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    for step in [
        "ok    vault",
        "ok    auth",
        "ok    key",
        "ok    encrypt",
        "ok    decrypt",
        "ok    round trip",
    ] {
        assert!(out.contains(step), "{step} missing:\n{out}");
    }
    assert!(
        out.contains("aes256-gcm96") && out.contains("all checks passed"),
        "{out}"
    );
    assert!(!out.contains(&good), "token in the output");

    // Wrong address: the vault step fails with advice.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, out) = check(&dead, &good, &["--transit-key", "kube"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  vault") && out.contains(&dead) && out.contains("fix: check --vault-addr"),
        "{out}"
    );
    assert!(!out.contains("ok    auth"), "{out}");

    // Bad token: the auth step.
    let (code, out) = check(&bao.addr, "s.not-a-token", &["--transit-key", "kube"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ok    vault") && out.contains("FAIL  auth") && out.contains("lookup-self"),
        "{out}"
    );
    assert!(!out.contains("s.not-a-token"), "token in the output");

    // Missing key: the key step, and check must not create the key even
    // with a token that could.
    let (code, out) = check(&bao.addr, &bao.token, &["--transit-key", "nokey"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  key") && out.contains("vault write -f transit/keys/nokey"),
        "{out}"
    );
    let (s, _) = vault_call(&bao.addr, &bao.token, "GET", "transit/keys/nokey", None);
    assert_eq!(s, 404, "check created the key");

    // A policy without decrypt (and without read: the key step warns).
    let no_decrypt = bao.token_with_policy(
        "kms-enc-only",
        "path \"transit/encrypt/kube\" { capabilities = [\"update\"] }\n",
    );
    let (code, out) = check(&bao.addr, &no_decrypt, &["--transit-key", "kube"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("warn  key") && out.contains("grant \"read\"") && out.contains("ok    encrypt"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  decrypt") && out.contains("grant \"update\" on transit/decrypt/kube"),
        "{out}"
    );

    // A --decrypt-key the policy does not cover.
    bao.create_key("old");
    let (code, out) = check(&bao.addr, &good, &["--transit-key", "kube", "--decrypt-key", "old"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  decrypt-key") && out.contains("transit/decrypt/old"),
        "{out}"
    );
    let (code, out) = check(
        &bao.addr,
        &bao.token,
        &["--transit-key", "kube", "--decrypt-key", "old"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok    decrypt-key  transit/old: decrypt allowed"), "{out}");

    // Bad configuration is exit 2, as for serve.
    let (code, out) = check(&bao.addr, &good, &[]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn probe_command_reports_each_call() {
    let dir = TempDir::new("probe-cmd");
    let mut bao = Bao::raft(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let run = || {
        let out = Command::new(plugin_bin())
            .args(["probe", "--socket", p.socket.to_str().unwrap()])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    for step in [
        "v2 Status",
        "v2 Encrypt",
        "v2 Decrypt",
        "v1beta1 Version",
        "v1beta1 Encrypt",
        "v1beta1 Decrypt",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(step)),
            "{step}:\n{out}"
        );
    }
    bao.stop();
    let (code, out) = run();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("FAIL") && out.contains("UNAVAILABLE"), "{out}");
}

/// Bad HTTP input gets a clear status and leaves the endpoints working.
#[test]
fn http_endpoints_refuse_bad_requests() {
    use std::io::{Read, Write};
    let dir = TempDir::new("http-bad");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let hostport = p.http.trim_start_matches("http://").to_owned();
    let raw = |req: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(&hostport).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(req);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(raw(b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(raw(&vec![b'a'; 9000]).starts_with("HTTP/1.1 400"));
    assert!(raw(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").starts_with("HTTP/1.1 405"));
    let head = raw(b"HEAD /livez HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head:?}"
    );
    // A client that never finishes its request is cut off; others are served.
    let mut idle = std::net::TcpStream::connect(&hostport).unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\n").unwrap();
    assert_eq!(http_get(&format!("{}/livez", p.http)).0, 200);
    idle.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    let mut out = String::new();
    let _ = idle.read_to_string(&mut out);
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "slow client held {:?}",
        t.elapsed()
    );
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out:?}");
}
