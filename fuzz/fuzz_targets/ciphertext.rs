//! `wire::parse_v1_cipher` and `wire::parse_v2_ciphertext` on arbitrary
//! bytes. Properties: nothing panics; an accepted v1 cipher frames back to
//! the input bytes (`v1_cipher` when it names a key, the bare Vault
//! ciphertext otherwise); an accepted v2 ciphertext's `as_str()` is the
//! input, and it is also a bare v1 cipher; the `vault:v<N>:` prefix holds
//! the parsed version; and the base64 body accepted decodes (as Vault's
//! Go `base64.StdEncoding` would). The local-KEK forms
//! (`wire::parse_v1_local`, `wire::parse_v2_local`): an accepted v1 one
//! frames back to the input, and is never also a transit v1 cipher; an
//! accepted v2 one keeps the sealed bytes as given.

#![no_main]

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use trousseau_fuzz::limits::{V1_MAX_CIPHER, V2_MAX_CIPHERTEXT};
use trousseau_fuzz::wire::{self, V1Cipher, VaultCiphertext};

/// Go's StdEncoding: standard alphabet, padding required, non-zero
/// trailing bits accepted.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// What holds for every Vault ciphertext we accepted.
fn check_vault_ciphertext(ct: &VaultCiphertext) {
    let text = ct.as_str();
    let prefix = format!("vault:v{}:", ct.version());
    assert!(ct.version() >= 1, "version 0 accepted: {text:?}");
    let body = text
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{text:?} does not start with {prefix:?}"));
    assert!(!body.is_empty());
    if let Err(e) = GO_STD.decode(body) {
        panic!("accepted body {body:?} is not base64: {e}");
    }
    assert_eq!(VaultCiphertext::parse(text, "c").as_ref(), Ok(ct), "re-parse differs");
}

fuzz_target!(|data: &[u8]| {
    match wire::parse_v1_local(data) {
        Ok(Some((key, l))) => {
            assert_eq!(wire::v1_local_cipher(&key, &l.wrapped, &l.sealed), data, "local framing does not round-trip");
            assert!(wire::parse_v1_cipher(data).is_err(), "one cipher read two ways");
            check_vault_ciphertext(&l.wrapped);
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The first half as the v2 sealed bytes, the rest as the annotation.
    let (sealed, wrapped) = data.split_at(data.len() / 2);
    if let Ok(l) = wire::parse_v2_local(sealed, wrapped) {
        assert_eq!(l.sealed, sealed);
        assert_eq!(l.wrapped.as_str().as_bytes(), wrapped);
        check_vault_ciphertext(&l.wrapped);
    }
    match wire::parse_v1_cipher(data) {
        Ok(c) => {
            assert!(data.len() <= V1_MAX_CIPHER, "{} bytes accepted", data.len());
            match &c.key {
                Some(key) => assert_eq!(
                    wire::v1_cipher(key, &c.ciphertext),
                    data,
                    "v1 framing does not round-trip"
                ),
                None => assert_eq!(c.ciphertext.as_str().as_bytes(), data, "bare v1 cipher changed"),
            }
            check_vault_ciphertext(&c.ciphertext);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    match wire::parse_v2_ciphertext(data) {
        Ok(ct) => {
            assert!(data.len() <= V2_MAX_CIPHERTEXT, "{} bytes accepted", data.len());
            assert_eq!(ct.as_str().as_bytes(), data, "v2 ciphertext changed by parsing");
            check_vault_ciphertext(&ct);
            assert_eq!(
                wire::parse_v1_cipher(data),
                Ok(V1Cipher {
                    key: None,
                    ciphertext: ct
                }),
                "a v2 ciphertext is not read as a bare v1 cipher"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
