//! How the plugin proves itself to Vault: the auth method chosen in the
//! configuration and what each one sends to log in. Credentials are read
//! from their files at every login (so rotated files take effect), and
//! every value read here is a [`Secret`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::limits::MAX_CREDENTIAL_FILE;
use crate::secret::Secret;

/// Where the kubelet mounts a pod's service-account token.
pub const DEFAULT_K8S_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The methods `--auth-method` accepts.
pub const METHODS: &[&str] = &["token", "approle", "cert", "jwt", "kubernetes"];

/// Where a static token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `VAULT_TOKEN`: fixed for the life of the process.
    Env(Secret),
    /// `--vault-token-file`: re-read whenever the file changes.
    File(PathBuf),
}

/// The configured auth method with everything it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    Token(TokenSource),
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
    /// TLS client certificate login; the certificate itself is the
    /// transport's (`--vault-client-cert`).
    Cert {
        mount: String,
        role: Option<String>,
    },
    Jwt {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
}

/// A login call: `POST /v1/<path>` with a JSON body holding credentials.
pub struct LoginRequest {
    pub path: String,
    pub body: Secret,
}

impl AuthConfig {
    /// The method's name as `--auth-method` spells it.
    pub fn method(&self) -> &'static str {
        match self {
            AuthConfig::Token(_) => "token",
            AuthConfig::AppRole { .. } => "approle",
            AuthConfig::Cert { .. } => "cert",
            AuthConfig::Jwt { .. } => "jwt",
            AuthConfig::Kubernetes { .. } => "kubernetes",
        }
    }

    /// `auth/<mount>` for login methods; `auth/token` for tokens.
    pub fn mount_path(&self) -> String {
        match self {
            AuthConfig::Token(_) => "auth/token".to_owned(),
            AuthConfig::AppRole { mount, .. }
            | AuthConfig::Cert { mount, .. }
            | AuthConfig::Jwt { mount, .. }
            | AuthConfig::Kubernetes { mount, .. } => format!("auth/{mount}"),
        }
    }

    /// Whether the plugin can obtain a new token by itself.
    pub fn can_login(&self) -> bool {
        !matches!(self, AuthConfig::Token(_))
    }

    /// The files holding credentials the operator provides, named as their
    /// flags are (the kubernetes method's service-account token is the
    /// kubelet's, and left out).
    pub fn credential_files(&self) -> Vec<(&'static str, &Path)> {
        match self {
            AuthConfig::Token(TokenSource::File(p)) => vec![("--vault-token-file", p.as_path())],
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => vec![
                ("--approle-role-id-file", role_id_file.as_path()),
                ("--approle-secret-id-file", secret_id_file.as_path()),
            ],
            AuthConfig::Jwt { jwt_file, .. } => vec![("--jwt-file", jwt_file.as_path())],
            _ => Vec::new(),
        }
    }

    /// The token file to watch, if any.
    pub fn token_file(&self) -> Option<&Path> {
        match self {
            AuthConfig::Token(TokenSource::File(p)) => Some(p),
            _ => None,
        }
    }

    /// For log lines: method, mount and credential sources, no secrets.
    pub fn describe(&self) -> String {
        match self {
            AuthConfig::Token(TokenSource::Env(_)) => "token from VAULT_TOKEN".to_owned(),
            AuthConfig::Token(TokenSource::File(p)) => format!("token from file {} (reloaded on change)", p.display()),
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => format!(
                "approle at {} (role_id {}, secret_id {})",
                self.mount_path(),
                role_id_file.display(),
                secret_id_file.display()
            ),
            AuthConfig::Cert { role, .. } => format!(
                "cert at {} (role {})",
                self.mount_path(),
                role.as_deref().unwrap_or("any matching")
            ),
            AuthConfig::Jwt { role, jwt_file, .. } | AuthConfig::Kubernetes { role, jwt_file, .. } => format!(
                "{} at {} (role {role}, jwt {})",
                self.method(),
                self.mount_path(),
                jwt_file.display()
            ),
        }
    }

    /// Builds the login call, reading credential files now. `None` for the
    /// token method, which has nothing to log in with.
    pub fn login_request(&self) -> Result<Option<LoginRequest>, String> {
        let body = match self {
            AuthConfig::Token(_) => return Ok(None),
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => {
                let role_id = read_credential(role_id_file, "--approle-role-id-file")?;
                let secret_id = read_credential(secret_id_file, "--approle-secret-id-file")?;
                serde_json::json!({ "role_id": role_id.expose(), "secret_id": secret_id.expose() })
            }
            AuthConfig::Cert { role: Some(r), .. } => serde_json::json!({ "name": r }),
            AuthConfig::Cert { role: None, .. } => serde_json::json!({}),
            AuthConfig::Jwt { role, jwt_file, .. } | AuthConfig::Kubernetes { role, jwt_file, .. } => {
                let jwt = read_credential(jwt_file, "--jwt-file")?;
                serde_json::json!({ "role": role, "jwt": jwt.expose() })
            }
        };
        Ok(Some(LoginRequest {
            path: format!("{}/login", self.mount_path()),
            body: Secret::new(body.to_string()),
        }))
    }
}

