//! OpenBao server processes for the tests: dev, dev TLS and persistent raft.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::pki::Pki;
use super::{bao_bin, free_port, vault_call, vault_ok, wait_for, ROOT_TOKEN, START_TIMEOUT};

/// Least privilege for the plugin: encrypt and decrypt with key `kube`, and
/// read its metadata (deploy/vault/policy.hcl).
pub const PLUGIN_POLICY: &str = "path \"transit/encrypt/kube\" { capabilities = [\"update\"] }\n\
                                 path \"transit/decrypt/kube\" { capabilities = [\"update\"] }\n\
                                 path \"transit/keys/kube\" { capabilities = [\"read\"] }\n";

/// The TLS listeners of [`Bao::dev_own_tls`].
pub struct TlsListeners {
    /// `https://127.0.0.1:PORT` serving the server cert (IP and DNS SANs).
    pub https: String,
    /// `https://127.0.0.1:PORT` serving the DNS-only cert: it verifies only
    /// when the client checks it against `Pki::dns_name`.
    pub https_dns_only: String,
}

/// An OpenBao server process on a loopback port.
pub struct Bao {
    pub addr: String,
    pub port: u16,
    pub token: String,
    child: Option<Child>,
    dir: PathBuf,
    config: Option<PathBuf>,
    unseal_key: Option<String>,
}

impl Bao {
    /// In-memory dev server with transit mounted and key `kube` created.
    pub fn dev(dir: &Path) -> Bao {
        Bao::dev_with(dir, "http", &[])
    }

    /// Dev server with OpenBao's own dev CA and a TLS listener on
    /// 127.0.0.1; returns it with the path of that CA's PEM file.
    pub fn dev_tls(dir: &Path) -> (Bao, PathBuf) {
        let certs = dir.join(format!("tls-{}", free_port()));
        std::fs::create_dir_all(&certs).unwrap();
        let b = Bao::dev_with(
            dir,
            "https",
            &["-dev-tls".into(), format!("-dev-tls-cert-dir={}", certs.display())],
        );
        (b, certs.join("vault-ca.pem"))
    }

