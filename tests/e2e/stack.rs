//! One control plane for one check: OpenBao with transit key `kube`, the
//! release plugin logged in with a token limited to the shipped
//! `deploy/vault/policy.hcl`, etcd, and kube-apiserver configured from a
//! shipped `deploy/encryption-config-*.yaml` with only the socket path
//! substituted. Every process is stopped by pid when the stack drops.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Bao, Pki, Plugin, TempDir};
use crate::kube::{deploy, Apiserver, ApiserverOpts, Etcd, APISERVER_START};

/// The endpoint every shipped EncryptionConfiguration names; the only text
/// the suite substitutes in them.
const SHIPPED_ENDPOINT: &str = "unix:///var/run/kmsplugin/kms.sock";
/// The provider name the shipped files give trousseau.
pub const PROVIDER: &str = "trousseau";
/// The plugin's start: log in, look up its token, first probe, socket.
/// Measured here: well under a second.
const PLUGIN_START: Duration = Duration::from_secs(30);

// How kube-apiserver watches a KMS v2 plugin (k8s.io/apiserver v0.37.2,
// pkg/server/options/encryptionconfig/config.go): a background Status call
// every 60 s while healthy and every 10 s while failing
// (kmsv2PluginHealthz{Positive,Negative}Interval), and a kms-providers
// health check (on /healthz and /readyz, not /livez) that calls Status
// itself when its last result is older than 20 s if ok, 3 s if failing
// (kmsPluginHealthz{Positive,Negative}TTL). The plugin's own probe answers
// from a result at most 10 s old while healthy, 1 s while failing.

/// From a dead plugin or Vault to a failing kms-providers check, for a
/// client polling it: 10 s (plugin cache) + 20 s (apiserver cache), plus a
/// wide margin for a loaded 2-core machine. Measured here: 15 to 19 s.
pub const FAILURE_SEEN: Duration = Duration::from_secs(120);
/// From a plugin (or Vault) back to ok: 1 s (plugin) + 3 s (apiserver),
/// plus the same margin. Measured here: 3 to 4 s.
pub const RECOVERY_SEEN: Duration = Duration::from_secs(60);
/// How often the checks poll the apiserver's health endpoints.
pub const HEALTH_POLL: Duration = Duration::from_millis(500);

pub struct StackOpts {
    /// `deploy/` file for `--encryption-provider-config`; `None` runs the
    /// apiserver without one (plain, identity storage).
    pub encryption_config: Option<&'static str>,
    /// `KMSv1=true` for the v1 checks.
    pub kms_v1: bool,
    /// A persistent raft OpenBao (needed to stop and restart it).
    pub raft: bool,
    /// Start the plugin before the apiserver (the documented order).
    pub plugin_first: bool,
    /// Flags for the plugin beyond `--transit-key kube`.
    pub plugin_args: &'static [&'static str],
}

impl Default for StackOpts {
    fn default() -> Self {
        StackOpts {
            encryption_config: Some("encryption-config-v2.yaml"),
            kms_v1: false,
            raft: false,
            plugin_first: true,
            plugin_args: &[],
        }
    }
}

pub struct Stack {
    // Dropped in field order: the apiserver goes before the plugin, etcd
    // and OpenBao, and the directory (kept if a check failed) last.
    pub apiserver: Apiserver,
    pub plugin: Option<Plugin>,
    pub etcd: Etcd,
    pub bao: Bao,
    pub pki: Pki,
    pub plugin_token: String,
    pub socket: PathBuf,
    pub opts: StackOpts,
    pub dir: TempDir,
}

impl Stack {
    pub fn start(name: &str, opts: StackOpts) -> Stack {
        let dir = TempDir::new(&format!("e2e-{name}"));
        let d = dir.path().to_owned();
        let bao = if opts.raft { Bao::raft(&d) } else { Bao::dev(&d) };
        let policy = std::fs::read_to_string(deploy("vault/policy.hcl")).unwrap();
        let plugin_token = bao.token_with_policy("trousseau", &policy);
        let socket = d.join("kmsplugin/kms.sock");
        let pki = Pki::new(&d, "kube-apiserver.e2e.test");
        let etcd = Etcd::start(&d);
        let plugin = opts
            .plugin_first
            .then(|| start_plugin(&d, &socket, &bao.addr, &plugin_token, opts.plugin_args));
        let api_opts = apiserver_opts(&d, &socket, &opts, opts.encryption_config);
        let apiserver = if opts.plugin_first {
            Apiserver::start(&d, &etcd, &pki, &api_opts)
        } else {
            Apiserver::spawn(&d, &etcd, &pki, &api_opts)
        };
        Stack {
            apiserver,
            plugin,
            etcd,
            bao,
            pki,
            plugin_token,
            socket,
            opts,
            dir,
        }
    }

