//! Transit mount paths and key names: one strict parser for each. Input is
//! taken exactly as given (no trimming), so whatever parses is canonical;
//! config trims an operator's flag value before it calls these.

use crate::limits::{MAX_ECHOED_VALUE, MAX_KEY_NAME, MAX_MOUNT_PATH};
use std::fmt;

/// A transit key: mount path and key name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyName {
    pub mount: String,
    pub key: String,
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mount, self.key)
    }
}

/// A mount path: segments of letters, digits, `-`, `_`, `.`, joined by
/// single `/`s, with none at either end. `:` and `|` are refused so mounts
/// can sit inside key ids unambiguously.
pub fn parse_mount(raw: &str) -> Result<&str, String> {
    if raw.is_empty()
        || raw.len() > MAX_MOUNT_PATH
        || raw.split('/').any(|seg| seg.is_empty() || !seg.chars().all(name_char))
    {
        return Err(format!(
            "\"{}\" is not a mount path (at most {MAX_MOUNT_PATH} letters, digits, - _ . and / between segments)",
            shown(raw)
        ));
    }
    Ok(raw)
}

/// A refused value as an error message may quote it: at most
/// [`MAX_ECHOED_VALUE`] characters, control characters replaced, and `...`
/// when cut.
pub fn shown(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .take(MAX_ECHOED_VALUE)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if raw.chars().nth(MAX_ECHOED_VALUE).is_some() {
        out.push_str("...");
    }
    out
}

/// A transit key name, as Vault allows them: letters, digits, `-`, `_`, `.`.
pub fn parse_key_name(raw: &str) -> Result<&str, String> {
    if raw.is_empty() || !raw.chars().all(name_char) || raw.len() > MAX_KEY_NAME {
        return Err(format!(
            "\"{}\" is not a transit key name (at most {MAX_KEY_NAME} letters, digits, - _ .)",
            shown(raw)
        ));
    }
    Ok(raw)
}

/// `<mount>/<key>`, the key being the last segment.
pub fn parse_key_path(s: &str) -> Option<KeyName> {
    let (mount, key) = s.rsplit_once('/')?;
    Some(KeyName {
        mount: parse_mount(mount).ok()?.to_owned(),
        key: parse_key_name(key).ok()?.to_owned(),
    })
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A name with a nested mount and every allowed punctuation mark.
    pub(crate) fn name() -> KeyName {
        KeyName {
            mount: "kms/transit".into(),
            key: "kube-1.a".into(),
        }
    }

    #[test]
    fn names_are_taken_exactly_as_given() {
        assert_eq!(parse_mount("kms/transit"), Ok("kms/transit"));
        assert_eq!(parse_key_name("kube-1.a_b"), Ok("kube-1.a_b"));
        for bad in ["", "/transit", "transit/", " transit", "transit ", "a//b", "a:b", "a|b"] {
            assert!(parse_mount(bad).is_err(), "mount {bad:?} accepted");
        }
        for bad in ["", " kube", "kube ", "a/b", "a:b", &"k".repeat(MAX_KEY_NAME + 1)] {
            assert!(parse_key_name(bad).is_err(), "key {bad:?} accepted");
        }
        assert!(parse_mount(&"m".repeat(MAX_MOUNT_PATH)).is_ok());
        assert!(parse_mount(&"m".repeat(MAX_MOUNT_PATH + 1)).is_err());
    }

    /// A refused 64 KiB name is quoted in 64 characters.
    #[test]
    fn errors_quote_a_bounded_value() {
        let huge = "x".repeat(65_536);
        for e in [parse_mount(&huge).unwrap_err(), parse_key_name(&huge).unwrap_err()] {
            assert!(e.len() < 200, "{} bytes", e.len());
        }
        assert_eq!(shown("a\nb"), "a?b");
        assert_eq!(shown(&"y".repeat(70)), format!("{}...", "y".repeat(64)));
    }
}
