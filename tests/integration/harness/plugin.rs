//! The plugin binary under test, serving on a socket in the test's temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{wait_for, KmsClient, DEADLINE, START_TIMEOUT};

/// The plugin binary, serving on a socket in the test's temp dir.
pub struct Plugin {
    pub socket: PathBuf,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT` of the HTTP endpoints (a free port unless
    /// the test passed its own `--http-addr`).
    pub http: String,
    child: Option<Child>,
}

/// The binary under test: `TROUSSEAU_BIN` when set (scripts/e2e.sh points
/// it at the release build), else the one cargo built for this test target.
pub fn plugin_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("TROUSSEAU_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_trousseau").to_owned()))
}

impl Plugin {
    /// Starts `trousseau serve` against `vault_addr` with key `kube` plus
    /// `extra` flags, and waits for the socket to appear.
    pub fn start(dir: &Path, vault_addr: &str, token: &str, extra: &[&str]) -> Plugin {
        let socket = dir.join("run/kms.sock");
        let mut p = Plugin::spawn(dir, &socket, vault_addr, token, extra);
        p.wait_for_socket();
        p
    }

    /// Starts the plugin with key `kube` without waiting for anything.
    pub fn spawn(dir: &Path, socket: &Path, vault_addr: &str, token: &str, extra: &[&str]) -> Plugin {
        let mut args = vec!["--transit-key", "kube"];
        args.extend_from_slice(extra);
        Plugin::spawn_raw(dir, socket, vault_addr, token, &args)
    }

    /// Starts the plugin with key `kube`, `extra` flags and `env` added to
    /// its environment, and waits for the socket to appear.
    pub fn start_with_env(dir: &Path, vault_addr: &str, token: &str, extra: &[&str], env: &[(&str, &str)]) -> Plugin {
        let socket = dir.join("run/kms.sock");
        let mut args = vec!["--transit-key", "kube"];
        args.extend_from_slice(extra);
        let mut p = Plugin::spawn_env(dir, &socket, vault_addr, token, &args, env);
        p.wait_for_socket();
        p
    }

    /// Starts `trousseau serve --socket SOCKET ARGS...` and nothing more.
    pub fn spawn_raw(dir: &Path, socket: &Path, vault_addr: &str, token: &str, extra: &[&str]) -> Plugin {
        Plugin::spawn_env(dir, socket, vault_addr, token, extra, &[])
    }

    /// `spawn_raw` with `env` added to the plugin's (otherwise cleared)
    /// environment.
    pub fn spawn_env(
        dir: &Path,
        socket: &Path,
        vault_addr: &str,
        token: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Plugin {
        static N: AtomicU64 = AtomicU64::new(0);
        super::secrets::remember(token);
        let log = dir.join(format!("plugin-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let f = std::fs::File::create(&log).unwrap();
        let mut args = vec!["serve".to_owned(), "--socket".to_owned(), socket.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        // Parallel tests must not share the default 127.0.0.1:8787.
        let http_port = super::free_port();
        let given = extra.iter().position(|a| *a == "--http-addr");
        let http = match given.and_then(|i| extra.get(i + 1)) {
            Some(addr) => format!("http://{addr}"),
            None => {
                args.push("--http-addr".into());
                args.push(format!("127.0.0.1:{http_port}"));
                format!("http://127.0.0.1:{http_port}")
            }
        };
        let child = Command::new(plugin_bin())
            .args(&args)
            .env_clear()
            .env("VAULT_ADDR", vault_addr)
            .env("VAULT_TOKEN", token)
            // Every level, so the leak scan at drop covers them all.
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start plugin");
        Plugin {
            socket: socket.to_owned(),
            log,
            http,
            child: Some(child),
        }
    }

    /// Waits (bounded) for the socket to appear; fails if the plugin exits.
    pub fn wait_for_socket(&mut self) {
        let sock = self.socket.clone();
        wait_for("plugin socket", START_TIMEOUT, || {
            if let Some(st) = self.try_exit() {
                panic!("plugin exited early with {st}:\n{}", self.log_text());
            }
            sock.exists().then_some(())
        });
    }

    pub fn client(&self) -> KmsClient {
        KmsClient::connect(&self.socket, DEADLINE)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics when the log holds any secret the tests used or any Vault
    /// token, in any form (see `secrets`).
    pub fn assert_no_secrets_in_log(&self) {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let leaks = super::secrets::leaks_in(&log);
        assert!(
            leaks.is_empty(),
            "secrets in plugin log {}: {leaks:?}",
            self.log.display()
        );
    }

    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal by pid with the system `kill`.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("plugin exit", timeout, || self.try_exit())
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- plugin log {} ----\n{}", self.log.display(), self.log_text());
            return;
        }
        self.assert_no_secrets_in_log();
    }
}
