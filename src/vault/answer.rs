//! Reading Vault's answers into our types: the JSON of a transit, token,
//! key or health answer, and the text of an error body. Everything here is
//! a pure function of what Vault sent (no HTTP, no ureq), so the fuzz
//! target `vault_answer` runs it on arbitrary bytes: it never panics, every
//! lease is capped at [`VAULT_MAX_LEASE`], and an error text is one line of
//! at most [`VAULT_MAX_ERROR_TEXT`] characters (and `...`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits::{VAULT_MAX_ERROR_TEXT, VAULT_MAX_LEASE};
use crate::secret::Secret;

/// A token's lease as Vault reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Time left; zero for a token that never expires (root).
    pub ttl: Duration,
    pub renewable: bool,
    /// The lease the token was issued with: what a renewal asks for.
    pub granted: Duration,
}

/// A new token from a login, with its lease.
pub struct LoginToken {
    pub token: Secret,
    pub lease: Lease,
}

/// A node's `sys/health` answer.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    pub standby: bool,
    pub version: String,
}

/// What `read_key` learns about a transit key.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub kind: String,
    pub latest_version: u64,
    pub min_decryption_version: u64,
    pub exportable: bool,
    pub deletion_allowed: bool,
    /// When each version was created (Unix seconds), from `keys`: what
    /// makes key ids unique per key incarnation.
    pub created: BTreeMap<u64, u64>,
}

/// An object member of an answer (`data`, `auth`), if it is one.
pub fn section<'v>(v: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Map<String, serde_json::Value>> {
    v.get(name).and_then(|d| d.as_object())
}

