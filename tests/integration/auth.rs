//! Vault auth methods: the plugin logs in with each against a real OpenBao,
//! with a least-privilege policy, and refuses to start when it cannot.

use crate::harness::*;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a failing start may take before the plugin must have exited.
const FAIL_FAST: Duration = Duration::from_secs(15);
const SA_UID: &str = "0d6c4b2e-1111-4c1e-9a0e-5f3e2b7c9d01";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `text` to `dir/name` and returns the path.
fn file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts the plugin (key `kube`, no VAULT_TOKEN unless `token` is set) and
/// checks it serves: Status healthy and a v2 round trip.
fn start_healthy(dir: &Path, addr: &str, token: &str, extra: &[&str]) -> Plugin {
    let p = Plugin::start(dir, addr, token, extra);
    let c = p.client();
    let st = status(&c);
    assert_eq!(st.healthz, "ok", "{}", p.log_text());
    assert!(st.key_id.contains('@'), "{}", st.key_id);
    assert_eq!(key_id_base(&st.key_id), "vault-transit:transit/kube:v1");
    round_trip_v2(&c);
    p
}

/// Starts the plugin and expects it to give up: exit status 1 within
/// [`FAIL_FAST`], the socket never created, no panic. Returns its log.
fn start_fails(dir: &Path, addr: &str, token: &str, extra: &[&str]) -> String {
    let sock = dir.join("run/kms.sock");
    let mut p = Plugin::spawn(dir, &sock, addr, token, extra);
    let t = Instant::now();
    let st = loop {
        assert!(
            !sock.exists(),
            "socket created although start-up failed:\n{}",
            p.log_text()
        );
        if let Some(st) = p.try_exit() {
            break st;
        }
        assert!(
            t.elapsed() < FAIL_FAST,
            "still running after {FAIL_FAST:?}:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = p.log_text();
    assert_eq!(st.code(), Some(1), "{st}:\n{log}");
    assert!(!sock.exists(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("start-up refused after {:?}:\n{log}", t.elapsed());
    log
}

/// AppRole `kms` at `mount` with the plugin policy; returns its role_id.
fn approle(bao: &Bao, mount: &str) -> String {
    bao.put_policy("kms", PLUGIN_POLICY);
    bao.enable_auth(mount, "approle");
    bao.write(&format!("auth/{mount}/role/kms"), json!({"token_policies": ["kms"]}));
    let v = vault_ok(
        &bao.addr,
        &bao.token,
        "GET",
        &format!("auth/{mount}/role/kms/role-id"),
        None,
    );
    v["data"]["role_id"].as_str().unwrap().to_owned()
}

fn new_secret_id(bao: &Bao, mount: &str) -> String {
    let v = bao.write(&format!("auth/{mount}/role/kms/secret-id"), json!({}));
    v["data"]["secret_id"].as_str().unwrap().to_owned()
}

/// Cert auth at `cert/` trusting `pki`'s CA for CN `trousseau-plugin`.
fn cert_role(bao: &Bao, pki: &Pki) {
    bao.put_policy("kms", PLUGIN_POLICY);
    bao.enable_auth("cert", "cert");
    let ca = std::fs::read_to_string(&pki.ca).unwrap();
    bao.write(
        "auth/cert/certs/kms",
        json!({"certificate": ca, "allowed_common_names": [CLIENT_CN], "token_policies": ["kms"]}),
    );
}

#[test]
fn token_from_file() {
    let dir = TempDir::new("auth-token");
    let bao = Bao::dev(dir.path());
    let token = bao.token_with_policy("kms", PLUGIN_POLICY);
    let f = file(dir.path(), "token", &format!("{token}\n"));
    let p = start_healthy(
        dir.path(),
        &bao.addr,
        "",
        &["--auth-method", "token", "--vault-token-file", s(&f)],
    );
    assert!(!p.log_text().contains(&token), "token in log");
}

#[test]
fn approle_at_a_custom_mount() {
    let dir = TempDir::new("auth-approle");
    let bao = Bao::dev(dir.path());
    let role_id = approle(&bao, "kms-approle");
    let secret_id = new_secret_id(&bao, "kms-approle");
    let rf = file(dir.path(), "role-id", &role_id);
    let sf = file(dir.path(), "secret-id", &format!("{secret_id}\n"));
    let p = start_healthy(
        dir.path(),
        &bao.addr,
        "",
        &[
            "--auth-method",
            "approle",
            "--auth-mount",
            "kms-approle",
            "--approle-role-id-file",
            s(&rf),
            "--approle-secret-id-file",
            s(&sf),
        ],
    );
    assert!(!p.log_text().contains(&secret_id), "secret_id in log");
}

/// Transit and AppRole inside an OpenBao namespace: with --vault-namespace
/// the plugin logs in and serves there; without it the login is refused at
/// start (the role exists only inside the namespace).
#[test]
fn approle_and_transit_in_a_namespace() {
    let dir = TempDir::new("auth-ns");
    let bao = Bao::dev(dir.path());
    // Namespaced paths can be addressed as `<ns>/<path>` by the harness.
    bao.write("sys/namespaces/team", json!({}));
    bao.write("team/sys/mounts/transit", json!({"type": "transit"}));
    bao.write("team/transit/keys/kube", json!({}));
    bao.write("team/sys/policies/acl/kms", json!({ "policy": PLUGIN_POLICY }));
    bao.write("team/sys/auth/approle", json!({"type": "approle"}));
    bao.write("team/auth/approle/role/kms", json!({"token_policies": ["kms"]}));
    let v = vault_ok(&bao.addr, &bao.token, "GET", "team/auth/approle/role/kms/role-id", None);
    let rf = file(dir.path(), "role-id", v["data"]["role_id"].as_str().unwrap());
    let v = bao.write("team/auth/approle/role/kms/secret-id", json!({}));
    let sf = file(dir.path(), "secret-id", v["data"]["secret_id"].as_str().unwrap());
    let args = [
        "--auth-method",
        "approle",
        "--approle-role-id-file",
        s(&rf),
        "--approle-secret-id-file",
        s(&sf),
    ];
    let mut with_ns = args.to_vec();
    with_ns.extend(["--vault-namespace", "team"]);
    let p = start_healthy(dir.path(), &bao.addr, "", &with_ns);
    drop(p);
    let dir2 = TempDir::new("auth-ns-missing");
    let log = start_fails(dir2.path(), &bao.addr, "", &args);
    assert!(log.contains("auth/approle/login"), "{log}");
}

#[test]
fn approle_logs_in_again_after_max_ttl_with_the_rotated_secret_id() {
    let dir = TempDir::new("auth-approle-relogin");
    let bao = Bao::dev(dir.path());
    let role_id = approle(&bao, "approle");
    // Tokens that cannot outlive 8 s: the plugin must log in again.
    bao.write(
        "auth/approle/role/kms",
        json!({"token_policies": ["kms"], "token_ttl": "4s", "token_max_ttl": "8s"}),
    );
    let old = new_secret_id(&bao, "approle");
    let rf = file(dir.path(), "role-id", &role_id);
    let sf = file(dir.path(), "secret-id", &old);
    let p = start_healthy(
        dir.path(),
        &bao.addr,
        "",
        &[
            "--auth-method",
            "approle",
            "--approle-role-id-file",
            s(&rf),
            "--approle-secret-id-file",
            s(&sf),
        ],
    );
    // Rotate the secret_id the way a deployer would: new file, old one revoked.
    let new = new_secret_id(&bao, "approle");
    file(dir.path(), "secret-id.tmp", &new);
    std::fs::rename(dir.path().join("secret-id.tmp"), &sf).unwrap();
    bao.write("auth/approle/role/kms/secret-id/destroy", json!({ "secret_id": old }));
    std::thread::sleep(Duration::from_secs(10));
    let c = p.client();
    round_trip_v2(&c);
    assert_eq!(status(&c).healthz, "ok", "{}", p.log_text());
}

#[test]
fn cert_over_tls_with_a_client_certificate() {
    let dir = TempDir::new("auth-cert");
    let pki = Pki::new(dir.path(), "vault.trousseau.test");
    let (bao, tls) = Bao::dev_own_tls(dir.path(), &pki);
    cert_role(&bao, &pki);
    start_healthy(
        dir.path(),
        &tls.https,
        "",
        &[
            "--auth-method",
            "cert",
            "--vault-cacert",
            s(&pki.ca),
            "--vault-client-cert",
            s(&pki.client_cert),
            "--vault-client-key",
            s(&pki.client_key),
        ],
    );
}

#[test]
fn cert_with_tls_server_name_override() {
    let dir = TempDir::new("auth-cert-sni");
    let pki = Pki::new(dir.path(), "vault.trousseau.test");
    let (bao, tls) = Bao::dev_own_tls(dir.path(), &pki);
    cert_role(&bao, &pki);
    // This listener's cert names only vault.trousseau.test, not 127.0.0.1.
    let flags = [
        "--auth-method",
        "cert",
        "--auth-role",
        "kms",
        "--vault-cacert",
        s(&pki.ca),
        "--vault-client-cert",
        s(&pki.client_cert),
        "--vault-client-key",
        s(&pki.client_key),
    ];
    let log = start_fails(dir.path(), &tls.https_dns_only, "", &flags);
    let lower = log.to_lowercase();
    assert!(lower.contains("certificate") || lower.contains("tls"), "{log}");

    let mut with_name = flags.to_vec();
    with_name.extend(["--vault-tls-server-name", &pki.dns_name]);
    start_healthy(dir.path(), &tls.https_dns_only, "", &with_name);
}

#[test]
fn jwt_with_bound_audience() {
    let dir = TempDir::new("auth-jwt");
    let bao = Bao::dev(dir.path());
    let signer = JwtSigner::new(dir.path());
    bao.put_policy("kms", PLUGIN_POLICY);
    bao.enable_auth("jwt", "jwt");
    bao.write(
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [signer.public_pem]}),
    );
    bao.write(
        "auth/jwt/role/kms",
        json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["trousseau"], "token_policies": ["kms"]}),
    );
    let jwt = signer.sign(&json!({"sub": "trousseau-plugin", "aud": "trousseau", "iat": now(), "exp": now() + 3600}));
    let f = file(dir.path(), "jwt", &jwt);
    let p = start_healthy(
        dir.path(),
        &bao.addr,
        "",
        &["--auth-method", "jwt", "--auth-role", "kms", "--jwt-file", s(&f)],
    );
    assert!(!p.log_text().contains(&jwt), "JWT in log");
}

