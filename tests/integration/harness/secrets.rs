//! Every secret a test hands the plugin or Vault hands back (tokens,
//! secret_ids, JWTs, plaintexts, DEKs) is remembered here, and every log
//! the plugin writes is scanned for them when the plugin stops: raw, in
//! any base64 alphabet and alignment, and in hex (plain or byte-spaced, as
//! HTTP libraries dump bytes). The plugin runs at `RUST_LOG=trace` in the
//! tests, so this covers every log level.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use base64::Engine as _;

/// Shorter values are too likely to occur by chance in a log.
const MIN_SECRET_LEN: usize = 8;

/// A hex dump breaks lines every 16 bytes or so: any run this long of a
/// secret's bytes in the log is a leak.
const RAW_WINDOW: usize = 12;

/// At most about this many windows per secret are looked for.
const MAX_WINDOWS: usize = 64;

/// Every secret remembered, with the forms it may take in a log, indexed
/// by each form's first [`MIN_SECRET_LEN`] bytes: a scan then costs one
/// lookup per position of the log, however many secrets the tests have
/// remembered by then (tens of thousands of DEKs in a full run; building
/// every secret's forms again for each scan made the scans of one test
/// that checks many short messages take ten minutes).
/// A form's name ("base64 (offset 1)") and its bytes.
type Form = (String, Vec<u8>);

#[derive(Default)]
struct Registry {
    seen: HashSet<Vec<u8>>,
    /// Per secret: its first bytes (for the report) and its forms.
    secrets: Vec<(String, Vec<Form>)>,
    /// A form's first bytes -> (secret, form) indices.
    heads: HashMap<Vec<u8>, Vec<(usize, usize)>>,
}

static SECRETS: Mutex<Option<Registry>> = Mutex::new(None);

/// Remembers a secret for the log scans (no-op for short values).
pub fn remember(secret: impl AsRef<[u8]>) {
    let s = secret.as_ref();
    if s.len() < MIN_SECRET_LEN {
        return;
    }
    let mut guard = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let reg = guard.get_or_insert_with(Registry::default);
    if !reg.seen.insert(s.to_vec()) {
        return;
    }
    let i = reg.secrets.len();
    let forms = needles(s);
    for (j, (_, needle)) in forms.iter().enumerate() {
        let head = needle.get(..MIN_SECRET_LEN).unwrap_or(needle);
        reg.heads.entry(head.to_vec()).or_default().push((i, j));
    }
    let hint: String = String::from_utf8_lossy(s).chars().take(3).collect();
    reg.secrets.push((hint, forms));
}

/// The forms a secret may take in a log, each at least 8 characters.
fn needles(s: &[u8]) -> Vec<Form> {
    let mut out = Vec::new();
    // Every window of a short secret (a token), a sample of a long one (a
    // 47 KiB plaintext), so the scan stays quick.
    let step = (s.len().saturating_sub(RAW_WINDOW) / MAX_WINDOWS).max(1);
    let windows = if s.len() > RAW_WINDOW {
        s.windows(RAW_WINDOW).step_by(step).collect::<Vec<_>>()
    } else {
        vec![s]
    };
    for w in windows {
        out.push(("raw".to_owned(), w.to_vec()));
    }
    // base64 of the secret's bytes at each alignment: whatever precedes it
    // in an encoded body, the encoding of whole 3-byte groups from offset
    // j onwards appears verbatim.
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    for j in 0..3 {
        let Some(rest) = s.get(j..) else { continue };
        let whole = rest.len() / 3 * 3;
        let Some(groups) = rest.get(..whole) else { continue };
        for (name, engine) in [("base64", &STANDARD_NO_PAD), ("base64url", &URL_SAFE_NO_PAD)] {
            let e = engine.encode(groups);
            if e.len() >= MIN_SECRET_LEN {
                out.push((format!("{name} (offset {j})"), e.into_bytes()));
            }
        }
    }
    let hex: Vec<String> = s.iter().map(|b| format!("{b:02x}")).collect();
    out.push(("hex".to_owned(), hex.concat().into_bytes()));
    out.push(("HEX".to_owned(), hex.concat().to_uppercase().into_bytes()));
    // Byte-spaced hex, as dumps print it, in runs short enough to sit on
    // one dump line.
    for run in hex.windows(hex.len().min(8)).step_by(step) {
        out.push(("hex dump".to_owned(), run.join(" ").into_bytes()));
        out.push(("HEX dump".to_owned(), run.join(" ").to_uppercase().into_bytes()));
    }
    out
}

/// Vault tokens the test never saw (the plugin's own logins): `s.`,
/// `hvs.`, `hvb.` or `b.` and 24 or more letters and digits.
fn vault_token_shapes(log: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in [&b"hvs."[..], b"hvb.", b"s.", b"b."] {
        for (i, w) in log.windows(prefix.len()).enumerate() {
            if w != prefix || (i > 0 && log.get(i - 1).is_some_and(|c| c.is_ascii_alphanumeric())) {
                continue;
            }
            let body = log
                .get(i + prefix.len()..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            if body >= 24 {
                found.push(format!(
                    "a Vault token shape at byte {i} ({}...)",
                    String::from_utf8_lossy(prefix)
                ));
            }
        }
    }
    found
}

/// Every remembered secret found in `log`, as "secret N (first 3 chars)
/// as FORM"; empty when the log is clean.
pub fn leaks_in(log: &[u8]) -> Vec<String> {
    let mut found = vault_token_shapes(log);
    let guard = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(reg) = guard.as_ref() else { return found };
    let mut reported = HashSet::new();
    for pos in 0..log.len() {
        let Some(head) = log.get(pos..pos + MIN_SECRET_LEN) else {
            break;
        };
        let Some(candidates) = reg.heads.get(head) else {
            continue;
        };
        for &(i, j) in candidates {
            let Some((hint, forms)) = reg.secrets.get(i) else {
                continue;
            };
            let Some((form, needle)) = forms.get(j) else { continue };
            if !reported.contains(&i) && log.get(pos..pos + needle.len()) == Some(needle.as_slice()) {
                reported.insert(i);
                found.push(format!("secret {i} ({hint:?}...) as {form}"));
            }
        }
    }
    found
}

#[test]
fn the_scan_finds_each_form_and_passes_a_clean_log() {
    let token = b"s.Zr4Lq9VbX2mN7pKc0TgH1sWe";
    assert_eq!(vault_token_shapes(b"new token s.AAAAbbbbCCCCdddd11112222 in").len(), 1);
    assert!(vault_token_shapes(b"paths.AAAAbbbbCCCCdddd11112222").is_empty());
    remember(token);
    let clean = b"2026-12-02T10:00:00Z INFO trousseau: v2 encrypt uid=abc ok in 2.1ms";
    assert!(leaks_in(clean).is_empty());
    let b64 = base64::engine::general_purpose::STANDARD.encode([&b"xy"[..], token].concat());
    let hex: String = token.iter().map(|b| format!("{b:02x} ")).collect();
    for leaked in [
        format!("header X-Vault-Token: {}", String::from_utf8_lossy(token)),
        format!("body {b64}"),
        format!("0000: {}", &hex[..3 * 10]),
        // the ASCII column of a dump, cut at 16 characters
        format!("|{}|", String::from_utf8_lossy(&token[4..20])),
    ] {
        assert!(!leaks_in(leaked.as_bytes()).is_empty(), "missed: {leaked}");
    }
}
