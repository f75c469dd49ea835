//! The auth method and its inputs, from the `auth-*` keys and the
//! method's own files; the token method's sources in their own order.

use std::path::PathBuf;

use super::sources::{parsed, Layers};
use super::values::{parse_file, parse_key_name, parse_mount};
use super::{err, ConfigError};
use crate::secret::Secret;
use crate::session::auth::{read_credential, AuthConfig, TokenSource, DEFAULT_K8S_TOKEN_FILE, METHODS};

/// The auth method and its inputs. Options that belong to another method
/// are refused rather than ignored, so a typo'd method cannot go unnoticed.
pub(super) fn resolve(layers: &Layers<'_>, has_client_cert: bool) -> Result<AuthConfig, ConfigError> {
    let lookup = |key: &'static str| layers.get(key);
    let method = parsed(lookup("auth-method"), |raw| {
        let m = raw.trim().to_ascii_lowercase();
        METHODS
            .iter()
            .find(|x| **x == m)
            .copied()
            .ok_or_else(|| format!("\"{raw}\" is not an auth method; use one of {}", METHODS.join(", ")))
    })?
    .unwrap_or("token");
    let owners: &[(&'static str, &[&str])] = &[
        ("auth-mount", &["approle", "cert", "jwt", "kubernetes"]),
        ("auth-role", &["cert", "jwt", "kubernetes"]),
        ("vault-token-file", &["token"]),
        ("approle-role-id-file", &["approle"]),
        ("approle-secret-id-file", &["approle"]),
        ("jwt-file", &["jwt", "kubernetes"]),
    ];
    for (key, methods) in owners {
        if let Some(v) = lookup(key) {
            if !methods.contains(&method) {
                return err(format!(
                    "{} is not used by --auth-method {method} (it belongs to {})",
                    v.describe(),
                    methods.join(", ")
                ));
            }
        }
    }
    let mount = parsed(lookup("auth-mount"), parse_mount)?.unwrap_or_else(|| method.to_owned());
    let role = parsed(lookup("auth-role"), parse_key_name)?;
    let file = |key: &'static str, what: &str| parsed(lookup(key), |raw| parse_file(raw, what));
    let need_role = |role: Option<String>| {
        role.ok_or_else(|| {
            ConfigError(format!(
                "--auth-method {method} needs --auth-role (the Vault role to log in as)"
            ))
        })
    };
    Ok(match method {
        "approle" => {
            let (Some(role_id_file), Some(secret_id_file)) = (
                file("approle-role-id-file", "role_id file")?,
                file("approle-secret-id-file", "secret_id file")?,
            ) else {
                return err("--auth-method approle needs --approle-role-id-file and --approle-secret-id-file");
            };
            AuthConfig::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            }
        }
        "cert" => {
            if !has_client_cert {
                return err("--auth-method cert needs --vault-client-cert and --vault-client-key (or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)");
            }
            AuthConfig::Cert { mount, role }
        }
        "jwt" => {
            let role = need_role(role)?;
            let Some(jwt_file) = file("jwt-file", "JWT file")? else {
                return err("--auth-method jwt needs --jwt-file (the file holding the JWT)");
            };
            AuthConfig::Jwt { mount, role, jwt_file }
        }
        "kubernetes" => {
            let role = need_role(role)?;
            let jwt_file = file("jwt-file", "JWT file")?.unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_TOKEN_FILE));
            AuthConfig::Kubernetes { mount, role, jwt_file }
        }
        _ => {
            // Token: --vault-token-file, then VAULT_TOKEN, then the file's key.
            let check = |path: &str, what: &str| -> Result<AuthConfig, ConfigError> {
                let p = PathBuf::from(path);
                read_credential(&p, what).map_err(ConfigError)?;
                Ok(AuthConfig::Token(TokenSource::File(p)))
            };
            if let Some(path) = layers.flag("vault-token-file") {
                check(path, "--vault-token-file")?
            } else if let Some(t) = layers.env("VAULT_TOKEN").filter(|t| !t.trim().is_empty()) {
                AuthConfig::Token(TokenSource::Env(Secret::new(t.trim().to_owned())))
            } else if let Some(path) = layers.file("vault-token-file") {
                check(path, "config file key \"vault-token-file\"")?
            } else {
                return err(
                    "no Vault token: set VAULT_TOKEN or --vault-token-file PATH, or choose another --auth-method",
                );
            }
        }
    })
}
