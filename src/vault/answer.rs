//! Reading Vault's answers into our types: the JSON of a transit, token,
//! key or health answer, and the text of an error body. Everything here is
//! a pure function of what Vault sent (no HTTP, no ureq), so the fuzz
//! target `vault_answer` runs it on arbitrary bytes: it never panics, every
//! lease is capped at [`VAULT_MAX_LEASE`], and an error text is one line of
//! at most [`VAULT_MAX_ERROR_TEXT`] characters (and `...`) that quotes
//! only Vault's own error strings, never a body of another shape nor
//! anything that may be request material.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits::{
    VAULT_ERROR_ENCODED_RUN, VAULT_ERROR_QUOTE_WINDOW, VAULT_MAX_ERROR_ITEM, VAULT_MAX_ERROR_TEXT, VAULT_MAX_LEASE,
};
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

/// [`error_text_for`] with no request values to look for (a batch item's
/// error): the encoded-run check alone.
pub fn error_text(body: &str) -> String {
    error_text_for(body, &[])
}

/// What an error body may put in a message (issue 21, 8: a proxy that
/// echoes the request must not get the DEK or a credential into a gRPC
/// error or a log line). Only Vault's own format is quoted: the strings of
/// `{"errors": [...]}`, each one line of at most [`VAULT_MAX_ERROR_ITEM`]
/// characters, the whole at most [`VAULT_MAX_ERROR_TEXT`] (and `...`).
/// A string that may quote the request is withheld, and the text says how
/// many were: one holding [`VAULT_ERROR_QUOTE_WINDOW`] characters in a
/// row of any of `request` (the request's body and its token), or a run
/// that looks like encoded data ([`looks_encoded`]). Any other body (an
/// HTML page, plain text, JSON of another shape) is described by its size
/// alone, never quoted.
pub fn error_text_for(body: &str, request: &[&str]) -> String {
    if body.trim().is_empty() {
        return String::new();
    }
    let v = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => v,
        Err(_) => return format!("a body of {} bytes that is not Vault's JSON (not quoted)", body.len()),
    };
    let Some(errors) = v.get("errors").and_then(|e| e.as_array()) else {
        return format!(
            "a JSON body of {} bytes without Vault's errors list (not quoted)",
            body.len()
        );
    };
    let mut kept = Vec::new();
    let mut withheld = 0;
    for e in errors {
        let Some(line) = e.as_str().map(one_line) else {
            withheld += 1;
            continue;
        };
        // The whole string is looked at, not only what is kept of it: a
        // cut must not leave the start of an echoed value.
        if looks_encoded(&line) || request.iter().any(|r| quotes(&line, r)) {
            withheld += 1;
        } else if !line.is_empty() {
            kept.push(cut(&line, VAULT_MAX_ERROR_ITEM));
        }
    }
    let note = match withheld {
        0 => String::new(),
        1 => "1 error text withheld (it may quote the request)".to_owned(),
        n => format!("{n} error texts withheld (they may quote the request)"),
    };
    let room = VAULT_MAX_ERROR_TEXT.saturating_sub(note.len() + 2);
    match (cut(&kept.join("; "), room), note.is_empty()) {
        (text, true) => text,
        (text, false) if text.is_empty() => note,
        (text, false) => format!("{text}; {note}"),
    }
}