    /// Starts (or starts again) the plugin on the stack's socket.
    pub fn start_plugin(&mut self) {
        self.start_plugin_with(self.opts.plugin_args);
    }

    /// Starts (or starts again) the plugin with these flags.
    pub fn start_plugin_with(&mut self, args: &[&str]) {
        self.plugin = Some(start_plugin(
            self.dir.path(),
            &self.socket,
            &self.bao.addr,
            &self.plugin_token,
            args,
        ));
    }

    pub fn plugin(&self) -> &Plugin {
        self.plugin.as_ref().expect("plugin running")
    }

    /// Restarts the apiserver with another shipped EncryptionConfiguration
    /// (`None`: none), waits until it is ready, returns how long that took.
    pub fn restart_apiserver_with(&mut self, file: Option<&'static str>) -> Duration {
        self.apiserver.stop();
        let opts = apiserver_opts(self.dir.path(), &self.socket, &self.opts, file);
        let start = Instant::now();
        self.apiserver = Apiserver::spawn(self.dir.path(), &self.etcd, &self.pki, &opts);
        self.apiserver.wait_ready(APISERVER_START);
        start.elapsed()
    }

    /// A counter or gauge from the plugin's `/metrics`, e.g.
    /// `trousseau_kms_requests_total{api="v2",operation="decrypt",outcome="ok"}`;
    /// 0 when the series has not appeared yet.
    pub fn plugin_metric(&self, series: &str) -> f64 {
        let (s, text) = http_get(&format!("{}/metrics", self.plugin().http));
        assert_eq!(s, 200, "plugin /metrics: {text}");
        text.lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|rest| rest.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn start_plugin(dir: &Path, socket: &Path, vault: &str, token: &str, extra: &[&str]) -> Plugin {
    let mut args = vec!["--transit-key", "kube"];
    args.extend_from_slice(extra);
    let mut p = Plugin::spawn_raw(dir, socket, vault, token, &args);
    let start = Instant::now();
    while !socket.exists() {
        if let Some(st) = p.try_exit() {
            panic!("plugin exited with {st}:\n{}", p.log_text());
        }
        assert!(
            start.elapsed() < PLUGIN_START,
            "plugin socket missing after {PLUGIN_START:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// The shipped EncryptionConfiguration `file` with only its endpoint
/// pointed at `socket`, written into `dir`.
fn encryption_config(dir: &Path, socket: &Path, file: &str) -> PathBuf {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    assert!(
        text.contains(SHIPPED_ENDPOINT),
        "{file} does not name {SHIPPED_ENDPOINT}"
    );
    let text = text.replace(SHIPPED_ENDPOINT, &format!("unix://{}", socket.display()));
    let out = dir.join(file);
    let mut f = std::fs::File::create(&out).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    out
}

fn apiserver_opts(dir: &Path, socket: &Path, opts: &StackOpts, file: Option<&str>) -> ApiserverOpts {
    ApiserverOpts {
        encryption_config: file.map(|f| encryption_config(dir, socket, f)),
        feature_gates: opts.kms_v1.then(|| "KMSv1=true".to_owned()),
    }
}

/// GET over plain HTTP (the plugin's loopback endpoints).
pub fn http_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Appends a measured figure to the run's figures file (scripts/e2e.sh
/// prints it at the end) and to stderr.
pub fn figure(line: &str) {
    eprintln!("e2e figure: {line}");
    let path = std::env::var("E2E_FIGURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/figures.txt"));
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = writeln!(f, "{line}");
    }
}

/// Polls `f` every `every` until it returns `Some` or `bound` passes;
/// returns the value and the time it took.
pub fn poll<T>(what: &str, bound: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(every);
    }
}
