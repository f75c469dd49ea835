//! `serve`'s configuration: one struct, its defaults in one place, built in
//! one step from flags, environment, a JSON file and defaults (in that order
//! of precedence) and validated once, with errors that say what to change.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{
    DEFAULT_LOCAL_KEK_MAX_AGE, DEFAULT_LOCAL_KEK_MAX_USES, MAX_LOCAL_KEK_MAX_AGE, MAX_LOCAL_KEK_MAX_USES,
    MIN_LOCAL_KEK_MAX_AGE,
};
use crate::session::auth::AuthConfig;

mod auth;
mod sources;
mod values;

pub use sources::{parse_config_json, Sources, KEYS, MULTI_KEYS};
use sources::{parsed, Layers};
pub use values::{
    parse_addr, parse_addrs, parse_bool, parse_count, parse_duration, parse_duration_in, parse_key_name, parse_mount,
    parse_server_name, parse_socket,
};
use values::{parse_file, split_list};

/// Default address of the HTTP endpoints: loopback only, as kubelet probes
/// of a hostNetwork static pod can reach it and nothing off the host can.
pub const DEFAULT_HTTP_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8787));
/// Default socket, where kubeadm guides and most plugins put it.
pub const DEFAULT_SOCKET: &str = "/var/run/kmsplugin/kms.sock";
/// Vault's default transit mount path.
pub const DEFAULT_TRANSIT_MOUNT: &str = "transit";
/// Budget for one Vault call: with gRPC overhead the answer stays well inside
/// the apiserver's default 3 s deadline (`limits::APISERVER_DEFAULT_DEADLINE`).
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests handled at once (each on its own thread) before new ones get
/// RESOURCE_EXHAUSTED. The apiserver shares one connection across all its
/// goroutines; 256 covers a v1 cold start's burst of Decrypts on 2 cores
/// while capping threads and Vault connections.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Time in-flight requests get to finish after SIGTERM: longer than the
/// apiserver's 3 s deadline, so a request that can still succeed does.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_VAULT_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_VAULT_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_MAX_IN_FLIGHT: usize = 4096;
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// Vault clusters have 3 or 5 nodes; 16 addresses cover any sane list while
/// bounding how many nodes one request may try.
pub const MAX_VAULT_ADDRS: usize = 16;
/// Old transit keys kept for decryption during a key migration.
pub const MAX_DECRYPT_KEYS: usize = 16;

/// The resolved configuration of `trousseau serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unix socket path. Defaults to [`DEFAULT_SOCKET`].
    pub socket: PathBuf,
    /// How to reach Vault: addresses (at least one), namespace, TLS and
    /// the per-request budget (defaults: no namespace, the bundled web PKI
    /// roots, verification on, [`DEFAULT_VAULT_TIMEOUT`]).
    pub vault: crate::vault::Settings,
    /// Transit mount path. Defaults to `transit`.
    pub transit_mount: String,
    /// Transit key name: encrypts every new DEK. Required.
    pub transit_key: String,
    /// Older transit keys (same mount) that still decrypt. Defaults to none.
    pub decrypt_keys: Vec<String>,
    /// How the plugin authenticates. Defaults to a token.
    pub auth: AuthConfig,
    /// Cap on requests in flight. Defaults to [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Whether concurrent transit calls for one key and operation are
    /// coalesced into `batch_input` calls. Defaults to true.
    pub coalesce: bool,
    /// Whether DEKs are sealed in the plugin under a local KEK that transit
    /// wraps (`--local-kek`). Defaults to false.
    pub local_kek: bool,
    /// Seals per local KEK. Defaults to [`DEFAULT_LOCAL_KEK_MAX_USES`].
    pub local_kek_max_uses: u64,
    /// Age at which a local KEK is replaced. Defaults to
    /// [`DEFAULT_LOCAL_KEK_MAX_AGE`].
    pub local_kek_max_age: Duration,
    /// Drain time after SIGTERM. Defaults to [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Duration,
    /// Where `/livez`, `/readyz`, `/healthz` and `/metrics` are served;
    /// `None` (an empty value) turns them off. Defaults to [`DEFAULT_HTTP_ADDR`].
    pub http_addr: Option<std::net::SocketAddr>,
}

