//! `trousseau check`: a preflight with `serve`'s configuration that walks
//! what the plugin needs, one step per line, each failure with what to fix:
//! configuration, every Vault node (reachable, TLS, unsealed), the auth
//! method, the transit key, encrypt, decrypt and a round trip, and decrypt
//! on every `--decrypt-key`. No socket is created.

use std::time::Instant;

use base64::Engine as _;

use crate::config::Config;
use crate::limits::HEALTH_CHECK_PLAINTEXT;
use crate::session::auth::AuthConfig;
use crate::session::Session;
use crate::vault::{VaultClient, VaultError, VaultErrorClass};
use crate::wire::{KeyName, VaultCiphertext};

/// Key types transit can encrypt a DEK with (authenticated encryption).
const ENCRYPTING_TYPES: &[&str] = &[
    "aes256-gcm96",
    "aes128-gcm96",
    "chacha20-poly1305",
    "xchacha20-poly1305",
];

#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, step: &str, detail: impl AsRef<str>) {
        println!("ok    {step:<12} {}", detail.as_ref());
    }
    fn warn(&mut self, step: &str, detail: impl AsRef<str>) {
        println!("warn  {step:<12} {}", detail.as_ref());
    }
    fn fail(&mut self, step: &str, detail: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failed += 1;
        println!("FAIL  {step:<12} {}", detail.as_ref());
        println!("      {:<12} fix: {}", "", fix.as_ref());
    }
}

/// Runs every step; `Err` names how many failed.
pub fn run(cfg: &Config) -> Result<(), String> {
    let mut r = Report::default();
    r.ok(
        "config",
        format!(
            "transit key {}/{}, {} Vault address(es), auth {}",
            cfg.transit_mount,
            cfg.transit_key,
            cfg.vault.addrs.len(),
            cfg.auth.describe()
        ),
    );
    let vault = match VaultClient::new(&cfg.vault) {
        Ok(v) => v,
        Err(e) => {
            r.fail(
                "tls",
                e,
                "point --vault-cacert and --vault-client-cert/--vault-client-key at readable PEM files",
            );
            return finish(&r);
        }
    };
    let deadline = || Instant::now() + cfg.vault.timeout;

    let mut reachable = 0;
    for node in vault.health_of_each(deadline()) {
        let addr = node.addr;
        match node.health {
            Ok(h) => {
                reachable += 1;
                let role = if h.standby { "standby" } else { "active" };
                r.ok("vault", format!("{addr}: {role}, version {}", h.version));
            }
            Err(e) => {
                let fix = match &e {
                    VaultError::Status { status: 503, .. } => "unseal this node (or remove it from --vault-addr)",
                    VaultError::Status { status: 501, .. } => "initialise Vault (bao operator init)",
                    VaultError::Unreachable { cause, .. } if cause.contains("TLS") => {
                        "see the message: set --vault-cacert to the CA that signed Vault's certificate, or --vault-tls-server-name to a name it holds"
                    }
                    _ => "check --vault-addr, that Vault listens there and that this host can reach it",
                };
                r.fail("vault", e.to_string(), fix);
            }
        }
    }
    if reachable == 0 {
        return finish(&r);
    }

    let session = match Session::start(cfg.auth.clone(), vault.clone(), cfg.vault.timeout) {
        Ok(s) => s,
        Err(e) => {
            r.fail("auth", e, auth_fix(&cfg.auth));
            return finish(&r);
        }
    };
    let token = session.ticket().token;
    let ttl = session
        .ttl_left()
        .map_or_else(|| "never expires".to_owned(), |d| format!("ttl {}s", d.as_secs()));
    r.ok("auth", format!("{}: token valid, {ttl}", cfg.auth.describe()));

    let key = KeyName {
        mount: cfg.transit_mount.clone(),
        key: cfg.transit_key.clone(),
    };
    match vault.read_key(&token, &key, deadline()) {
        Ok(k) if !ENCRYPTING_TYPES.contains(&k.kind.as_str()) => r.fail(
            "key",
            format!("{key} is of type {}, which cannot encrypt data keys", k.kind),
            "use a key of type aes256-gcm96 (the default of `vault write -f transit/keys/NAME`)",
        ),
        Ok(k) => {
            r.ok(
                "key",
                format!(
                    "{key}: type {}, latest version {}, min decryption version {}",
                    k.kind, k.latest_version, k.min_decryption_version
                ),
            );
            if k.deletion_allowed || k.exportable {
                r.warn(
                    "key",
                    format!(
                        "{key} has deletion_allowed={} exportable={}: a KEK should be neither",
                        k.deletion_allowed, k.exportable
                    ),
                );
            }
        }
        Err(e) if e.class() == VaultErrorClass::Denied => r.warn(
            "key",
            format!(
                "cannot read {}/keys/{}: key ids will carry no creation time, so a key deleted and created again under this name would repeat them; grant \"read\" on that path (deploy/vault/policy.hcl). Encrypt below shows whether the key exists",
                key.mount, key.key
            ),
        ),
        Err(e) if e.class() == VaultErrorClass::NotFound => {
            r.fail(
                "key",
                e.to_string(),
                format!(
                    "create the key: vault write -f {}/keys/{} (trousseau never creates keys)",
                    key.mount, key.key
                ),
            );
            // An encrypt now would create the key if the token may.
            return finish(&r);
        }
        Err(e) => r.fail("key", e.to_string(), "see the message"),
    }

    let ct = match vault.encrypt(&token, &key, HEALTH_CHECK_PLAINTEXT, deadline()) {
        Ok(ct) => {
            r.ok(
                "encrypt",
                format!(
                    "allowed on {}/encrypt/{} (key version {})",
                    key.mount,
                    key.key,
                    ct.version()
                ),
            );
            Some(ct)
        }
        Err(e) => {
            r.fail(
                "encrypt",
                e.to_string(),
                format!(
                    "grant \"update\" on {}/encrypt/{} and check that the key exists (without \"create\", encrypting with a missing key is refused as 403)",
                    key.mount, key.key
                ),
            );
            None
        }
    };
    if let Some(ct) = ct {
        match vault.decrypt(&token, &key, &ct, deadline()) {
            Ok(pt) => {
                r.ok("decrypt", format!("allowed on {}/decrypt/{}", key.mount, key.key));
                if pt == HEALTH_CHECK_PLAINTEXT {
                    r.ok("round trip", "decrypt returned the bytes encrypted");
                } else {
                    r.fail(
                        "round trip",
                        "decrypt returned different bytes",
                        "report this: Vault's transit answered inconsistently",
                    );
                }
            }
            Err(e) => r.fail(
                "decrypt",
                e.to_string(),
                format!("grant \"update\" on {}/decrypt/{}", key.mount, key.key),
            ),
        }
    }

    for old in &cfg.decrypt_keys {
        check_decrypt_key(&mut r, &vault, &token, &cfg.transit_mount, old, deadline());
    }
    finish(&r)
}

