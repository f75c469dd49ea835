//! The parsers of single values, each with an error that shows the value
//! and says what would be accepted. Names and addresses go through the one
//! strict parser their consumer owns ([`crate::wire::names`],
//! [`crate::vault::parse_addr`]); here only what an operator may add
//! around them (spaces, slashes) is dropped.

use std::path::PathBuf;
use std::time::Duration;

use super::MAX_VAULT_ADDRS;

/// A file that exists now (it is read later, or by another part).
pub(super) fn parse_file(raw: &str, what: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(raw.trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{what} {} does not exist or is not a file", p.display()))
    }
}

/// Items of a comma-separated list, trimmed, empty ones dropped.
pub(super) fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One or more addresses, comma-separated; duplicates dropped, order kept.
pub fn parse_addrs(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for a in split_list(raw) {
        let a = parse_addr(a)?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.len() > MAX_VAULT_ADDRS {
        return Err(format!("{} addresses; at most {MAX_VAULT_ADDRS}", out.len()));
    }
    Ok(out)
}

/// A DNS name for TLS verification: letters, digits, `-` and `.`.
pub fn parse_server_name(raw: &str) -> Result<String, String> {
    let n = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if ok {
        Ok(n)
    } else {
        Err(format!("\"{raw}\" is not a DNS name"))
    }
}

/// `unix:///run/x.sock`, `unix:/run/x.sock` or a plain path.
pub fn parse_socket(raw: &str) -> Result<PathBuf, String> {
    let p = raw
        .strip_prefix("unix://")
        .or_else(|| raw.strip_prefix("unix:"))
        .unwrap_or(raw);
    if p.is_empty() {
        return Err("empty socket path".into());
    }
    if p.starts_with('@') {
        return Err("abstract sockets (@name) are not supported; use a filesystem path".into());
    }
    if p.contains('\0') {
        return Err("socket path contains a NUL byte".into());
    }
    // sockaddr_un.sun_path is 108 bytes including the terminating NUL.
    if p.len() > 107 {
        return Err(format!(
            "socket path is {} bytes; Unix sockets allow at most 107",
            p.len()
        ));
    }
    Ok(PathBuf::from(p))
}

/// A Vault address: the Vault client owns the one parser (it also checks a
/// 307's target with it).
pub use crate::vault::parse_addr;

/// A mount path as an operator may type it (surrounding spaces and slashes
/// are dropped), then checked by the one strict parser of [`crate::wire`].
pub fn parse_mount(raw: &str) -> Result<String, String> {
    let m = raw.trim().trim_matches('/');
    crate::wire::names::parse_mount(m).map(str::to_owned).map_err(|_| {
        format!(
            "\"{}\" is not a mount path (at most {} letters, digits, - _ . and / between segments)",
            crate::wire::names::shown(raw),
            crate::limits::MAX_MOUNT_PATH
        )
    })
}

/// A transit key name (surrounding spaces dropped), checked by the one
/// strict parser of [`crate::wire`].
pub fn parse_key_name(raw: &str) -> Result<String, String> {
    crate::wire::names::parse_key_name(raw.trim())
        .map(str::to_owned)
        .map_err(|_| {
            format!(
                "\"{}\" is not a transit key name (at most {} letters, digits, - _ .)",
                crate::wire::names::shown(raw),
                crate::limits::MAX_KEY_NAME
            )
        })
}

/// Like the Vault CLI: 1/0, true/false, yes/no, on/off.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("\"{raw}\" is not a boolean (use true or false)")),
    }
}

/// A whole number from 1 to `max`.
pub fn parse_count(raw: &str, max: u64) -> Result<u64, String> {
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("\"{raw}\" is not a number from 1 to {max}"))
}

/// A duration within `range`; `advice` says which, after "use".
pub fn parse_duration_in(
    raw: &str,
    range: std::ops::RangeInclusive<Duration>,
    advice: &str,
) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if range.contains(&d) {
        Ok(d)
    } else {
        Err(format!("{raw} is out of range; use {advice}"))
    }
}

/// `250ms`, `2s`, `1m`, `1.5s`. A bare number is refused: units matter here.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let (num, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return Err(format!("\"{raw}\" needs a unit: ms, s or m (e.g. 2s)"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{raw}\" is not a duration (e.g. 500ms, 2s, 1m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale_ms > 86_400_000.0 {
        return Err(format!("\"{raw}\" is not a duration between 0 and 24h"));
    }
    Ok(Duration::from_micros((v * scale_ms * 1000.0).round() as u64))
}