    /// Dev server with a file audit device, declared in a config file since
    /// OpenBao 2.x refuses to enable audit devices through the API; returns
    /// it with the audit log's path (one JSON object per line).
    pub fn dev_audited(dir: &Path) -> (Bao, PathBuf) {
        let n = free_port();
        let log = dir.join(format!("audit-{n}.jsonl"));
        let cfg = dir.join(format!("audit-{n}.hcl"));
        std::fs::write(
            &cfg,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                log.display()
            ),
        )
        .unwrap();
        let b = Bao::dev_with(dir, "http", &[format!("-config={}", cfg.display())]);
        (b, log)
    }

    fn dev_with(dir: &Path, scheme: &str, extra: &[String]) -> Bao {
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("bao-dev-{port}.log"))).unwrap();
        let child = Command::new(bao_bin())
            .args(["server", "-dev"])
            .args(extra)
            // Dev mode writes its root token to $HOME/.vault-token through a
            // fixed temp name: parallel servers sharing a HOME race on it.
            .env("HOME", dir)
            .args([
                format!("-dev-root-token-id={ROOT_TOKEN}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao");
        let mut b = Bao {
            addr: format!("{scheme}://127.0.0.1:{port}"),
            port,
            token: ROOT_TOKEN.into(),
            child: Some(child),
            dir: dir.to_owned(),
            config: None,
            unseal_key: None,
        };
        b.wait_active();
        b.setup_transit("kube");
        b
    }

    /// Dev server (plain http on `addr`, for setup) plus two TLS listeners
    /// with certs from `pki`. Both ask for a client cert without requiring
    /// one (OpenBao's default: `tls_require_and_verify_client_cert = false`,
    /// `tls_disable_client_certs = false`), which is what cert auth needs;
    /// `tls_client_ca_file` only names the acceptable CAs in the handshake.
    pub fn dev_own_tls(dir: &Path, pki: &Pki) -> (Bao, TlsListeners) {
        let (a, b) = (free_port(), free_port());
        let listener = |port: u16, cert: &Path, key: &Path| {
            // Every listener also opens a cluster port, port+1 unless given:
            // pick it, or it may collide with a neighbour's listener.
            format!(
                "listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{}\"\n  \
                 tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n  tls_client_ca_file = \"{}\"\n}}\n",
                free_port(),
                cert.display(),
                key.display(),
                pki.ca.display()
            )
        };
        let cfg = dir.join(format!("bao-tls-{a}.hcl"));
        std::fs::write(
            &cfg,
            listener(a, &pki.server_cert, &pki.server_key) + &listener(b, &pki.dns_only_cert, &pki.dns_only_key),
        )
        .unwrap();
        // `-dev` keeps its own http listener and adds the config's listeners.
        let bao = Bao::dev_with(dir, "http", &[format!("-config={}", cfg.display())]);
        let tls = TlsListeners {
            https: format!("https://127.0.0.1:{a}"),
            https_dns_only: format!("https://127.0.0.1:{b}"),
        };
        wait_for("TLS listener", START_TIMEOUT, || {
            let (s, _) = vault_call(&tls.https, "", "GET", "sys/health", None);
            (s == 200).then_some(())
        });
        (bao, tls)
    }

    /// Persistent single-node raft server (survives restarts), initialised,
    /// unsealed, with transit and key `kube`.
    pub fn raft(dir: &Path) -> Bao {
        let port = free_port();
        let cluster = free_port();
        let data = dir.join(format!("raft-{port}"));
        std::fs::create_dir_all(&data).unwrap();
        let cfg = dir.join(format!("bao-{port}.hcl"));
        std::fs::write(
            &cfg,
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"n1\"\n  performance_multiplier = 1\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\ndisable_mlock = true\n",
                data.display()
            ),
        )
        .unwrap();
        let mut b = Bao {
            addr: format!("http://127.0.0.1:{port}"),
            port,
            token: String::new(),
            child: None,
            dir: dir.to_owned(),
            config: Some(cfg),
            unseal_key: None,
        };
        b.start();
        wait_for("bao to listen", START_TIMEOUT, || {
            let (s, _) = vault_call(&b.addr, "", "GET", "sys/health", None);
            (s != 0).then_some(())
        });
        let init = vault_ok(
            &b.addr,
            "",
            "POST",
            "sys/init",
            Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        b.token = init["root_token"].as_str().unwrap().to_owned();
        b.unseal_key = Some(init["keys_base64"][0].as_str().unwrap().to_owned());
        b.unseal();
        b.setup_transit("kube");
        b
    }

    fn start(&mut self) {
        let cfg = self.config.clone().expect("raft only");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("bao-raft-{}.log", self.port)))
            .unwrap();
        let child = Command::new(bao_bin())
            .args(["server", &format!("-config={}", cfg.display())])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao");
        self.child = Some(child);
    }

    pub fn unseal(&mut self) {
        let key = self.unseal_key.clone().unwrap();
        wait_for("bao to accept unseal", START_TIMEOUT, || {
            let (s, _) = vault_call(
                &self.addr,
                "",
                "POST",
                "sys/unseal",
                Some(serde_json::json!({ "key": key })),
            );
            (s == 200).then_some(())
        });
        self.wait_active();
    }

    fn wait_active(&mut self) {
        let addr = self.addr.clone();
        let child = &mut self.child;
        wait_for("bao to become active", START_TIMEOUT, || {
            if let Some(st) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("bao at {addr} exited early with {st}");
            }
            let (s, _) = vault_call(&addr, "", "GET", "sys/health", None);
            (s == 200).then_some(())
        });
    }

    fn setup_transit(&self, key: &str) {
        wait_for("transit mount", START_TIMEOUT, || {
            let (s, _) = vault_call(
                &self.addr,
                &self.token,
                "POST",
                "sys/mounts/transit",
                Some(serde_json::json!({"type": "transit"})),
            );
            (s == 204 || s == 200).then_some(())
        });
        self.create_key(key);
    }

    pub fn create_key(&self, key: &str) {
        vault_ok(
            &self.addr,
            &self.token,
            "POST",
            &format!("transit/keys/{key}"),
            Some(serde_json::json!({})),
        );
    }

    pub fn rotate(&self, key: &str) {
        vault_ok(
            &self.addr,
            &self.token,
            "POST",
            &format!("transit/keys/{key}/rotate"),
            Some(serde_json::json!({})),
        );
    }

    /// Makes a token limited to `policy_hcl`.
    pub fn token_with_policy(&self, name: &str, policy_hcl: &str) -> String {
        vault_ok(
            &self.addr,
            &self.token,
            "POST",
            &format!("sys/policies/acl/{name}"),
            Some(serde_json::json!({ "policy": policy_hcl })),
        );
        let v = vault_ok(
            &self.addr,
            &self.token,
            "POST",
            "auth/token/create",
            Some(serde_json::json!({ "policies": [name], "ttl": "1h" })),
        );
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// POST with the root token; panics unless 2xx.
    pub fn write(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        vault_ok(&self.addr, &self.token, "POST", path, Some(body))
    }

    /// Enables auth method `kind` at `auth/<mount>`.
    pub fn enable_auth(&self, mount: &str, kind: &str) {
        self.write(&format!("sys/auth/{mount}"), serde_json::json!({ "type": kind }));
    }

    /// Writes ACL policy `name`.
    pub fn put_policy(&self, name: &str, hcl: &str) {
        self.write(
            &format!("sys/policies/acl/{name}"),
            serde_json::json!({ "policy": hcl }),
        );
    }

    /// Stops the server process (SIGKILL by pid) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a raft server and unseals it.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
        self.unseal();
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            for kind in ["dev", "raft"] {
                let log = self.dir.join(format!("bao-{kind}-{}.log", self.port));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    eprintln!("---- last lines of {} ----\n{}", log.display(), tail.join("\n"));
                }
            }
        }
    }
}