#[test]
fn kubernetes_through_token_review() {
    let dir = TempDir::new("auth-k8s");
    let bao = Bao::dev(dir.path());
    let signer = JwtSigner::new(dir.path());
    let tr = TokenReviewServer::start(&signer);
    let pki = Pki::new(dir.path(), "kubernetes.trousseau.test");
    bao.put_policy("kms", PLUGIN_POLICY);
    bao.enable_auth("kubernetes", "kubernetes");
    // OpenBao wants some CA with disable_local_ca_jwt; plain http ignores it.
    bao.write(
        "auth/kubernetes/config",
        json!({"kubernetes_host": tr.addr, "disable_local_ca_jwt": true,
               "kubernetes_ca_cert": std::fs::read_to_string(&pki.ca).unwrap()}),
    );
    bao.write(
        "auth/kubernetes/role/kms",
        json!({"bound_service_account_names": ["trousseau"], "bound_service_account_namespaces": ["kube-system"],
               "token_policies": ["kms"]}),
    );
    let jwt = signer.sign(&service_account_claims("kube-system", "trousseau", SA_UID));
    let f = file(dir.path(), "sa-token", &jwt);
    let p = start_healthy(
        dir.path(),
        &bao.addr,
        "",
        &["--auth-method", "kubernetes", "--auth-role", "kms", "--jwt-file", s(&f)],
    );
    assert!(tr.authenticated() >= 1, "no TokenReview answered: {}", p.log_text());
    assert!(!p.log_text().contains(&jwt), "JWT in log");
}

