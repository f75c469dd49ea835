//! A three-node OpenBao raft cluster on loopback ports, for HA tests.
//!
//! Facts this harness relies on (measured against OpenBao 2.7.2):
//! - Nodes that `retry_join` the others join as raft non-voters once
//!   unsealed and autopilot promotes them to voters after
//!   `server_stabilization_time` (10 s by default; set lower here). Until
//!   then the cluster cannot survive the loss of the active node, so
//!   `start` waits for three healthy voters.
//! - Standbys forward writes to the active node and, by default, answer
//!   transit encrypt/decrypt and token lookups themselves ("standby reads");
//!   `disable_standby_reads = true` makes them forward those too. A standby
//!   answers 307 to the active node's `api_addr` only when the client asks
//!   with `X-Vault-No-Request-Forwarding` (or when forwarding fails).
//! - Standby reads lag behind the active node: a key created there can be
//!   "encryption key not found" on a standby for a moment, and a new token
//!   unknown (403); `create_key` and `token_with_policy` wait for every node.
//! - With `performance_multiplier = 1` a new leader is active about 2 s
//!   after the active node is killed. Meanwhile a forwarding standby answers
//!   307 to the dead node's `api_addr`, then briefly 500 ("local node not
//!   active but active cluster node not found"); with standby reads on it
//!   keeps answering transit requests itself throughout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bao_bin, free_port, vault_call, vault_ok, wait_for, START_TIMEOUT};

/// How long the cluster gets to form: three servers, one init, raft joins
/// and autopilot promotion on a loaded 2-core machine.
const FORM_TIMEOUT: Duration = Duration::from_secs(90);

/// Options for [`Cluster::start_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterOpts {
    /// `disable_standby_reads = true` on every node: standbys forward every
    /// request (or answer 307 when the client asks for no forwarding).
    pub disable_standby_reads: bool,
}

