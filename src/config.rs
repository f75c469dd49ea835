//! `serve`'s configuration: one struct, its defaults in one place, built in
//! one step from flags, environment, a JSON file and defaults (in that order
//! of precedence) and validated once, with errors that say what to change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

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
/// A config file is a few hundred bytes; refuse anything absurd.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// A Vault token is about 100 bytes; a service token with a namespace a bit more.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// The resolved configuration of `trousseau serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unix socket path. Defaults to [`DEFAULT_SOCKET`].
    pub socket: PathBuf,
    /// Vault address, e.g. `https://vault.example:8200`. Required.
    pub vault_addr: String,
    /// Transit mount path. Defaults to `transit`.
    pub transit_mount: String,
    /// Transit key name. Required.
    pub transit_key: String,
    /// Token sent to Vault, from `VAULT_TOKEN` or `--vault-token-file`.
    pub vault_token: Secret,
    /// Where the token came from, for the start-up log line.
    pub token_source: String,
    /// `X-Vault-Namespace` header. Defaults to none.
    pub vault_namespace: Option<String>,
    /// PEM file of CA certificates to trust for Vault. Defaults to the
    /// bundled web PKI roots.
    pub vault_cacert: Option<PathBuf>,
    /// Turn off TLS verification (logged loudly). Defaults to false.
    pub vault_skip_verify: bool,
    /// Budget for one Vault call. Defaults to [`DEFAULT_VAULT_TIMEOUT`].
    pub vault_timeout: Duration,
    /// Cap on requests in flight. Defaults to [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Drain time after SIGTERM. Defaults to [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Duration,
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
    ("vault-token-file", None),
    ("vault-namespace", Some("VAULT_NAMESPACE")),
    ("vault-cacert", Some("VAULT_CACERT")),
    ("vault-skip-verify", Some("VAULT_SKIP_VERIFY")),
    ("vault-timeout", None),
    ("max-in-flight", None),
    ("shutdown-timeout", None),
];

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
        let Some(vault_addr) = parsed(lookup("vault-addr"), parse_addr)? else {
            return err("no Vault address: set --vault-addr or VAULT_ADDR (e.g. https://vault.example:8200)");
        };
        let transit_mount =
            parsed(lookup("transit-mount"), parse_mount)?.unwrap_or_else(|| DEFAULT_TRANSIT_MOUNT.to_owned());
        let Some(transit_key) = parsed(lookup("transit-key"), parse_key_name)? else {
            return err("no transit key: set --transit-key to the name of the transit key that protects DEKs");
        };
        let vault_namespace = lookup("vault-namespace")
            .map(|v| v.raw.trim_matches('/').to_owned())
            .filter(|s| !s.is_empty());
        let vault_cacert = parsed(lookup("vault-cacert"), |raw| {
            let p = PathBuf::from(raw);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("CA file {} does not exist or is not a file", p.display()))
            }
        })?;
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

        // Token: --vault-token-file, then VAULT_TOKEN, then the file's key.
        let token_file = src.flags.get("vault-token-file").cloned();
        let (vault_token, token_source) = if let Some(path) = token_file {
            (read_token_file(&path, "--vault-token-file")?, format!("file {path}"))
        } else if let Some(t) = (src.env)("VAULT_TOKEN").filter(|t| !t.trim().is_empty()) {
            (Secret::new(t.trim().to_owned()), "VAULT_TOKEN".to_owned())
        } else if let Some(path) = file_values.get("vault-token-file") {
            (
                read_token_file(path, "config file key \"vault-token-file\"")?,
                format!("file {path}"),
            )
        } else {
            return err("no Vault token: set VAULT_TOKEN or --vault-token-file PATH");
        };

        Ok(Config {
            socket,
            vault_addr,
            transit_mount,
            transit_key,
            vault_token,
            token_source,
            vault_namespace,
            vault_cacert,
            vault_skip_verify,
            vault_timeout,
            max_in_flight,
            shutdown_timeout,
        })
    }

    /// The configuration as one log line, with the token left out.
    pub fn summary(&self) -> String {
        format!(
            "socket={} vault_addr={} transit={}/{} token=<redacted from {}> namespace={} cacert={} skip_verify={} vault_timeout={:?} max_in_flight={} shutdown_timeout={:?}",
            self.socket.display(),
            self.vault_addr,
            self.transit_mount,
            self.transit_key,
            self.token_source,
            self.vault_namespace.as_deref().unwrap_or("-"),
            self.vault_cacert.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into()),
            self.vault_skip_verify,
            self.vault_timeout,
            self.max_in_flight,
            self.shutdown_timeout,
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

fn read_token_file(path: &str, what: &str) -> Result<Secret, ConfigError> {
    let s = read_small_file(path, MAX_TOKEN_FILE).map_err(|m| ConfigError(format!("{what} {path}: {m}")))?;
    let t = s.trim();
    if t.is_empty() {
        return err(format!("{what} {path}: the file is empty; it must hold a Vault token"));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err(format!(
            "{what} {path}: must hold a single token (whitespace found inside)"
        ));
    }
    Ok(Secret::new(t.to_owned()))
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

/// `http(s)://host[:port]`, a trailing slash tolerated, no path.
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

/// A mount path: segments of letters, digits, `-`, `_`, `.`, joined by `/`.
/// `:` and `|` are refused so mounts can sit inside key ids unambiguously.
pub fn parse_mount(raw: &str) -> Result<String, String> {
    let m = raw.trim().trim_matches('/');
    if m.is_empty() || m.split('/').any(|seg| seg.is_empty() || !seg.chars().all(name_char)) {
        return Err(format!(
            "\"{raw}\" is not a mount path (letters, digits, - _ . and / between segments)"
        ));
    }
    Ok(m.to_owned())
}

/// A transit key name, as Vault allows them: letters, digits, `-`, `_`, `.`.
pub fn parse_key_name(raw: &str) -> Result<String, String> {
    let k = raw.trim();
    if k.is_empty() || !k.chars().all(name_char) || k.len() > 256 {
        return Err(format!("\"{raw}\" is not a transit key name (letters, digits, - _ .)"));
    }
    Ok(k.to_owned())
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
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
