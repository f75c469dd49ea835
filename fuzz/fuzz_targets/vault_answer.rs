//! Vault's answers (`vault::answer`): every reader of a transit, token, key
//! or health answer on the JSON of arbitrary bytes, and the error-text
//! reader on the raw text (what a server, proxy or load balancer may send
//! with a non-2xx status). Properties: nothing panics; an error text is one
//! line of at most `VAULT_MAX_ERROR_TEXT` characters plus `...`, with no
//! control character; every lease is at most `VAULT_MAX_LEASE` and a lease's
//! granted length is never zero when its ttl is not (lookup-self); a login
//! token is never empty; key creation times are positive; a batch answer
//! is used only when it has exactly one item per input, the i-th carrying
//! reference "i" (what keeps a coalesced result with its own request).

#![no_main]

use libfuzzer_sys::fuzz_target;
use trousseau_fuzz::limits::{VAULT_MAX_ERROR_TEXT, VAULT_MAX_LEASE};
use trousseau_fuzz::vault::answer;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let e = answer::error_text(&text);
    assert!(e.chars().count() <= VAULT_MAX_ERROR_TEXT + 3, "{} characters", e.chars().count());
    assert!(!e.chars().any(|c| c.is_control()), "control character in {e:?}");
    assert!(!e.starts_with(' ') && !e.ends_with(' ') && !e.contains("  "), "not one clean line: {e:?}");

    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let _ = answer::transit_field(&v, "ciphertext");
    if let Some(l) = answer::lookup_lease(&v) {
        assert!(l.ttl <= VAULT_MAX_LEASE && l.granted <= VAULT_MAX_LEASE, "{l:?}");
        assert!(l.ttl.is_zero() || !l.granted.is_zero(), "{l:?}");
    }
    if let Some(l) = answer::auth_lease(&v) {
        assert!(l.ttl <= VAULT_MAX_LEASE && l.granted == l.ttl, "{l:?}");
    }
    match answer::login_token(&v) {
        Ok(t) => assert!(!t.token.expose().is_empty() && t.lease.ttl <= VAULT_MAX_LEASE),
        Err(what) => assert!(what.starts_with("no auth."), "{what}"),
    }
    if let Some(k) = answer::key_info(&v) {
        assert!(k.created.values().all(|t| *t > 0), "{:?}", k.created);
    }
    let items = v["data"]["batch_results"].as_array().map_or(0, |a| a.len());
    for n in [0, 1, 2, items, items + 1] {
        let Some(got) = answer::batch_results(&v, "plaintext", n) else {
            continue;
        };
        assert_eq!(got.len(), n);
        for (i, item) in got.iter().enumerate() {
            let sent = &v["data"]["batch_results"][i];
            assert_eq!(sent["reference"].as_str(), Some(i.to_string().as_str()), "item {i} matched without its reference");
            match item {
                answer::BatchItem::Value(p) => assert_eq!(sent["plaintext"].as_str(), Some(p.as_str())),
                answer::BatchItem::Refused(e) => {
                    assert!(!e.is_empty() || sent["error"].as_str().is_some_and(|s| s.trim().is_empty()));
                    assert!(e.chars().count() <= VAULT_MAX_ERROR_TEXT + 3);
                }
            }
        }
    }
    let h = answer::node_health(&v);
    assert!(!h.version.is_empty());
});