#[test]
fn bad_approle_secret_id_refuses_to_start() {
    let dir = TempDir::new("auth-bad-approle");
    let bao = Bao::dev(dir.path());
    let role_id = approle(&bao, "approle");
    let rf = file(dir.path(), "role-id", &role_id);
    let sf = file(dir.path(), "secret-id", "00000000-0000-0000-0000-000000000000");
    let log = start_fails(
        dir.path(),
        &bao.addr,
        "",
        &[
            "--auth-method",
            "approle",
            "--approle-role-id-file",
            s(&rf),
            "--approle-secret-id-file",
            s(&sf),
        ],
    );
    // Method, mount and Vault's own answer.
    assert!(log.contains("approle") && log.contains("auth/approle"), "{log}");
    assert!(log.contains("invalid role or secret ID"), "{log}");
}

#[test]
fn bad_token_refuses_to_start() {
    let dir = TempDir::new("auth-bad-token");
    let bao = Bao::dev(dir.path());
    let bogus = "s.bogusbogusbogusbogus0000";
    let log = start_fails(dir.path(), &bao.addr, bogus, &[]);
    assert!(log.contains("token") && log.contains("lookup-self"), "{log}");
    assert!(log.contains("permission denied"), "{log}");
    assert!(!log.contains(bogus), "token in log");
}

