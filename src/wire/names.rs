//! Transit mount paths and key names: one strict parser for each. Input is
//! taken exactly as given (no trimming), so whatever parses is canonical;
//! config trims an operator's flag value before it calls these.

use crate::limits::MAX_KEY_NAME;
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
    if raw.is_empty() || raw.split('/').any(|seg| seg.is_empty() || !seg.chars().all(name_char)) {
        return Err(format!(
            "\"{raw}\" is not a mount path (letters, digits, - _ . and / between segments)"
        ));
    }
    Ok(raw)
}

/// A transit key name, as Vault allows them: letters, digits, `-`, `_`, `.`.
pub fn parse_key_name(raw: &str) -> Result<&str, String> {
    if raw.is_empty() || !raw.chars().all(name_char) || raw.len() > MAX_KEY_NAME {
        return Err(format!("\"{raw}\" is not a transit key name (letters, digits, - _ .)"));
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
    }
}