/// A configuration the plugin refuses to start with.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl Config {
    /// Resolves and validates the configuration in one step.
    pub fn resolve(src: &Sources<'_>) -> Result<Config, ConfigError> {
        let layers = Layers::load(src)?;
        let lookup = |key: &'static str| layers.get(key);

        let socket = parsed(lookup("socket"), parse_socket)?.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let vault_addrs = parsed(lookup("vault-addr"), parse_addrs)?.unwrap_or_default();
        if vault_addrs.is_empty() {
            return err("no Vault address: set --vault-addr or VAULT_ADDR (e.g. https://vault.example:8200)");
        }
        let transit_mount =
            parsed(lookup("transit-mount"), parse_mount)?.unwrap_or_else(|| DEFAULT_TRANSIT_MOUNT.to_owned());
        let Some(transit_key) = parsed(lookup("transit-key"), parse_key_name)? else {
            return err("no transit key: set --transit-key to the name of the transit key that protects DEKs");
        };
        let decrypt_keys = parsed(lookup("decrypt-key"), |raw| {
            let mut keys: Vec<String> = Vec::new();
            for k in split_list(raw) {
                let k = parse_key_name(k)?;
                if k == transit_key {
                    return Err(format!("\"{k}\" is the --transit-key itself; list only older keys"));
                }
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            if keys.len() > MAX_DECRYPT_KEYS {
                return Err(format!("at most {MAX_DECRYPT_KEYS} keys"));
            }
            Ok(keys)
        })?
        .unwrap_or_default();
        let vault_namespace = lookup("vault-namespace")
            .map(|v| v.raw.trim_matches('/').to_owned())
            .filter(|s| !s.is_empty());
        let vault_cacert = parsed(lookup("vault-cacert"), |raw| parse_file(raw, "CA file"))?;
        let vault_client_cert = parsed(lookup("vault-client-cert"), |raw| parse_file(raw, "client certificate"))?;
        let vault_client_key = parsed(lookup("vault-client-key"), |raw| parse_file(raw, "client key"))?;
        if vault_client_cert.is_some() != vault_client_key.is_some() {
            return err("--vault-client-cert and --vault-client-key (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY) go together: set both or neither");
        }
        let vault_tls_server_name = parsed(lookup("vault-tls-server-name"), parse_server_name)?;
        let vault_skip_verify = parsed(lookup("vault-skip-verify"), parse_bool)?.unwrap_or(false);
        let vault_proxy = parsed(lookup("vault-proxy"), parse_addr)?;
        if vault_proxy.is_some() && vault_tls_server_name.is_some() {
            return err("--vault-proxy and --vault-tls-server-name cannot be combined: the server name override pins each node's address, which a proxy would then be asked to resolve");
        }
        let vault_timeout = parsed(lookup("vault-timeout"), |raw| {
            parse_duration_in(
                raw,
                MIN_VAULT_TIMEOUT..=MAX_VAULT_TIMEOUT,
                "100ms to 60s (below the apiserver's KMS timeout, 3s by default)",
            )
        })?
        .unwrap_or(DEFAULT_VAULT_TIMEOUT);
        let max_in_flight = parsed(lookup("max-in-flight"), |raw| {
            // The bound is small, so the count fits a usize.
            parse_count(raw, MAX_MAX_IN_FLIGHT as u64).map(|n| n as usize)
        })?
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        let coalesce = parsed(lookup("coalesce"), parse_bool)?.unwrap_or(true);
        let local_kek = parsed(lookup("local-kek"), parse_bool)?.unwrap_or(false);
        let local_kek_max_uses = parsed(lookup("local-kek-max-uses"), |raw| {
            parse_count(raw, MAX_LOCAL_KEK_MAX_USES)
        })?;
        let local_kek_max_age = parsed(lookup("local-kek-max-age"), |raw| {
            parse_duration_in(
                raw,
                MIN_LOCAL_KEK_MAX_AGE..=MAX_LOCAL_KEK_MAX_AGE,
                "1s to 1440m (24 hours)",
            )
        })?;
        if !local_kek && (local_kek_max_uses.is_some() || local_kek_max_age.is_some()) {
            return err("--local-kek-max-uses and --local-kek-max-age apply only with --local-kek: add --local-kek, or drop them");
        }
        let shutdown_timeout = parsed(lookup("shutdown-timeout"), |raw| {
            let d = parse_duration(raw)?;
            if d <= MAX_SHUTDOWN_TIMEOUT {
                Ok(d)
            } else {
                Err(format!("{raw} is too long; use at most 300s"))
            }
        })?
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);

        let http_addr = match lookup("http-addr") {
            Some(v) if v.raw.trim().is_empty() => None,
            v => Some(
                parsed(v, |raw| {
                    raw.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                        format!("\"{raw}\" is not IP:PORT (e.g. 127.0.0.1:8787); empty turns the endpoints off")
                    })
                })?
                .unwrap_or(DEFAULT_HTTP_ADDR),
            ),
        };
        let auth = auth::resolve(&layers, vault_client_cert.is_some())?;

        Ok(Config {
            socket,
            vault: crate::vault::Settings {
                addrs: vault_addrs,
                namespace: vault_namespace,
                cacert: vault_cacert,
                client_cert: vault_client_cert,
                client_key: vault_client_key,
                tls_server_name: vault_tls_server_name,
                skip_verify: vault_skip_verify,
                proxy: vault_proxy,
                timeout: vault_timeout,
            },
            transit_mount,
            transit_key,
            decrypt_keys,
            auth,
            max_in_flight,
            coalesce,
            local_kek,
            local_kek_max_uses: local_kek_max_uses.unwrap_or(DEFAULT_LOCAL_KEK_MAX_USES),
            local_kek_max_age: local_kek_max_age.unwrap_or(DEFAULT_LOCAL_KEK_MAX_AGE),
            shutdown_timeout,
            http_addr,
        })
    }

    /// The configuration as one log line, with every credential left out.
    pub fn summary(&self) -> String {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "socket={} vault_addrs={} transit={}/{} decrypt_keys={} auth=[{}] namespace={} cacert={} client_cert={} tls_server_name={} skip_verify={} proxy={} vault_timeout={:?} max_in_flight={} coalesce={} local_kek={} shutdown_timeout={:?} http_addr={}",
            self.socket.display(),
            self.vault.addrs.join(","),
            self.transit_mount,
            self.transit_key,
            if self.decrypt_keys.is_empty() { "-".to_owned() } else { self.decrypt_keys.join(",") },
            self.auth.describe(),
            self.vault.namespace.as_deref().unwrap_or("-"),
            path(&self.vault.cacert),
            path(&self.vault.client_cert),
            self.vault.tls_server_name.as_deref().unwrap_or("-"),
            self.vault.skip_verify,
            self.vault.proxy.as_deref().unwrap_or("none"),
            self.vault.timeout,
            self.max_in_flight,
            self.coalesce,
            if self.local_kek {
                format!("max_uses:{},max_age:{:?}", self.local_kek_max_uses, self.local_kek_max_age)
            } else {
                "off".to_owned()
            },
            self.shutdown_timeout,
            self.http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
