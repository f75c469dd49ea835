//! `serve`'s configuration: one struct, its defaults in one place, built in
//! one step from flags, environment, a JSON file and defaults (in that order
//! of precedence) and validated once, with errors that say what to change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{AuthConfig, TokenSource, DEFAULT_K8S_TOKEN_FILE, METHODS};
use crate::limits::MAX_CONFIG_FILE;
use crate::secret::Secret;

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

/// Keys accepted as `--KEY VALUE` flags and as keys of the JSON file, with
/// the environment variable (if any) that sits between them in precedence.
pub const KEYS: &[(&str, Option<&str>)] = &[
    ("socket", None),
    ("vault-addr", Some("VAULT_ADDR")),
    ("transit-mount", None),
    ("transit-key", None),
    ("decrypt-key", None),
    ("auth-method", None),
    ("auth-mount", None),
    ("auth-role", None),
    ("vault-token-file", None),
    ("approle-role-id-file", None),
    ("approle-secret-id-file", None),
    ("jwt-file", None),
    ("vault-namespace", Some("VAULT_NAMESPACE")),
    ("vault-cacert", Some("VAULT_CACERT")),
    ("vault-client-cert", Some("VAULT_CLIENT_CERT")),
    ("vault-client-key", Some("VAULT_CLIENT_KEY")),
    ("vault-tls-server-name", Some("VAULT_TLS_SERVER_NAME")),
    ("vault-skip-verify", Some("VAULT_SKIP_VERIFY")),
    ("vault-timeout", None),
    ("max-in-flight", None),
    ("shutdown-timeout", None),
    ("http-addr", None),
];

/// Keys that may be given more than once (or comma-separated, or as a JSON
/// array); their values are joined with commas.
pub const MULTI_KEYS: &[&str] = &["vault-addr", "decrypt-key"];

/// Where a value came from, named the way an operator would fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Flag,
    Env(&'static str),
    File,
}

#[derive(Clone, Debug)]
struct Value {
    key: &'static str,
    raw: String,
    origin: Origin,
}

impl Value {
    fn describe(&self) -> String {
        match &self.origin {
            Origin::Flag => format!("--{}", self.key),
            Origin::Env(v) => v.to_string(),
            Origin::File => format!("config file key \"{}\"", self.key),
        }
    }
}

/// Parses a value if some source set it; an error names that source.
fn parsed<T>(v: Option<Value>, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
    v.map(|v| parse(&v.raw).map_err(|m| ConfigError(format!("{}: {m}", v.describe()))))
        .transpose()
}

/// Raw inputs: `flags` are `--key value` pairs already split by the CLI,
/// `env` looks up an environment variable, `config_file` is `--config`.
pub struct Sources<'a> {
    pub flags: &'a BTreeMap<String, String>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Config {
    /// Resolves and validates the configuration in one step.
    pub fn resolve(src: &Sources<'_>) -> Result<Config, ConfigError> {
        let mut file_values = BTreeMap::new();
        for k in src.flags.keys() {
            if k != "config" && !KEYS.iter().any(|(n, _)| n == k) {
                return err(format!("unknown flag --{k} (see `trousseau serve --help`)"));
            }
        }
        if let Some(path) = src.flags.get("config") {
            file_values = read_config_file(path)?;
        }
        let lookup = |key: &'static str| -> Option<Value> {
            let value = |raw: String, origin| Some(Value { key, raw, origin });
            if let Some(v) = src.flags.get(key) {
                return value(v.clone(), Origin::Flag);
            }
            let env_name = KEYS.iter().find(|(n, _)| *n == key).and_then(|(_, e)| *e);
            if let Some(name) = env_name {
                if let Some(v) = (src.env)(name).filter(|v| !v.is_empty()) {
                    return value(v, Origin::Env(name));
                }
            }
            file_values.get(key).and_then(|v| value(v.clone(), Origin::File))
        };

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
        let vault_timeout = parsed(lookup("vault-timeout"), |raw| {
            let d = parse_duration(raw)?;
            if (MIN_VAULT_TIMEOUT..=MAX_VAULT_TIMEOUT).contains(&d) {
                Ok(d)
            } else {
                Err(format!(
                    "{raw} is out of range; use 100ms to 60s (below the apiserver's KMS timeout, 3s by default)"
                ))
            }
        })?
        .unwrap_or(DEFAULT_VAULT_TIMEOUT);
        let max_in_flight = parsed(lookup("max-in-flight"), |raw| {
            raw.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_MAX_IN_FLIGHT).contains(n))
                .ok_or_else(|| format!("\"{raw}\" is not a number from 1 to {MAX_MAX_IN_FLIGHT}"))
        })?
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
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
        let auth = resolve_auth(src, &lookup, &file_values, vault_client_cert.is_some())?;

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
                timeout: vault_timeout,
            },
            transit_mount,
            transit_key,
            decrypt_keys,
            auth,
            max_in_flight,
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
            "socket={} vault_addrs={} transit={}/{} decrypt_keys={} auth=[{}] namespace={} cacert={} client_cert={} tls_server_name={} skip_verify={} vault_timeout={:?} max_in_flight={} shutdown_timeout={:?} http_addr={}",
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
            self.vault.timeout,
            self.max_in_flight,
            self.shutdown_timeout,
            self.http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        )
    }
}

fn read_config_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = read_small_file(path, MAX_CONFIG_FILE).map_err(|m| ConfigError(format!("--config {path}: {m}")))?;
    parse_config_json(&text).map_err(|m| ConfigError(format!("--config {path}: {m}")))
}

