//! Where each value comes from: flags, then the environment variable a
//! key has (if any), then the JSON file given by `--config`. Every value
//! remembers its source, so an error names what to change.

use std::collections::BTreeMap;

use super::ConfigError;
use crate::limits::MAX_CONFIG_FILE;

/// Keys accepted as `--KEY VALUE` flags and as keys of the JSON file, with
/// the environment variable (if any) that sits between them in precedence.
pub const KEYS: &[(&str, Option<&str>)] = &[
    ("socket", None),
    ("vault-addr", Some("VAULT_ADDR")),
    ("transit-mount", None),
    ("transit-key", None),
    ("decrypt-key", None),
    ("auth-method", None),
    ("auth-mount", None),
    ("auth-role", None),
    ("vault-token-file", None),
    ("approle-role-id-file", None),
    ("approle-secret-id-file", None),
    ("jwt-file", None),
    ("vault-namespace", Some("VAULT_NAMESPACE")),
    ("vault-cacert", Some("VAULT_CACERT")),
    ("vault-client-cert", Some("VAULT_CLIENT_CERT")),
    ("vault-client-key", Some("VAULT_CLIENT_KEY")),
    ("vault-tls-server-name", Some("VAULT_TLS_SERVER_NAME")),
    ("vault-skip-verify", Some("VAULT_SKIP_VERIFY")),
    ("vault-proxy", Some("VAULT_PROXY_ADDR")),
    ("vault-timeout", None),
    ("max-in-flight", None),
    ("coalesce", None),
    ("local-kek", None),
    ("local-kek-max-uses", None),
    ("local-kek-max-age", None),
    ("shutdown-timeout", None),
    ("http-addr", None),
];

/// Keys that may be given more than once (or comma-separated, or as a JSON
/// array); their values are joined with commas.
pub const MULTI_KEYS: &[&str] = &["vault-addr", "decrypt-key"];

/// Where a value came from, named the way an operator would fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Flag,
    Env(&'static str),
    File,
}

#[derive(Clone, Debug)]
pub(super) struct Value {
    pub key: &'static str,
    pub raw: String,
    pub origin: Origin,
}

impl Value {
    /// The source as an operator would fix it: `--flag`, `VAR`, or the
    /// config file key.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Flag => format!("--{}", self.key),
            Origin::Env(v) => v.to_string(),
            Origin::File => format!("config file key \"{}\"", self.key),
        }
    }
}

/// Parses a value if some source set it; an error names that source.
pub(super) fn parsed<T>(v: Option<Value>, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
    v.map(|v| parse(&v.raw).map_err(|m| ConfigError(format!("{}: {m}", v.describe()))))
        .transpose()
}

/// Raw inputs: `flags` are `--key value` pairs already split by the CLI,
/// `env` looks up an environment variable; the file comes from the
/// `config` flag.
pub struct Sources<'a> {
    pub flags: &'a BTreeMap<String, String>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The three sources, with the file already read.
pub(super) struct Layers<'a> {
    src: &'a Sources<'a>,
    file: BTreeMap<String, String>,
}

impl<'a> Layers<'a> {
    /// Refuses unknown flags, then reads `--config` if given.
    pub fn load(src: &'a Sources<'a>) -> Result<Layers<'a>, ConfigError> {
        for k in src.flags.keys() {
            if k != "config" && !KEYS.iter().any(|(n, _)| n == k) {
                return Err(ConfigError(format!(
                    "unknown flag --{k} (see `trousseau serve --help`)"
                )));
            }
        }
        let file = match src.flags.get("config") {
            Some(path) => read_config_file(path)?,
            None => BTreeMap::new(),
        };
        Ok(Layers { src, file })
    }

    /// The value of `key` from the first source that sets it (an empty
    /// environment variable does not count).
    pub fn get(&self, key: &'static str) -> Option<Value> {
        let value = |raw: String, origin| Some(Value { key, raw, origin });
        if let Some(v) = self.src.flags.get(key) {
            return value(v.clone(), Origin::Flag);
        }
        let env_name = KEYS.iter().find(|(n, _)| *n == key).and_then(|(_, e)| *e);
        if let Some(name) = env_name {
            if let Some(v) = (self.src.env)(name).filter(|v| !v.is_empty()) {
                return value(v, Origin::Env(name));
            }
        }
        self.file.get(key).and_then(|v| value(v.clone(), Origin::File))
    }

    /// A flag as given, for a key whose sources need their own order.
    pub fn flag(&self, key: &str) -> Option<&str> {
        self.src.flags.get(key).map(String::as_str)
    }

    /// An environment variable, even one no key is bound to.
    pub fn env(&self, name: &str) -> Option<String> {
        (self.src.env)(name)
    }

    /// A config file key as given.
    pub fn file(&self, key: &str) -> Option<&str> {
        self.file.get(key).map(String::as_str)
    }
}