/// One line: control characters as spaces, runs of spaces as one.
fn one_line(s: &str) -> String {
    let spaced: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `s`, and `...` if it was longer.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// Whether `s` has a run of at least [`VAULT_ERROR_ENCODED_RUN`]
/// characters of the base64 alphabets (standard and URL-safe) with both
/// upper and lower case letters: what a base64 DEK, ciphertext body, JWT
/// or token looks like, and Vault's own words and paths do not.
pub fn looks_encoded(s: &str) -> bool {
    let encoded = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    s.split(|c: char| !encoded(c)).any(|run| {
        run.len() >= VAULT_ERROR_ENCODED_RUN
            && run.chars().any(|c| c.is_ascii_uppercase())
            && run.chars().any(|c| c.is_ascii_lowercase())
    })
}

/// Whether `line` holds [`VAULT_ERROR_QUOTE_WINDOW`] bytes in a row of
/// `value` (shorter values are never secrets: names, references).
fn quotes(line: &str, value: &str) -> bool {
    if value.len() < VAULT_ERROR_QUOTE_WINDOW {
        return false;
    }
    let pieces: std::collections::HashSet<&[u8]> = line.as_bytes().windows(VAULT_ERROR_QUOTE_WINDOW).collect();
    !pieces.is_empty()
        && value
            .as_bytes()
            .windows(VAULT_ERROR_QUOTE_WINDOW)
            .any(|w| pieces.contains(w))
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
        // Not Vault's format: described, never quoted.
        assert_eq!(
            error_text("<html>\n bad gateway</html>"),
            "a body of 26 bytes that is not Vault's JSON (not quoted)"
        );
        assert_eq!(
            error_text(r#"{"message":"oops"}"#),
            "a JSON body of 18 bytes without Vault's errors list (not quoted)"
        );
        let long = serde_json::json!({ "errors": vec!["x ".repeat(100); 8] }).to_string();
        let t = error_text(&long);
        assert!(t.len() <= VAULT_MAX_ERROR_TEXT + 3 && t.ends_with("..."), "{t}");
        assert_eq!(error_text(""), "");
        assert_eq!(error_text(" \n"), "");
    }

    /// Issue 21, 8: a body that echoes the request (a DEK's base64, a
    /// ciphertext, a secret_id, a JWT, the token) never reaches a message;
    /// Vault's own strings do, and the text says what was withheld.
    #[test]
    fn error_text_withholds_what_may_quote_the_request() {
        let dek = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
        let ct = "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==";
        let secret_id = "5e1d8a1c-9b3f-4c2e-a7d0-3f6b2e9c1a44";
        let token = "hvs.CAESIJ2kQ1xK9vR7mN3pL5sT8uW0yZ4aB6cD";
        let body = |errors: serde_json::Value| serde_json::json!({ "errors": errors }).to_string();
        let request = [dek, ct, secret_id, token, "kube"];
        for echo in [
            format!("invalid request: {{\"plaintext\":\"{dek}\"}}"),
            format!("bad ciphertext {ct}"),
            format!("secret_id {secret_id} is not valid"),
            format!("token {token} denied"),
            // Part of a value, cut or spaced: still the value.
            format!("...{}", &dek[..14]),
            "id 9b3f-4c2e-a7d0-3f6b2e9c".to_owned(),
            // Base64 the request did not hold (another request's DEK).
            "echo: AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/==".to_owned(),
        ] {
            let t = error_text_for(&body(serde_json::json!([echo, "permission denied"])), &request);
            assert_eq!(
                t, "permission denied; 1 error text withheld (it may quote the request)",
                "{echo}"
            );
        }
        // Vault's own errors pass, paths and names included.
        for own in [
            "cipher: message authentication failed",
            "encryption key not found",
            "1 error occurred: * permission denied",
            "invalid role or secret ID",
            "no handler for route \"transit2/encrypt/kube\". route entry not found.",
            "failed to decode plaintext as base64: illegal base64 data at input byte 4",
            "request id 5f2b7c9e-2d41-4e8a-9b0c-7a1d3e5f6b80",
        ] {
            assert_eq!(error_text_for(&body(serde_json::json!([own])), &request), own);
        }
        // Other shapes: only the size; non-string items are withheld.
        let html = format!("<html><body><pre>{{\"plaintext\":\"{dek}\"}}</pre></body></html>");
        let t = error_text_for(&html, &request);
        assert!(t.starts_with("a body of ") && !t.contains(&dek[..12]), "{t}");
        let t = error_text_for(&body(serde_json::json!([{ "plaintext": dek }, 7])), &request);
        assert_eq!(t, "2 error texts withheld (they may quote the request)");
        // An echo that starts just before the cut: withheld, not cut to
        // a piece too short to recognise.
        let padded = format!("{}{dek}", "w".repeat(VAULT_MAX_ERROR_ITEM - 6));
        let t = error_text_for(&body(serde_json::json!([padded])), &[dek]);
        assert_eq!(t, "1 error text withheld (it may quote the request)");
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