impl fmt::Display for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Reads a one-line credential (token, role_id, secret_id, JWT): trimmed,
/// non-empty, no whitespace inside. Errors name the file, never its content.
/// Only a regular file is read, opened without waiting (`files`): a named
/// pipe or a device put at the path is refused at once instead of blocking
/// the caller.
pub fn read_credential(path: &Path, what: &str) -> Result<Secret, String> {
    let mut s =
        crate::files::read_small(path, MAX_CREDENTIAL_FILE).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("{what} {}: the file is empty", path.display()));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {}: must hold a single value (whitespace found inside)",
            path.display()
        ));
    }
    let secret = Secret::new(t.to_owned());
    zeroize::Zeroize::zeroize(&mut s);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("trousseau-auth-{}-{name}", std::process::id()));
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn approle_login_reads_files_each_time() {
        let rid = tmp("rid", "role-1\n");
        let sid = tmp("sid", "secret-1\n");
        let a = AuthConfig::AppRole {
            mount: "approle".into(),
            role_id_file: rid,
            secret_id_file: sid.clone(),
        };
        let r = a.login_request().unwrap().unwrap();
        assert_eq!(r.path, "auth/approle/login");
        let v: serde_json::Value = serde_json::from_str(r.body.expose()).unwrap();
        assert_eq!(v["secret_id"], "secret-1");
        std::fs::write(&sid, "secret-2").unwrap();
        let r = a.login_request().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(r.body.expose()).unwrap();
        assert_eq!(
            v["secret_id"], "secret-2",
            "a rotated secret_id is used at the next login"
        );
        assert_eq!(v["role_id"], "role-1");
    }

    #[test]
    fn bodies_and_paths() {
        let jwt = tmp("jwt", "eyJ.a.b");
        let k = AuthConfig::Kubernetes {
            mount: "k8s/prod".into(),
            role: "kms".into(),
            jwt_file: jwt,
        };
        let r = k.login_request().unwrap().unwrap();
        assert_eq!(r.path, "auth/k8s/prod/login");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(r.body.expose()).unwrap(),
            serde_json::json!({"role": "kms", "jwt": "eyJ.a.b"})
        );
        let c = AuthConfig::Cert {
            mount: "cert".into(),
            role: None,
        };
        assert_eq!(c.login_request().unwrap().unwrap().body.expose(), "{}");
        assert!(AuthConfig::Token(TokenSource::Env(Secret::new("t".into())))
            .login_request()
            .unwrap()
            .is_none());
    }

    #[test]
    fn credential_errors_name_the_file_not_the_content() {
        let bad = tmp("two-words", "s.secretvalue other\n");
        let e = read_credential(&bad, "--jwt-file").unwrap_err();
        assert!(
            e.contains("--jwt-file") && e.contains("whitespace") && !e.contains("secretvalue"),
            "{e}"
        );
        let e = read_credential(Path::new("/nonexistent/x"), "--approle-secret-id-file").unwrap_err();
        assert!(e.contains("/nonexistent/x"), "{e}");
        let empty = tmp("empty", " \n");
        assert!(read_credential(&empty, "x").unwrap_err().contains("empty"));
        let a = AuthConfig::AppRole {
            mount: "approle".into(),
            role_id_file: bad.clone(),
            secret_id_file: bad,
        };
        assert!(!a.describe().contains("secretvalue") && !format!("{a:?}").contains("secretvalue"));
    }
}
