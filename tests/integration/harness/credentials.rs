//! Vault sessions for the tests: AppRole roles with short token TTLs, token
//! files replaced the way Vault Agent does it, and an audit log that counts
//! what the plugin really asked OpenBao for.

use std::path::{Path, PathBuf};

use super::{vault_call, vault_ok, Bao};

/// The least-privilege transit policy for `key` (the token also keeps the
/// `default` policy: lookup-self and renew-self).
pub fn transit_policy(keys_encrypt: &[&str], keys_decrypt: &[&str]) -> String {
    let mut hcl = String::new();
    for k in keys_encrypt {
        hcl.push_str(&format!(
            "path \"transit/encrypt/{k}\" {{\n  capabilities = [\"update\"]\n}}\n\
             path \"transit/keys/{k}\" {{\n  capabilities = [\"read\"]\n}}\n"
        ));
    }
    for k in keys_decrypt {
        hcl.push_str(&format!(
            "path \"transit/decrypt/{k}\" {{\n  capabilities = [\"update\"]\n}}\n"
        ));
    }
    hcl
}

/// Writes `text` to `path` the way Vault Agent's file sink and kubelet do:
/// to a temp file in the same directory, then rename over the target.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Creates policy `name` from `hcl` and a token with it (plus `default`).
pub fn token_with(bao: &Bao, name: &str, hcl: &str, ttl: &str) -> String {
    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        &format!("sys/policies/acl/{name}"),
        Some(serde_json::json!({ "policy": hcl })),
    );
    let v = vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "auth/token/create",
        Some(serde_json::json!({ "policies": [name], "ttl": ttl })),
    );
    v["auth"]["client_token"].as_str().unwrap().to_owned()
}

/// Revokes a token (and its children) with the root token.
pub fn revoke_token(bao: &Bao, token: &str) {
    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "auth/token/revoke",
        Some(serde_json::json!({ "token": token })),
    );
}

/// The accessors of the live tokens whose policies include `policy`.
pub fn accessors_with_policy(bao: &Bao, policy: &str) -> Vec<String> {
    let v = vault_ok(&bao.addr, &bao.token, "GET", "auth/token/accessors?list=true", None);
    let mut out = Vec::new();
    for a in v["data"]["keys"].as_array().cloned().unwrap_or_default() {
        let a = a.as_str().unwrap().to_owned();
        let (s, t) = vault_call(
            &bao.addr,
            &bao.token,
            "POST",
            "auth/token/lookup-accessor",
            Some(serde_json::json!({ "accessor": a })),
        );
        if s != 200 {
            continue; // expired between list and lookup
        }
        let has = t["data"]["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == policy));
        if has {
            out.push(a);
        }
    }
    out
}

pub fn revoke_accessor(bao: &Bao, accessor: &str) {
    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "auth/token/revoke-accessor",
        Some(serde_json::json!({ "accessor": accessor })),
    );
}

/// An AppRole role on a dev server, with its role_id and secret_id written
/// to files for the plugin's `--approle-role-id-file` and
/// `--approle-secret-id-file`.
pub struct AppRole {
    pub mount: String,
    pub role: String,
    pub policy: String,
    pub role_id: String,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
}

impl AppRole {
    /// Enables AppRole at `approle/` (if needed), writes policy `role`-pol
    /// from `hcl` and creates role `role` with it and `role_opts` (e.g.
    /// `token_ttl`, `token_max_ttl`, `secret_id_num_uses`), then a first
    /// secret_id in the file.
    pub fn setup(bao: &Bao, dir: &Path, role: &str, hcl: &str, role_opts: serde_json::Value) -> AppRole {
        let mount = "approle".to_owned();
        let (s, v) = vault_call(
            &bao.addr,
            &bao.token,
            "POST",
            &format!("sys/auth/{mount}"),
            Some(serde_json::json!({"type": "approle"})),
        );
        assert!(
            s == 204 || s == 200 || v.to_string().contains("path is already in use"),
            "enable approle: {s} {v}"
        );
        let policy = format!("{role}-pol");
        vault_ok(
            &bao.addr,
            &bao.token,
            "POST",
            &format!("sys/policies/acl/{policy}"),
            Some(serde_json::json!({ "policy": hcl })),
        );
        let mut opts = role_opts;
        opts["token_policies"] = serde_json::json!([policy]);
        vault_ok(
            &bao.addr,
            &bao.token,
            "POST",
            &format!("auth/{mount}/role/{role}"),
            Some(opts),
        );
        let v = vault_ok(
            &bao.addr,
            &bao.token,
            "GET",
            &format!("auth/{mount}/role/{role}/role-id"),
            None,
        );
        let role_id = v["data"]["role_id"].as_str().unwrap().to_owned();
        let role_id_file = dir.join(format!("{role}.role-id"));
        let secret_id_file = dir.join(format!("{role}.secret-id"));
        std::fs::write(&role_id_file, &role_id).unwrap();
        let a = AppRole {
            mount,
            role: role.to_owned(),
            policy,
            role_id,
            role_id_file,
            secret_id_file,
        };
        let sid = a.new_secret_id(bao);
        write_atomic(&a.secret_id_file, &sid);
        a
    }

    /// A fresh secret_id (not written anywhere).
    pub fn new_secret_id(&self, bao: &Bao) -> String {
        let v = vault_ok(
            &bao.addr,
            &bao.token,
            "POST",
            &format!("auth/{}/role/{}/secret-id", self.mount, self.role),
            Some(serde_json::json!({})),
        );
        v["data"]["secret_id"].as_str().unwrap().to_owned()
    }

    pub fn destroy_secret_id(&self, bao: &Bao, secret_id: &str) {
        vault_ok(
            &bao.addr,
            &bao.token,
            "POST",
            &format!("auth/{}/role/{}/secret-id/destroy", self.mount, self.role),
            Some(serde_json::json!({ "secret_id": secret_id })),
        );
    }

    /// Logs in directly; returns (HTTP status, `auth` object).
    pub fn login(&self, bao: &Bao, secret_id: &str) -> (u16, serde_json::Value) {
        let (s, v) = vault_call(
            &bao.addr,
            "",
            "POST",
            &format!("auth/{}/login", self.mount),
            Some(serde_json::json!({ "role_id": self.role_id, "secret_id": secret_id })),
        );
        (s, v["auth"].clone())
    }

    /// The flags that make the plugin log in with this role.
    pub fn plugin_args(&self) -> Vec<String> {
        vec![
            "--auth-method".into(),
            "approle".into(),
            "--approle-role-id-file".into(),
            self.role_id_file.display().to_string(),
            "--approle-secret-id-file".into(),
            self.secret_id_file.display().to_string(),
        ]
    }
}

/// An OpenBao file audit log (see [`Bao::dev_audited`]).
pub struct AuditLog(pub PathBuf);

impl AuditLog {
    /// Successful responses to requests on `path` (e.g.
    /// `auth/approle/login`, `auth/token/renew-self`).
    pub fn ok_responses(&self, path: &str) -> usize {
        self.responses(path).filter(|e| !has_error(e)).count()
    }

    /// Failed responses to requests on `path`.
    pub fn failed_responses(&self, path: &str) -> usize {
        self.responses(path).filter(has_error).count()
    }

    fn responses(&self, path: &str) -> impl Iterator<Item = serde_json::Value> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let path = path.to_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(move |e| e["type"] == "response" && e["request"]["path"] == path.as_str())
            .collect::<Vec<_>>()
            .into_iter()
    }
}

fn has_error(e: &serde_json::Value) -> bool {
    e["error"].as_str().is_some_and(|s| !s.is_empty())
}
