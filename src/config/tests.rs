//! Unit tests for config resolution: precedence, validation messages.

use super::*;
use crate::secret::Secret;
use crate::session::auth::{AuthConfig, TokenSource};
use std::collections::{BTreeMap, HashMap};

fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn resolve(f: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |k: &str| env.get(k).cloned();
    Config::resolve(&Sources {
        flags: &flags(f),
        env: &lookup,
    })
}

fn tmpfile(name: &str, body: &str) -> String {
    let p = std::env::temp_dir().join(format!("trousseau-cfg-{}-{name}", std::process::id()));
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

pub(crate) fn sample_config() -> Config {
    resolve(
        &[("transit-key", "kube")],
        &[("VAULT_ADDR", "http://127.0.0.1:8200"), ("VAULT_TOKEN", "s.topsecret")],
    )
    .unwrap()
}

#[test]
fn defaults() {
    let c = sample_config();
    assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(c.transit_mount, "transit");
    assert_eq!(c.vault.timeout, DEFAULT_VAULT_TIMEOUT);
    assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(c.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    assert!(!c.vault.skip_verify);
    assert!(c.coalesce, "coalescing is on by default");
    let env = [("VAULT_ADDR", "http://127.0.0.1:8200"), ("VAULT_TOKEN", "t")];
    assert!(
        !resolve(&[("transit-key", "k"), ("coalesce", "false")], &env)
            .unwrap()
            .coalesce
    );
    let e = resolve(&[("transit-key", "k"), ("coalesce", "sometimes")], &env).unwrap_err();
    assert!(e.0.contains("--coalesce") && e.0.contains("not a boolean"), "{e}");
    assert_eq!(
        c.auth,
        AuthConfig::Token(TokenSource::Env(Secret::new("s.topsecret".into())))
    );
    assert_eq!(c.vault.addrs, vec!["http://127.0.0.1:8200".to_owned()]);
    assert!(c.decrypt_keys.is_empty() && c.vault.tls_server_name.is_none() && c.vault.client_cert.is_none());
}

#[test]
fn precedence_flag_env_file_default() {
    let file = tmpfile(
        "prec.json",
        r#"{"vault-addr": "http://file:1", "transit-key": "fromfile", "transit-mount": "m/file", "vault-timeout": "1s"}"#,
    );
    let env = [("VAULT_ADDR", "http://env:1"), ("VAULT_TOKEN", "t")];
    let c = resolve(&[("config", &file)], &env).unwrap();
    assert_eq!(c.vault.addrs, ["http://env:1"], "env beats file");
    assert_eq!(c.transit_key, "fromfile");
    assert_eq!(c.transit_mount, "m/file");
    assert_eq!(c.vault.timeout, Duration::from_secs(1));
    let c = resolve(
        &[
            ("config", &file),
            ("vault-addr", "http://flag:1"),
            ("transit-key", "flagkey"),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(c.vault.addrs, ["http://flag:1"], "flag beats env");
    assert_eq!(c.transit_key, "flagkey", "flag beats file");
}

#[test]
fn token_sources() {
    let tf = tmpfile("token", "  s.fromfile\n");
    let c = resolve(
        &[("transit-key", "k"), ("vault-token-file", &tf)],
        &[("VAULT_ADDR", "http://a:1"), ("VAULT_TOKEN", "s.env")],
    )
    .unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::Token(TokenSource::File(PathBuf::from(&tf))),
        "flag beats VAULT_TOKEN"
    );
    let e = resolve(&[("transit-key", "k")], &[("VAULT_ADDR", "http://a:1")]).unwrap_err();
    assert!(e.0.contains("VAULT_TOKEN"), "{e}");
    let empty = tmpfile("emptytoken", "\n");
    let e = resolve(
        &[("transit-key", "k"), ("vault-token-file", &empty)],
        &[("VAULT_ADDR", "http://a:1")],
    )
    .unwrap_err();
    assert!(e.0.contains("empty"), "{e}");
    let e = resolve(
        &[("transit-key", "k"), ("vault-token-file", "/nonexistent/tok")],
        &[("VAULT_ADDR", "http://a:1")],
    )
    .unwrap_err();
    assert!(e.0.contains("/nonexistent/tok"), "{e}");
}

#[test]
fn auth_methods() {
    let env = [("VAULT_ADDR", "http://a:1"), ("VAULT_TOKEN", "ambient")];
    let rid = tmpfile("rid", "r");
    let sid = tmpfile("sid", "s");
    let c = resolve(
        &[
            ("transit-key", "k"),
            ("auth-method", "approle"),
            ("approle-role-id-file", &rid),
            ("approle-secret-id-file", &sid),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::AppRole {
            mount: "approle".into(),
            role_id_file: rid.clone().into(),
            secret_id_file: sid.into(),
        },
        "VAULT_TOKEN in the environment does not override the chosen method"
    );
    let jwt = tmpfile("jwt", "a.b.c");
    let c = resolve(
        &[
            ("transit-key", "k"),
            ("auth-method", "JWT"),
            ("auth-mount", "/oidc/cp/"),
            ("auth-role", "kms"),
            ("jwt-file", &jwt),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::Jwt {
            mount: "oidc/cp".into(),
            role: "kms".into(),
            jwt_file: jwt.into()
        }
    );
    let c = resolve(
        &[
            ("transit-key", "k"),
            ("auth-method", "kubernetes"),
            ("auth-role", "kms"),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::Kubernetes {
            mount: "kubernetes".into(),
            role: "kms".into(),
            jwt_file: crate::session::auth::DEFAULT_K8S_TOKEN_FILE.into()
        }
    );
    let cert = tmpfile("cert.pem", "x");
    let c = resolve(
        &[
            ("transit-key", "k"),
            ("auth-method", "cert"),
            ("vault-client-cert", &cert),
            ("vault-client-key", &cert),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.auth,
        AuthConfig::Cert {
            mount: "cert".into(),
            role: None
        }
    );
    assert!(!c.summary().contains("ambient"));
}

#[test]
fn addresses_and_decrypt_keys() {
    let env = [("VAULT_TOKEN", "t")];
    let c = resolve(
        &[
            ("transit-key", "new"),
            ("vault-addr", "http://a:1, http://b:1/,http://a:1"),
            ("decrypt-key", "old,older,old"),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.vault.addrs,
        ["http://a:1", "http://b:1"],
        "order kept, duplicates dropped"
    );
    assert_eq!(c.decrypt_keys, ["old", "older"]);
    let f = tmpfile(
        "multi.json",
        r#"{"transit-key": "k", "vault-addr": ["https://v1:8200", "https://v2:8200"], "decrypt-key": ["k0"]}"#,
    );
    let c = resolve(&[("config", &f)], &env).unwrap();
    assert_eq!(c.vault.addrs, ["https://v1:8200", "https://v2:8200"]);
    assert_eq!(c.decrypt_keys, ["k0"]);
    let c = resolve(
        &[("transit-key", "k"), ("vault-addr", "https://v:8200")],
        &[("VAULT_TOKEN", "t"), ("VAULT_TLS_SERVER_NAME", "Vault.Example.")],
    )
    .unwrap();
    assert_eq!(c.vault.tls_server_name.as_deref(), Some("vault.example"));
}

#[test]
fn errors_say_what_to_fix() {
    let env = [("VAULT_ADDR", "http://a:1"), ("VAULT_TOKEN", "t")];
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Pairs, Pairs, &str)] = &[
        (&[], &env, "--transit-key"),
        (&[("transit-key", "k")], &[("VAULT_TOKEN", "t")], "VAULT_ADDR"),
        (&[("transit-key", "k"), ("vault-addr", "vault:8200")], &env, "https://"),
        (
            &[("transit-key", "k"), ("vault-addr", "http://a:1/v1")],
            &env,
            "no path",
        ),
        (&[("transit-key", "bad key")], &env, "--transit-key"),
        (
            &[("transit-key", "k"), ("transit-mount", "a:b")],
            &env,
            "--transit-mount",
        ),
        (&[("transit-key", "k"), ("vault-timeout", "2")], &env, "needs a unit"),
        (&[("transit-key", "k"), ("vault-timeout", "90s")], &env, "out of range"),
        (&[("transit-key", "k"), ("max-in-flight", "0")], &env, "--max-in-flight"),
        (&[("transit-key", "k"), ("socket", "@abstract")], &env, "abstract"),
        (&[("transit-key", "k"), ("bogus", "1")], &env, "unknown flag --bogus"),
        (
            &[("transit-key", "k"), ("vault-cacert", "/nonexistent/ca.pem")],
            &env,
            "/nonexistent/ca.pem",
        ),
        (
            &[("transit-key", "k")],
            &[
                ("VAULT_ADDR", "http://a:1"),
                ("VAULT_TOKEN", "t"),
                ("VAULT_SKIP_VERIFY", "maybe"),
            ],
            "VAULT_SKIP_VERIFY",
        ),
        (&[("transit-key", "k"), ("auth-method", "ldap")], &env, "approle"),
        (
            &[("transit-key", "k"), ("auth-method", "approle")],
            &env,
            "--approle-role-id-file",
        ),
        (&[("transit-key", "k"), ("auth-method", "jwt")], &env, "--auth-role"),
        (
            &[("transit-key", "k"), ("auth-method", "jwt"), ("auth-role", "r")],
            &env,
            "--jwt-file",
        ),
        (
            &[("transit-key", "k"), ("auth-method", "cert")],
            &env,
            "--vault-client-cert",
        ),
        (
            &[("transit-key", "k"), ("jwt-file", "/etc/hostname")],
            &env,
            "not used by --auth-method token",
        ),
        (
            &[("transit-key", "k"), ("auth-method", "approle"), ("auth-role", "r")],
            &env,
            "--auth-role is not used",
        ),
        (
            &[("transit-key", "k"), ("vault-client-cert", "/etc/hostname")],
            &env,
            "set both or neither",
        ),
        (
            &[("transit-key", "k"), ("vault-tls-server-name", "a b")],
            &env,
            "DNS name",
        ),
        (
            &[("transit-key", "k"), ("decrypt-key", "k")],
            &env,
            "--transit-key itself",
        ),
        (
            &[("transit-key", "k"), ("vault-addr", "http://a:1,b:2")],
            &env,
            "https://",
        ),
    ];
    for (f, e, want) in cases {
        let err = resolve(f, e).unwrap_err();
        assert!(err.to_string().contains(want), "{f:?}: {err} lacks {want:?}");
    }
}

#[test]
fn config_file_refusals() {
    let env = [("VAULT_ADDR", "http://a:1"), ("VAULT_TOKEN", "t")];
    for (body, want) in [
        (
            r#"{"transit-key": "k", "trasit-mount": "x"}"#,
            "unknown key \"trasit-mount\"",
        ),
        (r#"["transit-key"]"#, "JSON object"),
        ("{not json", "not valid JSON"),
        (r#"{"transit-key": {"a": 1}}"#, "string, number or boolean"),
        (
            r#"{"transit-key": "k", "max-in-flight": -3}"#,
            "config file key \"max-in-flight\"",
        ),
    ] {
        let f = tmpfile("bad.json", body);
        let err = resolve(&[("config", &f)], &env).unwrap_err();
        assert!(err.to_string().contains(want), "{body}: {err}");
    }
    let err = resolve(&[("config", "/nonexistent/c.json")], &env).unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[test]
fn summary_hides_token() {
    let c = sample_config();
    assert!(!c.summary().contains("topsecret"));
    assert!(!format!("{c:?}").contains("topsecret"));
}

#[test]
fn parsers() {
    assert_eq!(
        parse_socket("unix:///run/k.sock").unwrap(),
        PathBuf::from("/run/k.sock")
    );
    assert_eq!(parse_socket("unix:/run/k.sock").unwrap(), PathBuf::from("/run/k.sock"));
    assert_eq!(parse_socket("/run/k.sock").unwrap(), PathBuf::from("/run/k.sock"));
    assert!(parse_socket("").is_err() && parse_socket("unix://").is_err());
    assert!(parse_socket(&format!("/{}", "a".repeat(120))).is_err());
    assert_eq!(parse_addr("https://v:8200/").unwrap(), "https://v:8200");
    assert_eq!(parse_mount("/kms/transit/").unwrap(), "kms/transit");
    assert!(parse_mount("a//b").is_err());
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    for bad in ["", "s", "-1s", "NaNs", "infs", "1h", "10000m"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert!(parse_bool("TRUE").unwrap() && !parse_bool("0").unwrap() && parse_bool("2").is_err());
}

/// A small deterministic fuzz over every config parser: no input panics,
/// and whatever is accepted is accepted again unchanged (idempotence).
#[test]
fn parsers_never_panic_and_are_idempotent() {
    let alphabet: Vec<char> = "unix:/@.-_a0 9ms{}\"[]:,truehttps/é\u{0}\n".chars().collect();
    let mut rng = crate::testutil::Rng::new(0x2545_f491_4f6c_dd1d);
    for _ in 0..20_000 {
        let s: String = rng.pick(&alphabet, 24).into_iter().collect();
        let _ = parse_config_json(&s);
        let _ = parse_bool(&s);
        let _ = parse_duration(&s);
        let _ = parse_socket(&s);
        if let Ok(a) = parse_addr(&s) {
            assert_eq!(parse_addr(&a).as_deref(), Ok(a.as_str()));
        }
        if let Ok(m) = parse_mount(&s) {
            assert_eq!(parse_mount(&m).as_deref(), Ok(m.as_str()));
            assert!(!m.contains(':'));
        }
        if let Ok(k) = parse_key_name(&s) {
            assert!(!k.contains(':') && !k.contains('/'));
        }
    }
}

#[test]
fn local_kek_options() {
    let env = [("VAULT_ADDR", "http://127.0.0.1:8200"), ("VAULT_TOKEN", "t")];
    let c = sample_config();
    assert!(!c.local_kek, "the local KEK is opt-in");
    assert_eq!(c.local_kek_max_uses, DEFAULT_LOCAL_KEK_MAX_USES);
    assert_eq!(c.local_kek_max_age, DEFAULT_LOCAL_KEK_MAX_AGE);
    let on = resolve(
        &[
            ("transit-key", "k"),
            ("local-kek", "true"),
            ("local-kek-max-uses", "5"),
            ("local-kek-max-age", "2s"),
        ],
        &env,
    )
    .unwrap();
    assert!(on.local_kek);
    assert_eq!(
        (on.local_kek_max_uses, on.local_kek_max_age),
        (5, Duration::from_secs(2))
    );
    assert!(
        on.summary().contains("local_kek=max_uses:5,max_age:2s"),
        "{}",
        on.summary()
    );
    for (k, v, says) in [
        ("local-kek-max-uses", "0", "from 1 to 16777216"),
        ("local-kek-max-uses", "16777217", "from 1 to 16777216"),
        ("local-kek-max-uses", "lots", "from 1 to 16777216"),
        ("local-kek-max-age", "500ms", "1s to 1440m"),
        ("local-kek-max-age", "3600", "needs a unit"),
    ] {
        let e = resolve(&[("transit-key", "k"), ("local-kek", "1"), (k, v)], &env).unwrap_err();
        assert!(e.0.contains(&format!("--{k}")) && e.0.contains(says), "{k}={v}: {e}");
    }
    let e = resolve(&[("transit-key", "k"), ("local-kek-max-uses", "5")], &env).unwrap_err();
    assert!(e.0.contains("only with --local-kek"), "{e}");
}
