//! Vault auth methods: the plugin logs in with each against a real OpenBao.

use crate::harness::*;
use serde_json::json;

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
        let (s, _) = vault_call(&bao.addr, token, "GET", "transit/keys/kube", None);
        assert_eq!(s, 403, "policy must not grant read");
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