/// `data.<field>` of a transit answer, if it is a string.
pub fn transit_field(v: &serde_json::Value, field: &str) -> Option<String> {
    section(v, "data")
        .and_then(|d| d.get(field))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// A lease length from Vault, at most [`VAULT_MAX_LEASE`].
fn lease_secs(secs: u64) -> Duration {
    Duration::from_secs(secs).min(VAULT_MAX_LEASE)
}

/// The lease of a `lookup-self` answer (`data.ttl`, `data.creation_ttl`).
pub fn lookup_lease(v: &serde_json::Value) -> Option<Lease> {
    let d = section(v, "data")?;
    let secs = |k: &str| d.get(k).and_then(|t| t.as_u64()).map(lease_secs);
    let ttl = secs("ttl").unwrap_or(Duration::ZERO);
    Some(Lease {
        ttl,
        renewable: d.get("renewable").and_then(|r| r.as_bool()).unwrap_or(false),
        granted: secs("creation_ttl").filter(|d| !d.is_zero()).unwrap_or(ttl),
    })
}

/// The lease of a login or renewal answer (`auth.lease_duration`).
pub fn auth_lease(v: &serde_json::Value) -> Option<Lease> {
    let a = section(v, "auth")?;
    let ttl = lease_secs(a.get("lease_duration")?.as_u64()?);
    Some(Lease {
        ttl,
        renewable: a.get("renewable").and_then(|r| r.as_bool()).unwrap_or(false),
        granted: ttl,
    })
}

/// The token and lease of a login answer, or what is missing from it.
pub fn login_token(v: &serde_json::Value) -> Result<LoginToken, &'static str> {
    let token = section(v, "auth")
        .and_then(|a| a.get("client_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("no auth.client_token")?;
    let lease = auth_lease(v).ok_or("no auth.lease_duration")?;
    Ok(LoginToken {
        token: Secret::new(token.to_owned()),
        lease,
    })
}

/// A read of `<mount>/keys/<key>`: its type, versions and their creation
/// times; `None` without a `data` object.
pub fn key_info(v: &serde_json::Value) -> Option<KeyInfo> {
    let d = section(v, "data")?;
    let num = |k: &str| d.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
    let flag = |k: &str| d.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
    Some(KeyInfo {
        kind: d.get("type").and_then(|t| t.as_str()).unwrap_or("?").to_owned(),
        latest_version: num("latest_version"),
        min_decryption_version: num("min_decryption_version"),
        exportable: flag("exportable"),
        deletion_allowed: flag("deletion_allowed"),
        // Symmetric keys map each version to its creation time in Unix
        // seconds; other shapes (asymmetric keys' objects) are skipped.
        created: d
            .get("keys")
            .and_then(|k| k.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(ver, t)| Some((ver.parse().ok()?, t.as_u64().filter(|t| *t > 0)?)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// One item of a transit `batch_results` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchItem {
    /// The item's `<field>` (a ciphertext or a base64 plaintext).
    Value(String),
    /// Vault refused this item alone; its error text, shortened.
    Refused(String),
}

/// `data.batch_results` of a transit batch answer to `n` items, each sent
/// with `reference` equal to its position. An item is matched to its input
/// by position and by reference both: the answer is used only if it holds
/// exactly `n` objects and the one at position `i` carries reference
/// `"i"`, so a result can never go to a request other than the one that
/// sent the item. `None` otherwise (the whole batch then fails). An item
/// with a non-empty `error` is refused; any other must have `<field>` as
/// a string.
pub fn batch_results(v: &serde_json::Value, field: &str, n: usize) -> Option<Vec<BatchItem>> {
    let items = section(v, "data")?.get("batch_results")?.as_array()?;
    if items.len() != n {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for (i, item) in items.iter().enumerate() {
        let item = item.as_object()?;
        if item.get("reference").and_then(|r| r.as_str()) != Some(i.to_string().as_str()) {
            return None;
        }
        let error = item.get("error").and_then(|e| e.as_str()).unwrap_or_default();
        if !error.is_empty() {
            out.push(BatchItem::Refused(error_text(
                &serde_json::json!({ "errors": [error] }).to_string(),
            )));
            continue;
        }
        out.push(BatchItem::Value(item.get(field)?.as_str()?.to_owned()));
    }
    Some(out)
}

/// A `sys/health` answer.
pub fn node_health(v: &serde_json::Value) -> NodeHealth {
    NodeHealth {
        standby: v.get("standby").and_then(|b| b.as_bool()).unwrap_or(false),
        version: v.get("version").and_then(|s| s.as_str()).unwrap_or("?").to_owned(),
    }
}

/// Vault's `{"errors": [...]}` joined, shortened; raw text if not JSON.
pub fn error_text(body: &str) -> String {
    let joined = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => v
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; "))
            .unwrap_or_default(),
        Err(_) => body.trim().to_owned(),
    };
    let one_line: String = joined.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let one_line = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(VAULT_MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}...", one_line.get(..i).unwrap_or_default()),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leases_are_capped_and_defaults_hold() {
        let huge = json!({"auth": {"client_token": "s.x", "lease_duration": u64::MAX, "renewable": true}});
        let t = login_token(&huge).unwrap();
        assert_eq!(t.lease.ttl, VAULT_MAX_LEASE);
        assert!(t.lease.renewable);
        assert_eq!(
            login_token(&json!({"auth": {"client_token": ""}})).err(),
            Some("no auth.client_token")
        );
        assert_eq!(
            login_token(&json!({"auth": {"client_token": "s.x"}})).err(),
            Some("no auth.lease_duration")
        );
        let root = lookup_lease(&json!({"data": {"ttl": 0}})).unwrap();
        assert_eq!(
            (root.ttl, root.granted, root.renewable),
            (Duration::ZERO, Duration::ZERO, false)
        );
        let l = lookup_lease(&json!({"data": {"ttl": 30, "creation_ttl": u64::MAX}})).unwrap();
        assert_eq!((l.ttl, l.granted), (Duration::from_secs(30), VAULT_MAX_LEASE));
        assert!(lookup_lease(&json!({"data": []})).is_none());
    }

    #[test]
    fn key_times_are_read_from_keys() {
        let v = json!({"data": {"type": "aes256-gcm96", "latest_version": 2,
            "keys": {"1": 1796235632, "2": 1796235700, "x": 5, "3": {"creation_time": "..."}, "4": 0}}});
        let k = key_info(&v).unwrap();
        assert_eq!(k.created, BTreeMap::from([(1, 1796235632), (2, 1796235700)]));
        assert_eq!((k.kind.as_str(), k.latest_version), ("aes256-gcm96", 2));
        assert!(key_info(&json!({"nodata": 1})).is_none());
        assert_eq!(transit_field(&json!({"data": {"ciphertext": 5}}), "ciphertext"), None);
    }

    #[test]
    fn batch_results_match_by_position_and_reference() {
        let v = json!({"data": {"batch_results": [
            {"plaintext": "aGk=", "reference": "0"},
            {"plaintext": "", "error": "cipher: message authentication failed", "reference": "1"},
            {"plaintext": "eW8=", "reference": "2", "key_version": 1}
        ]}});
        assert_eq!(
            batch_results(&v, "plaintext", 3),
            Some(vec![
                BatchItem::Value("aGk=".into()),
                BatchItem::Refused("cipher: message authentication failed".into()),
                BatchItem::Value("eW8=".into()),
            ])
        );
        // Too few or too many items, a missing, swapped or non-string
        // reference, a missing field: nothing is used.
        assert_eq!(batch_results(&v, "plaintext", 2), None);
        assert_eq!(batch_results(&v, "plaintext", 4), None);
        let swapped = json!({"data": {"batch_results": [
            {"plaintext": "eW8=", "reference": "1"}, {"plaintext": "aGk=", "reference": "0"}]}});
        assert_eq!(batch_results(&swapped, "plaintext", 2), None);
        for bad in [
            json!({"data": {"batch_results": [{"plaintext": "aGk="}]}}),
            json!({"data": {"batch_results": [{"plaintext": "aGk=", "reference": 0}]}}),
            json!({"data": {"batch_results": [{"reference": "0"}]}}),
            json!({"data": {"batch_results": [{"plaintext": 5, "reference": "0"}]}}),
            json!({"data": {"batch_results": ["aGk="]}}),
            json!({"data": {"batch_results": {"0": {"plaintext": "aGk=", "reference": "0"}}}}),
            json!({"data": {"plaintext": "aGk="}}),
        ] {
            assert_eq!(batch_results(&bad, "plaintext", 1), None, "{bad}");
        }
        // An error text is one bounded line like any other Vault error.
        let long = json!({"data": {"batch_results": [{"error": "x\n".repeat(400), "reference": "0"}]}});
        let Some(items) = batch_results(&long, "plaintext", 1) else {
            panic!("no items")
        };
        let [BatchItem::Refused(e)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert!(e.len() <= VAULT_MAX_ERROR_TEXT + 3 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn error_text_is_short_and_single_line() {
        assert_eq!(error_text(r#"{"errors":["a","b\nc"]}"#), "a; b c");
        assert_eq!(error_text("<html>\n bad gateway</html>"), "<html> bad gateway</html>");
        let long = "x".repeat(5000);
        assert_eq!(error_text(&long).len(), VAULT_MAX_ERROR_TEXT + 3);
        assert_eq!(error_text(""), "");
    }

    /// Whatever a server or proxy sends, the message we build stays one
    /// bounded line and never panics.
    #[test]
    fn error_text_on_arbitrary_bodies() {
        let pieces = [
            "{",
            "}",
            "\"errors\"",
            ":",
            "[",
            "]",
            "\"x\"",
            ",",
            "\n",
            "é",
            "\u{7}",
            "null",
            "1",
        ];
        let mut rng = crate::testutil::Rng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let body: String = rng.pick(&pieces, 16).concat();
            let t = error_text(&body);
            assert!(t.chars().count() <= VAULT_MAX_ERROR_TEXT + 3);
            assert!(!t.chars().any(|c| c.is_control()), "{t:?}");
        }
    }
}
