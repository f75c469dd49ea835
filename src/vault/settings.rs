//! What the Vault client needs to know, and nothing more: its own small
//! settings (a part of the resolved configuration, `Config::vault`), and the one parser of a Vault address, which config uses
//! for `--vault-addr` and the client for a 307's target.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach Vault. Each field is named after the `--vault-*` flag it
/// comes from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Every node, `https://host:port` (`--vault-addr`).
    pub addrs: Vec<String>,
    /// `X-Vault-Namespace` (`--vault-namespace`).
    pub namespace: Option<String>,
    /// PEM CA bundle to verify Vault with (`--vault-cacert`).
    pub cacert: Option<PathBuf>,
    /// PEM client certificate and key (`--vault-client-cert`, `--vault-client-key`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name Vault's certificate is checked against (`--vault-tls-server-name`).
    pub tls_server_name: Option<String>,
    /// Skip TLS verification (`--vault-skip-verify`).
    pub skip_verify: bool,
    /// An HTTP proxy every node is reached through (`--vault-proxy`); none
    /// when unset, whatever HTTPS_PROXY, HTTP_PROXY or ALL_PROXY say.
    pub proxy: Option<String>,
    /// One request's whole Vault budget (`--vault-timeout`).
    pub timeout: Duration,
}

/// `scheme://host[:port]`, `https` or `http`, no path, query or user; a
/// trailing `/` and surrounding spaces are dropped.
pub fn parse_addr(raw: &str) -> Result<String, String> {
    let a = raw.trim().trim_end_matches('/');
    let rest = a
        .strip_prefix("https://")
        .or_else(|| a.strip_prefix("http://"))
        .ok_or_else(|| format!("\"{raw}\" must start with https:// or http://"))?;
    if rest.is_empty() {
        return Err(format!("\"{raw}\" has no host"));
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') || rest.contains('@') {
        return Err(format!(
            "\"{raw}\" must be scheme://host[:port] with no path, query or user"
        ));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("\"{raw}\" contains whitespace"));
    }
    Ok(a.to_owned())
}
