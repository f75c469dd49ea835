//! `config::parse_config_json` on arbitrary text (bytes taken lossily), then
//! every value through the parser its key uses, then `Config::resolve` on
//! the keys that name no file. Properties: nothing panics; every key
//! returned is one of `config::KEYS`; the result, written back as a JSON
//! object of strings, parses to itself; the value parsers are canonical
//! (their output parses to itself); and a resolved `Config` is within its
//! bounds, makes key ids and v1 ciphers that parse back, and its summary
//! never shows the token.

#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use trousseau_fuzz::config::{self, Config, Sources, KEYS, MAX_DECRYPT_KEYS, MAX_VAULT_ADDRS};
use trousseau_fuzz::vault::parse_addr;
use trousseau_fuzz::wire::{self, names, KeyName, KeyVersion, VaultCiphertext};

/// The token `Config::resolve` finds in VAULT_TOKEN.
const TOKEN: &str = "s.FuzzTokenNeverShown";

/// Keys whose value is a path `Config::resolve` checks or opens (a token
/// file is read): left out, so fuzz input never makes it touch a file.
const FILE_KEYS: &[&str] = &[
    "vault-cacert",
    "vault-client-cert",
    "vault-client-key",
    "vault-token-file",
    "approle-role-id-file",
    "approle-secret-id-file",
    "jwt-file",
];

fn check_key_name(raw: &str) {
    if let Ok(k) = config::parse_key_name(raw) {
        assert_eq!(k, raw.trim(), "key name changed beyond trimming");
        assert_eq!(names::parse_key_name(&k), Ok(k.as_str()));
    }
}

fn check_addr(a: &str) {
    assert_eq!(parse_addr(a).as_deref(), Ok(a), "parse_addr is not idempotent");
}

/// Each value through the parser `Config::resolve` uses for its key.
fn check_value(key: &str, raw: &str) {
    match key {
        "vault-addr" => {
            if let Ok(addrs) = config::parse_addrs(raw) {
                assert!(addrs.len() <= MAX_VAULT_ADDRS);
                for (i, a) in addrs.iter().enumerate() {
                    check_addr(a);
                    assert!(!addrs[..i].contains(a), "duplicate address kept");
                }
            }
        }
        "vault-proxy" => {
            if let Ok(a) = parse_addr(raw) {
                check_addr(&a);
            }
        }
        "transit-mount" | "auth-mount" => {
            if let Ok(m) = config::parse_mount(raw) {
                assert_eq!(names::parse_mount(&m), Ok(m.as_str()));
            }
        }
        "transit-key" | "auth-role" => check_key_name(raw),
        "decrypt-key" => raw.split(',').for_each(check_key_name),
        "vault-timeout" | "shutdown-timeout" => {
            if let Ok(d) = config::parse_duration(raw) {
                assert!(d <= Duration::from_secs(86_400), "{raw:?} gave {d:?}");
            }
        }
        "vault-skip-verify" => {
            let _ = config::parse_bool(raw);
        }
        "socket" => {
            if let Ok(p) = config::parse_socket(raw) {
                let n = p.as_os_str().len();
                assert!(n > 0 && n <= 107, "{n}-byte socket path accepted");
            }
        }
        "vault-tls-server-name" => {
            if let Ok(n) = config::parse_server_name(raw) {
                assert!(n.len() <= 253);
                assert_eq!(config::parse_server_name(&n).as_ref(), Ok(&n), "not idempotent");
            }
        }
        _ => {}
    }
}

/// What holds for every configuration `resolve` accepts.
fn check_config(cfg: &Config, flags: &BTreeMap<String, String>) {
    let v = &cfg.vault;
    assert!(!v.addrs.is_empty() && v.addrs.len() <= MAX_VAULT_ADDRS);
    v.addrs.iter().for_each(|a| check_addr(a));
    assert!((Duration::from_millis(100)..=Duration::from_secs(60)).contains(&v.timeout));
    // config::MAX_MAX_IN_FLIGHT (private): 4096.
    assert!((1..=4096).contains(&cfg.max_in_flight));
    assert!(cfg.shutdown_timeout <= Duration::from_secs(300));
    assert!(v.namespace.as_deref() != Some(""));
    assert!(cfg.decrypt_keys.len() <= MAX_DECRYPT_KEYS);
    assert!(!cfg.decrypt_keys.contains(&cfg.transit_key));

    // Every configured key makes key ids and v1 ciphers that parse back.
    let ct = VaultCiphertext::parse("vault:v9999999999999999999:QUJDRA==", "c").unwrap();
    for key in std::iter::once(&cfg.transit_key).chain(&cfg.decrypt_keys) {
        let kv = KeyVersion {
            name: KeyName {
                mount: cfg.transit_mount.clone(),
                key: key.clone(),
            },
            version: 9_999_999_999_999_999_999,
            created: Some(9_999_999_999_999_999_999),
        };
        assert_eq!(wire::parse_key_id(&kv.key_id()).as_ref(), Ok(&kv));
        let framed = wire::v1_cipher(&kv.name, &ct);
        assert_eq!(wire::parse_v1_cipher(&framed).map(|c| c.key), Ok(Some(kv.name)));
    }

    // Unless a value given holds the token's text itself.
    let summary = cfg.summary();
    if !flags.values().any(|v| v.contains(TOKEN)) {
        assert!(!summary.contains(TOKEN), "summary shows the token: {summary}");
        assert!(!format!("{cfg:?}").contains(TOKEN), "Debug shows the token");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(map) = config::parse_config_json(&text) else {
        return;
    };
    for k in map.keys() {
        assert!(KEYS.iter().any(|(n, _)| n == k), "unknown key {k:?} accepted");
    }

    // Round trip: the result as a JSON object of strings parses to itself.
    let obj: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let again = config::parse_config_json(&serde_json::Value::Object(obj).to_string());
    assert_eq!(again.as_ref(), Ok(&map), "config JSON does not round-trip");

    for (k, v) in &map {
        check_value(k, v);
    }

    // The whole resolution, with the values as flags and a token in the
    // environment (so the token method can succeed without a file).
    let flags: BTreeMap<String, String> = map
        .into_iter()
        .filter(|(k, _)| !FILE_KEYS.contains(&k.as_str()))
        .collect();
    let env = |name: &str| (name == "VAULT_TOKEN").then(|| TOKEN.to_owned());
    let src = Sources {
        flags: &flags,
        env: &env,
    };
    match Config::resolve(&src) {
        Ok(cfg) => check_config(&cfg, &flags),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