#[test]
fn unreachable_vault_refuses_to_start() {
    let dir = TempDir::new("auth-unreachable");
    let port = free_port();
    let log = start_fails(dir.path(), &format!("http://127.0.0.1:{port}"), "t", &[]);
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
}

#[test]
fn wrong_ca_refuses_to_start() {
    let dir = TempDir::new("auth-wrong-ca");
    let pki = Pki::new(dir.path(), "vault.trousseau.test");
    let (bao, tls) = Bao::dev_own_tls(dir.path(), &pki);
    let log = start_fails(
        dir.path(),
        &tls.https,
        &bao.token,
        &["--vault-cacert", s(&pki.other_ca)],
    );
    let lower = log.to_lowercase();
    assert!(lower.contains("certificate") || lower.contains("tls"), "{log}");
    assert!(log.contains("--vault-cacert"), "{log}");
}

/// Logs in at `auth/<mount>/login` over `agent` and returns the token.
fn login(agent: &ureq::Agent, addr: &str, mount: &str, body: serde_json::Value) -> Result<String, String> {
    let mut r = agent
        .post(format!("{addr}/v1/auth/{mount}/login"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    match v["auth"]["client_token"].as_str() {
        Some(t) if status == 200 => Ok(t.to_owned()),
        _ => Err(format!("HTTP {status}: {v}")),
    }
}

/// The harness alone, without the plugin: each method's server side works.
#[test]
fn harness_self_check_logins() {
    let dir = TempDir::new("auth-harness");
    let pki = Pki::new(dir.path(), "vault.trousseau.test");
    let (bao, tls) = Bao::dev_own_tls(dir.path(), &pki);
    bao.put_policy("kms", PLUGIN_POLICY);
    let plain = agent_plain();
    let encrypt = |token: &str| {
        let (s, v) = vault_call(
            &bao.addr,
            token,
            "POST",
            "transit/encrypt/kube",
            Some(json!({"plaintext": "aGk="})),
        );
        assert_eq!(s, 200, "{v}");
        // Read of the key's metadata only (key ids carry its versions'
        // creation times); nothing of any other key.
        let (s, v) = vault_call(&bao.addr, token, "GET", "transit/keys/kube", None);
        assert_eq!(s, 200, "{v}");
        let (s, _) = vault_call(&bao.addr, token, "GET", "transit/keys/other", None);
        assert_eq!(s, 403, "policy must not grant read of other keys");
    };

    // approle
    bao.enable_auth("approle", "approle");
    bao.write("auth/approle/role/kms", json!({"token_policies": ["kms"]}));
    let role_id = vault_ok(&bao.addr, &bao.token, "GET", "auth/approle/role/kms/role-id", None)["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao.write("auth/approle/role/kms/secret-id", json!({}))["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = login(
        &plain,
        &bao.addr,
        "approle",
        json!({"role_id": role_id, "secret_id": secret_id}),
    )
    .unwrap();
    encrypt(&t);
    let e = login(
        &plain,
        &bao.addr,
        "approle",
        json!({"role_id": role_id, "secret_id": "nope"}),
    )
    .unwrap_err();
    eprintln!("approle with a bad secret_id: {e}");

    // cert: over TLS with the client cert; refused without it.
    bao.enable_auth("cert", "cert");
    let ca = std::fs::read_to_string(&pki.ca).unwrap();
    bao.write(
        "auth/cert/certs/kms",
        json!({"certificate": ca, "token_policies": ["kms"], "allowed_common_names": [CLIENT_CN]}),
    );
    let t = login(&pki.agent(true), &tls.https, "cert", json!({})).unwrap();
    encrypt(&t);
    let t = login(&pki.agent(true), &tls.https, "cert", json!({"name": "kms"})).unwrap();
    encrypt(&t);
    let e = login(&pki.agent(false), &tls.https, "cert", json!({})).unwrap_err();
    eprintln!("cert without a client cert: {e}");
    // The DNS-only listener fails verification when reached by IP.
    let e = login(&pki.agent(true), &tls.https_dns_only, "cert", json!({})).unwrap_err();
    eprintln!("DNS-only cert reached by IP: {e}");
    let port = tls.https_dns_only.rsplit(':').next().unwrap();
    let s_client = |name: &str| {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
            .arg(&pki.ca)
            .args(["-verify_hostname", name, "-verify_return_error", "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let ok = s_client(&pki.dns_name);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!s_client("localhost").status.success());

    // jwt
    let signer = JwtSigner::new(dir.path());
    bao.enable_auth("jwt", "jwt");
    bao.write(
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [signer.public_pem]}),
    );
    bao.write(
        "auth/jwt/role/kms",
        json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["trousseau"], "token_policies": ["kms"]}),
    );
    let claims = |aud: &str| json!({"sub": "trousseau-plugin", "aud": aud, "iat": now(), "exp": now() + 600});
    let t = login(
        &plain,
        &bao.addr,
        "jwt",
        json!({"role": "kms", "jwt": signer.sign(&claims("trousseau"))}),
    )
    .unwrap();
    encrypt(&t);
    let e = login(
        &plain,
        &bao.addr,
        "jwt",
        json!({"role": "kms", "jwt": signer.sign(&claims("other"))}),
    )
    .unwrap_err();
    eprintln!("jwt with a wrong audience: {e}");
    let stranger = JwtSigner::new(dir.path());
    let bad = stranger.sign(&claims("trousseau"));
    assert!(signer.verify(&bad).is_none() && signer.verify(&signer.sign(&claims("x"))).is_some());
    login(&plain, &bao.addr, "jwt", json!({"role": "kms", "jwt": bad})).unwrap_err();

    // kubernetes through our TokenReview endpoint
    let tr = TokenReviewServer::start(&signer);
    bao.enable_auth("kubernetes", "kubernetes");
    bao.write(
        "auth/kubernetes/config",
        json!({"kubernetes_host": tr.addr, "disable_local_ca_jwt": true, "kubernetes_ca_cert": ca}),
    );
    bao.write(
        "auth/kubernetes/role/kms",
        json!({"bound_service_account_names": ["trousseau"], "bound_service_account_namespaces": ["kube-system"],
               "token_policies": ["kms"]}),
    );
    let sa = signer.sign(&service_account_claims(
        "kube-system",
        "trousseau",
        "0d6c4b2e-1111-4c1e-9a0e-5f3e2b7c9d01",
    ));
    let t = login(&plain, &bao.addr, "kubernetes", json!({"role": "kms", "jwt": sa})).unwrap();
    encrypt(&t);
    assert_eq!((tr.reviews(), tr.authenticated()), (1, 1));
    let other_ns = signer.sign(&service_account_claims("default", "trousseau", "u2"));
    let e = login(&plain, &bao.addr, "kubernetes", json!({"role": "kms", "jwt": other_ns})).unwrap_err();
    eprintln!("kubernetes with another namespace: {e}");
    let forged = stranger.sign(&service_account_claims("kube-system", "trousseau", "u3"));
    let e = login(&plain, &bao.addr, "kubernetes", json!({"role": "kms", "jwt": forged})).unwrap_err();
    eprintln!("kubernetes with a forged token: {e}");
    eprintln!("reviews {} authenticated {}", tr.reviews(), tr.authenticated());
    assert_eq!(tr.authenticated(), 1);
}

fn agent_plain() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}