/// Decrypt permission on an old key, without a ciphertext of it: a forged
/// ciphertext passes the policy check and then fails authentication (400),
/// while a missing permission is 403 and a missing key "not found".
fn check_decrypt_key(
    r: &mut Report,
    vault: &VaultClient,
    token: &crate::secret::Secret,
    mount: &str,
    name: &str,
    deadline: Instant,
) {
    let key = KeyName {
        mount: mount.to_owned(),
        key: name.to_owned(),
    };
    let forged = format!(
        "vault:v1:{}",
        base64::engine::general_purpose::STANDARD.encode([0u8; 44])
    );
    let Ok(ct) = VaultCiphertext::parse(&forged, "check ciphertext") else {
        return r.fail("decrypt-key", "internal: forged ciphertext rejected", "report this");
    };
    match vault.decrypt(token, &key, &ct, deadline) {
        Err(e) if e.class() == VaultErrorClass::Rejected => r.ok("decrypt-key", format!("{key}: decrypt allowed")),
        Err(e) if e.class() == VaultErrorClass::Denied => r.fail(
            "decrypt-key",
            e.to_string(),
            format!("grant \"update\" on {mount}/decrypt/{name}"),
        ),
        Err(e) if e.class() == VaultErrorClass::NotFound => r.fail(
            "decrypt-key",
            e.to_string(),
            format!("{key} does not exist; remove it from --decrypt-key or restore it"),
        ),
        Err(e) => r.fail("decrypt-key", e.to_string(), "see the message"),
        Ok(_) => r.fail(
            "decrypt-key",
            format!("{key} decrypted a forged ciphertext"),
            "report this: Vault's transit answered inconsistently",
        ),
    }
}

fn auth_fix(auth: &AuthConfig) -> String {
    match auth {
        AuthConfig::Token(_) => "check VAULT_TOKEN or --vault-token-file: the token must be valid and carry Vault's default policy".into(),
        AuthConfig::AppRole { .. } => format!(
            "check the role_id and secret_id files and the role under {}/role/ (is the secret_id expired or used up?)",
            auth.mount_path()
        ),
        AuthConfig::Cert { .. } => format!(
            "check that --vault-client-cert is signed by a CA trusted by a role under {}/certs/ and that Vault's listener asks for client certificates",
            auth.mount_path()
        ),
        AuthConfig::Jwt { .. } => format!(
            "check the JWT (expiry, audience, signer) against the role under {}/role/",
            auth.mount_path()
        ),
        AuthConfig::Kubernetes { .. } => format!(
            "check the service account and namespace bound by the role under {}/role/, and that Vault can reach the TokenReview API",
            auth.mount_path()
        ),
    }
}

fn finish(r: &Report) -> Result<(), String> {
    if r.failed == 0 {
        println!("all checks passed");
        Ok(())
    } else {
        Err(format!("{} check(s) failed", r.failed))
    }
}