/// Parses the JSON config file: one object whose keys are [`KEYS`].
pub fn parse_config_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("must be a JSON object such as {\"transit-key\": \"kube\"}")?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        if !KEYS.iter().any(|(n, _)| n == k) {
            let known: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
            return Err(format!("unknown key \"{k}\"; known keys: {}", known.join(", ")));
        }
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Array(items) if MULTI_KEYS.contains(&k.as_str()) => {
                let strs: Option<Vec<&str>> = items.iter().map(|i| i.as_str()).collect();
                strs.ok_or_else(|| format!("key \"{k}\" must be a list of strings"))?
                    .join(",")
            }
            _ => return Err(format!("key \"{k}\" must be a string, number or boolean")),
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

fn read_small_file(path: &str, max: u64) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut s = String::new();
    f.take(max + 1)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read as UTF-8 text: {e}"))?;
    if s.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(s)
}

/// The auth method and its inputs. Options that belong to another method
/// are refused rather than ignored, so a typo'd method cannot go unnoticed.
fn resolve_auth(
    src: &Sources<'_>,
    lookup: &dyn Fn(&'static str) -> Option<Value>,
    file_values: &BTreeMap<String, String>,
    has_client_cert: bool,
) -> Result<AuthConfig, ConfigError> {
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
                crate::auth::read_credential(&p, what).map_err(ConfigError)?;
                Ok(AuthConfig::Token(TokenSource::File(p)))
            };
            if let Some(path) = src.flags.get("vault-token-file") {
                check(path, "--vault-token-file")?
            } else if let Some(t) = (src.env)("VAULT_TOKEN").filter(|t| !t.trim().is_empty()) {
                AuthConfig::Token(TokenSource::Env(Secret::new(t.trim().to_owned())))
            } else if let Some(path) = file_values.get("vault-token-file") {
                check(path, "config file key \"vault-token-file\"")?
            } else {
                return err(
                    "no Vault token: set VAULT_TOKEN or --vault-token-file PATH, or choose another --auth-method",
                );
            }
        }
    })
}

fn parse_file(raw: &str, what: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(raw.trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{what} {} does not exist or is not a file", p.display()))
    }
}

/// Items of a comma-separated list, trimmed, empty ones dropped.
fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One or more addresses, comma-separated; duplicates dropped, order kept.
pub fn parse_addrs(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for a in split_list(raw) {
        let a = parse_addr(a)?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.len() > MAX_VAULT_ADDRS {
        return Err(format!("{} addresses; at most {MAX_VAULT_ADDRS}", out.len()));
    }
    Ok(out)
}

/// A DNS name for TLS verification: letters, digits, `-` and `.`.
pub fn parse_server_name(raw: &str) -> Result<String, String> {
    let n = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if ok {
        Ok(n)
    } else {
        Err(format!("\"{raw}\" is not a DNS name"))
    }
}

/// `unix:///run/x.sock`, `unix:/run/x.sock` or a plain path.
pub fn parse_socket(raw: &str) -> Result<PathBuf, String> {
    let p = raw
        .strip_prefix("unix://")
        .or_else(|| raw.strip_prefix("unix:"))
        .unwrap_or(raw);
    if p.is_empty() {
        return Err("empty socket path".into());
    }
    if p.starts_with('@') {
        return Err("abstract sockets (@name) are not supported; use a filesystem path".into());
    }
    if p.contains('\0') {
        return Err("socket path contains a NUL byte".into());
    }
    // sockaddr_un.sun_path is 108 bytes including the terminating NUL.
    if p.len() > 107 {
        return Err(format!(
            "socket path is {} bytes; Unix sockets allow at most 107",
            p.len()
        ));
    }
    Ok(PathBuf::from(p))
}

/// A Vault address: the Vault client owns the one parser (it also checks a
/// 307's target with it).
pub use crate::vault::parse_addr;

/// A mount path as an operator may type it (surrounding spaces and slashes
/// are dropped), then checked by the one strict parser of [`crate::wire`].
pub fn parse_mount(raw: &str) -> Result<String, String> {
    let m = raw.trim().trim_matches('/');
    crate::wire::names::parse_mount(m)
        .map(str::to_owned)
        .map_err(|_| format!("\"{raw}\" is not a mount path (letters, digits, - _ . and / between segments)"))
}

/// A transit key name (surrounding spaces dropped), checked by the one
/// strict parser of [`crate::wire`].
pub fn parse_key_name(raw: &str) -> Result<String, String> {
    crate::wire::names::parse_key_name(raw.trim())
        .map(str::to_owned)
        .map_err(|_| format!("\"{raw}\" is not a transit key name (letters, digits, - _ .)"))
}

/// Like the Vault CLI: 1/0, true/false, yes/no, on/off.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("\"{raw}\" is not a boolean (use true or false)")),
    }
}

/// `250ms`, `2s`, `1m`, `1.5s`. A bare number is refused: units matter here.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let (num, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return Err(format!("\"{raw}\" needs a unit: ms, s or m (e.g. 2s)"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{raw}\" is not a duration (e.g. 500ms, 2s, 1m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale_ms > 86_400_000.0 {
        return Err(format!("\"{raw}\" is not a duration between 0 and 24h"));
    }
    Ok(Duration::from_micros((v * scale_ms * 1000.0).round() as u64))
}

#[cfg(test)]
pub(crate) mod tests;
