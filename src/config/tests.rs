//! Unit tests for config resolution: precedence, validation messages.

use super::*;
use std::collections::HashMap;

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
    assert_eq!(c.vault_timeout, DEFAULT_VAULT_TIMEOUT);
    assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(c.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    assert!(!c.vault_skip_verify);
    assert_eq!(c.vault_token.expose(), "s.topsecret");
}

#[test]
fn precedence_flag_env_file_default() {
    let file = tmpfile(
        "prec.json",
        r#"{"vault-addr": "http://file:1", "transit-key": "fromfile", "transit-mount": "m/file", "vault-timeout": "1s"}"#,
    );
    let env = [("VAULT_ADDR", "http://env:1"), ("VAULT_TOKEN", "t")];
    let c = resolve(&[("config", &file)], &env).unwrap();
    assert_eq!(c.vault_addr, "http://env:1", "env beats file");
    assert_eq!(c.transit_key, "fromfile");
    assert_eq!(c.transit_mount, "m/file");
    assert_eq!(c.vault_timeout, Duration::from_secs(1));
    let c = resolve(
        &[
            ("config", &file),
            ("vault-addr", "http://flag:1"),
            ("transit-key", "flagkey"),
        ],
        &env,
    )
    .unwrap();
    assert_eq!(c.vault_addr, "http://flag:1", "flag beats env");
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
    assert_eq!(c.vault_token.expose(), "s.fromfile", "flag beats VAULT_TOKEN");
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
