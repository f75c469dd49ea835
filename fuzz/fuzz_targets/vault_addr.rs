//! `vault::parse_addr`, the one parser of a Vault address: `--vault-addr`,
//! `--vault-proxy`, and the base of a standby's 307 `Location` (a Vault
//! response header) all go through it. Arbitrary text, bytes taken lossily.
//! Properties: nothing panics; an accepted address is the input with
//! surrounding spaces and trailing `/`s dropped, is `http(s)://` and a
//! non-empty authority with no path, query, fragment, user, whitespace or
//! control character, and parses to itself.
//!
//! (Vault's answer bodies are the `vault_answer` target's.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use trousseau_fuzz::vault::parse_addr;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let raw: &str = &text;
    let Ok(a) = parse_addr(raw) else {
        return;
    };
    assert_eq!(a, raw.trim().trim_end_matches('/'), "more than trimming changed");
    let rest = a
        .strip_prefix("https://")
        .or_else(|| a.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("{a:?} has another scheme"));
    assert!(!rest.is_empty(), "no host: {a:?}");
    assert!(
        !rest.contains(['/', '?', '#', '@']) && !rest.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{a:?} has more than scheme://host[:port]"
    );
    assert_eq!(parse_addr(&a).as_deref(), Ok(a.as_str()), "not idempotent");
});
