//! `wire::parse_key_id` (and the name parsers under it) on arbitrary text;
//! bytes that are not UTF-8 are taken lossily. Properties: nothing panics,
//! and whatever parses is canonical: `parse_key_id(s) == Ok(kv)` implies
//! `kv.key_id() == s`, and likewise for mount paths, key names and
//! `<mount>/<key>` paths.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trousseau_fuzz::limits::{MAX_KEY_NAME, MAX_MOUNT_PATH, V2_MAX_KEY_ID};
use trousseau_fuzz::wire::{self, names};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    match wire::parse_key_id(s) {
        Ok(kv) => {
            assert_eq!(kv.key_id(), s, "non-canonical key id accepted");
            assert!(kv.version >= 1, "version 0 accepted: {s:?}");
            assert!(s.len() <= V2_MAX_KEY_ID, "{} bytes accepted", s.len());
            assert!(s.starts_with(wire::KEY_ID_PREFIX));
            assert_eq!(names::parse_mount(&kv.name.mount), Ok(kv.name.mount.as_str()));
            assert_eq!(names::parse_key_name(&kv.name.key), Ok(kv.name.key.as_str()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    match names::parse_mount(s) {
        Ok(m) => {
            assert_eq!(m, s, "mount path changed by parsing");
            assert!(m.len() <= MAX_MOUNT_PATH && !m.contains(':'), "{m:?}");
        }
        Err(e) => assert!(e.len() < 400, "unbounded error message: {} bytes", e.len()),
    }
    match names::parse_key_name(s) {
        Ok(k) => {
            assert_eq!(k, s, "key name changed by parsing");
            assert!(k.len() <= MAX_KEY_NAME && !k.contains(['/', ':']), "{k:?}");
        }
        Err(e) => assert!(e.len() < 400, "unbounded error message: {} bytes", e.len()),
    }
    if let Some(name) = names::parse_key_path(s) {
        assert_eq!(name.to_string(), s, "non-canonical <mount>/<key> accepted");
    }
});