fn read_config_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = crate::files::read_small(std::path::Path::new(path), MAX_CONFIG_FILE)
        .map_err(|m| ConfigError(format!("--config {path}: {m}")))?;
    parse_config_json(&text).map_err(|m| ConfigError(format!("--config {path}: {m}")))
}

/// Parses the JSON config file: one object whose keys are [`KEYS`], each
/// at most once.
pub fn parse_config_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if !v.is_object() {
        return Err("must be a JSON object such as {\"transit-key\": \"kube\"}".into());
    }
    // serde_json's Value keeps the last of two equal keys without a word;
    // a second pass that sees every key refuses the file instead.
    let entries = serde_json::from_str::<UniqueKeys>(text).map_err(|e| e.to_string())?.0;
    let mut out = BTreeMap::new();
    for (k, v) in &entries {
        if !KEYS.iter().any(|(n, _)| n == k) {
            let known: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
            return Err(format!("unknown key \"{k}\"; known keys: {}", known.join(", ")));
        }
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Array(items) if MULTI_KEYS.contains(&k.as_str()) => {
                let strs: Option<Vec<&str>> = items.iter().map(|i| i.as_str()).collect();
                strs.ok_or_else(|| format!("key \"{k}\" must be a list of strings"))?
                    .join(",")
            }
            _ => return Err(format!("key \"{k}\" must be a string, number or boolean")),
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// The top-level object's entries in file order; deserializing fails on a
/// key that appears twice, naming it.
struct UniqueKeys(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut out: Vec<(String, serde_json::Value)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!(
                            "key \"{}\" appears more than once; keep one",
                            crate::wire::names::shown(&k)
                        )));
                    }
                    let v = map.next_value::<serde_json::Value>()?;
                    out.push((k, v));
                }
                Ok(UniqueKeys(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key given twice is refused, naming it, wherever the two are; a
    /// duplicate inside a value (not a key of ours) or two different keys
    /// are not.
    #[test]
    fn a_duplicated_key_is_refused_naming_it() {
        for text in [
            r#"{"transit-key": "a", "transit-key": "b"}"#,
            r#"{"transit-key": "a", "socket": "/s", "transit-key": "a"}"#,
            "{\n  \"vault-addr\": [\"http://a:1\"],\n  \"transit-key\": \"k\",\n  \"vault-addr\": \"http://b:1\"\n}",
        ] {
            let e = parse_config_json(text).unwrap_err();
            let key = if text.contains("\"vault-addr\": [") {
                "vault-addr"
            } else {
                "transit-key"
            };
            assert!(
                e.contains(&format!("key \"{key}\" appears more than once")),
                "{text}: {e}"
            );
        }
        let ok = parse_config_json(r#"{"transit-key": "k", "decrypt-key": ["a", "a"], "socket": "/s"}"#).unwrap();
        assert_eq!(ok.get("decrypt-key").map(String::as_str), Some("a,a"));
        assert_eq!(ok.get("transit-key").map(String::as_str), Some("k"));
        // The key is quoted cut, never a megabyte of it.
        let long = "x".repeat(5000);
        let e = parse_config_json(&format!(r#"{{"{long}": 1, "{long}": 2}}"#)).unwrap_err();
        assert!(e.len() < 300 && e.contains("appears more than once"), "{e}");
    }
}