struct Node {
    port: u16,
    addr: String,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three OpenBao servers in one raft cluster on 127.0.0.1, initialised,
/// unsealed (same key), with transit mounted and key `kube`.
pub struct Cluster {
    /// The root token.
    pub token: String,
    unseal_key: String,
    nodes: Vec<Node>,
}

/// `GET sys/health` as a number: 200 active, 429 standby, 501 not
/// initialised, 503 sealed, 0 no answer.
pub fn health(addr: &str) -> u16 {
    vault_call(addr, "", "GET", "sys/health", None).0
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, ClusterOpts::default())
    }

    pub fn start_with(dir: &Path, opts: ClusterOpts) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, &(port, cport)) in ports.iter().enumerate() {
            let data = dir.join(format!("ha-raft-{i}-{port}"));
            std::fs::create_dir_all(&data).unwrap();
            let joins: String = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (p, _))| format!("  retry_join {{\n    leader_api_addr = \"http://127.0.0.1:{p}\"\n  }}\n"))
                .collect();
            let cfg = dir.join(format!("ha-node-{i}-{port}.hcl"));
            std::fs::write(
                &cfg,
                format!(
                    "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"node{i}\"\n  performance_multiplier = 1\n{joins}}}\n\
                     listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cport}\"\n  tls_disable = true\n}}\n\
                     api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cport}\"\n\
                     disable_mlock = true\ndisable_standby_reads = {dsr}\n",
                    data = data.display(),
                    dsr = opts.disable_standby_reads,
                ),
            )
            .unwrap();
            nodes.push(Node {
                port,
                addr: format!("http://127.0.0.1:{port}"),
                cfg,
                log: dir.join(format!("ha-node-{i}-{port}.log")),
                child: None,
            });
        }
        let mut c = Cluster {
            token: String::new(),
            unseal_key: String::new(),
            nodes,
        };
        let t = Instant::now();
        for i in 0..3 {
            c.spawn(i);
        }
        for i in 0..3 {
            c.wait_listening(i);
        }
        let a0 = c.nodes[0].addr.clone();
        let init = vault_ok(
            &a0,
            "",
            "POST",
            "sys/init",
            Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        c.token = init["root_token"].as_str().unwrap().to_owned();
        c.unseal_key = init["keys_base64"][0].as_str().unwrap().to_owned();
        c.unseal(0);
        wait_for("node 0 to become active", START_TIMEOUT, || {
            (health(&a0) == 200).then_some(())
        });
        // Autopilot promotes a joined node to voter only after it has been
        // stable this long; the 10 s default slows every test down.
        vault_ok(
            &a0,
            &c.token,
            "POST",
            "sys/storage/raft/autopilot/configuration",
            Some(serde_json::json!({"server_stabilization_time": "2s"})),
        );
        for i in 1..3 {
            c.unseal(i);
        }
        c.wait_voters(FORM_TIMEOUT.saturating_sub(t.elapsed()).max(START_TIMEOUT));
        let leader = c.leader_index().expect("an active node");
        let la = c.nodes[leader].addr.clone();
        vault_ok(
            &la,
            &c.token,
            "POST",
            "sys/mounts/transit",
            Some(serde_json::json!({"type": "transit"})),
        );
        c.create_key("kube");
        eprintln!(
            "cluster of 3 formed in {:?}; node {leader} active; addrs {}",
            t.elapsed(),
            c.addr_list()
        );
        c
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .unwrap();
        let child = Command::new(bao_bin())
            .args(["server", &format!("-config={}", n.cfg.display())])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao");
        n.child = Some(child);
    }

    fn wait_listening(&mut self, i: usize) {
        let addr = self.nodes[i].addr.clone();
        let child = &mut self.nodes[i].child;
        wait_for(&format!("node {i} to listen"), START_TIMEOUT, || {
            if let Some(st) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("bao node {i} at {addr} exited early with {st}");
            }
            (health(&addr) != 0).then_some(())
        });
    }

    /// Unseals node `i` and waits (bounded) until it is no longer sealed.
    /// A node that is joining the cluster may need the key more than once:
    /// the first unseal only decrypts the join challenge.
    pub fn unseal(&mut self, i: usize) {
        let addr = self.nodes[i].addr.clone();
        let key = self.unseal_key.clone();
        let mut last_post: Option<Instant> = None;
        let child = &mut self.nodes[i].child;
        wait_for(&format!("node {i} to unseal"), START_TIMEOUT, || {
            if let Some(st) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("bao node {i} at {addr} exited with {st}");
            }
            let (s, v) = vault_call(&addr, "", "GET", "sys/seal-status", None);
            if s == 200 && v["sealed"] == false {
                return Some(());
            }
            if s == 200 && v["initialized"] == true && last_post.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
                last_post = Some(Instant::now());
                let _ = vault_call(&addr, "", "POST", "sys/unseal", Some(serde_json::json!({ "key": key })));
            }
            None
        });
    }

    /// Waits until the raft configuration has three healthy voters and one
    /// node is active: only then can the cluster lose a node.
    pub fn wait_voters(&self, timeout: Duration) {
        wait_for("three healthy raft voters", timeout, || {
            let leader = self.leader_index()?;
            let (s, v) = vault_call(
                &self.nodes[leader].addr,
                &self.token,
                "GET",
                "sys/storage/raft/autopilot/state",
                None,
            );
            let d = &v["data"];
            let voters = d["voters"].as_array().map(|a| a.len()).unwrap_or(0);
            (s == 200 && d["healthy"] == true && voters == 3).then_some(())
        });
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].addr
    }

    /// All addresses, comma-separated (for VAULT_ADDR).
    pub fn addr_list(&self) -> String {
        self.addrs().join(",")
    }

    /// The addresses in the given order, comma-separated.
    pub fn addr_list_in(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| self.nodes[i].addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn health(&self, i: usize) -> u16 {
        health(&self.nodes[i].addr)
    }

    /// The one node answering 200 (active) on `sys/health`, if exactly one.
    pub fn leader_index(&self) -> Option<usize> {
        let active: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && self.health(i) == 200)
            .collect();
        (active.len() == 1).then(|| active[0])
    }

    /// Waits (bounded) for a node other than `old` to be active; returns it
    /// and how long the wait took.
    pub fn wait_for_new_leader(&self, old: usize, timeout: Duration) -> (usize, Duration) {
        let t = Instant::now();
        let i = wait_for("a new active node", timeout, || {
            self.leader_index().filter(|&i| i != old)
        });
        (i, t.elapsed())
    }

    /// Kills node `i` (SIGKILL by pid) and waits for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its data; unsealed (and waited for until it
    /// is a standby or active) or left sealed (answering 503).
    pub fn restart(&mut self, i: usize, unseal: bool) {
        self.stop(i);
        self.spawn(i);
        self.wait_listening(i);
        if unseal {
            self.unseal(i);
            let addr = self.nodes[i].addr.clone();
            wait_for(&format!("node {i} to rejoin"), START_TIMEOUT, || {
                matches!(health(&addr), 200 | 429).then_some(())
            });
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    /// Creates a transit key through the active node and waits until every
    /// running unsealed node can use it (standby reads lag behind raft).
    pub fn create_key(&self, key: &str) {
        let leader = self.leader_index().expect("an active node");
        vault_ok(
            &self.nodes[leader].addr,
            &self.token,
            "POST",
            &format!("transit/keys/{key}"),
            Some(serde_json::json!({})),
        );
        self.wait_key_everywhere(key);
    }

    /// Waits (bounded) until a ciphertext made by the active node under
    /// `key`'s latest version decrypts on every running unsealed node.
    pub fn wait_key_everywhere(&self, key: &str) {
        let leader = self.leader_index().expect("an active node");
        let v = vault_ok(
            &self.nodes[leader].addr,
            &self.token,
            "POST",
            &format!("transit/encrypt/{key}"),
            Some(serde_json::json!({ "plaintext": "cHJvYmU=" })),
        );
        let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() || !matches!(health(&n.addr), 200 | 429) {
                continue;
            }
            wait_for(&format!("key {key} on node {i}"), START_TIMEOUT, || {
                let (s, v) = vault_call(
                    &n.addr,
                    &self.token,
                    "POST",
                    &format!("transit/decrypt/{key}"),
                    Some(serde_json::json!({ "ciphertext": ct })),
                );
                (s == 200 && v["data"]["plaintext"] == "cHJvYmU=").then_some(())
            });
        }
    }

    /// Makes a token (TTL 1 h) with policy `name` from `hcl` plus `default`,
    /// and waits until every running unsealed node knows it (standbys that
    /// serve reads themselves would otherwise answer 403 for a moment).
    pub fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        let leader = self.leader_index().expect("an active node");
        let la = &self.nodes[leader].addr;
        vault_ok(
            la,
            &self.token,
            "POST",
            &format!("sys/policies/acl/{name}"),
            Some(serde_json::json!({ "policy": hcl })),
        );
        let v = vault_ok(
            la,
            &self.token,
            "POST",
            "auth/token/create",
            Some(serde_json::json!({ "policies": [name], "ttl": "1h" })),
        );
        let token = v["auth"]["client_token"].as_str().unwrap().to_owned();
        let nf = [("X-Vault-No-Request-Forwarding", "true")];
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() || !matches!(health(&n.addr), 200 | 429) {
                continue;
            }
            wait_for(&format!("token on node {i}"), START_TIMEOUT, || {
                // 307: this standby does not serve reads and will forward.
                let (s, _, _) = vault_call_raw(&n.addr, &token, "GET", "auth/token/lookup-self", None, &nf);
                matches!(s, 200 | 307).then_some(())
            });
        }
        token
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!(
                    "---- last lines of node {i} ({}) {} ----\n{}",
                    self.nodes[i].addr,
                    self.nodes[i].log.display(),
                    self.log_tail(i, 40)
                );
            }
        }
    }
}

/// One request with optional extra headers and without following
/// redirects; returns (status, Location header, JSON body or Null).
pub fn vault_call_raw(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, serde_json::Value) {
    // The harness's shared agent follows redirects; this one must not.
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{addr}/v1/{path}");
    let resp = if method == "GET" {
        let mut r = a.get(&url).header("X-Vault-Token", token);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else {
        let mut r = a
            .post(&url)
            .header("X-Vault-Token", token)
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send(body.unwrap_or(serde_json::json!({})).to_string().as_bytes())
    };
    match resp {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let loc = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                loc,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            )
        }
        Err(e) => (0, None, serde_json::Value::String(e.to_string())),
    }
}
