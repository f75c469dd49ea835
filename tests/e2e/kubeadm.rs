//! A control plane shaped by kubeadm from our `deploy/kubeadm/kubeadm-config.yaml`.
//!
//! kubeadm (built from the same `k8s.io/kubernetes` as kube-apiserver)
//! renders everything from a ClusterConfiguration that merges our fragment
//! as shipped with what a loopback test needs ([`LOOPBACK_FIELDS`]): the
//! PKI (`init phase certs all`), the admin and kubelet kubeconfigs
//! (`init phase kubeconfig`), and the kube-apiserver and etcd static-pod
//! manifests (`init phase control-plane apiserver` and `init phase etcd
//! local`, with `--dry-run`, which writes them to `KUBEADM_INIT_DRYRUN_DIR`
//! instead of /etc/kubernetes/manifests).
//!
//! etcd and kube-apiserver then run as processes with exactly the command
//! lines of those manifests, each container path in them turned into the
//! host path its manifest mounts there. The two host paths our fragment
//! fixes, `/etc/kubernetes/enc` and `/var/run/kmsplugin`, are the test's
//! own directories ([`HOST_PATHS`]). The EncryptionConfiguration placed in
//! the `enc` directory is `deploy/encryption-config-v2.yaml` with its
//! endpoint seen through the same mount.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, test_python};
use crate::kube::{bin, deploy, read, run_bounded, stop_child, tail};
use crate::node::NODE_NAME;

/// One kubeadm phase; measured here: under 2 s each (certs the longest).
const KUBEADM_RUN: Duration = Duration::from_secs(120);
/// A kubectl or etcdctl call.
const TOOL_RUN: Duration = Duration::from_secs(60);
/// kube-apiserver's start to `/readyz` ok (see kube::APISERVER_START).
pub const APISERVER_START: Duration = Duration::from_secs(120);

/// The host paths our fragment names, and what this test puts in their
/// place (a test must not write under the host's /etc or /var/run).
pub const HOST_PATHS: &[(&str, &str)] = &[("/etc/kubernetes/enc", "enc"), ("/var/run/kmsplugin", "kmsplugin")];

/// What the test adds to our fragment, so that everything listens on
/// loopback ports of its own and keeps its files in the test's directory.
/// kubeadm refuses 127.0.0.1 as `advertiseAddress` ("unable to select an
/// IP from lo network interface"), so that field is a global address of
/// this host, never dialled: the apiserver binds and advertises 127.0.0.1
/// through `extraArgs`.
pub const LOOPBACK_FIELDS: &[&str] = &[
    "InitConfiguration.localAPIEndpoint.advertiseAddress: a global IPv4 address of this host (never dialled)",
    "InitConfiguration.localAPIEndpoint.bindPort: a free port",
    "InitConfiguration.nodeRegistration.name: e2e-node",
    "ClusterConfiguration.kubernetesVersion: the version of the binaries",
    "ClusterConfiguration.certificatesDir and etcd.local.dataDir: in the test's directory",
    "ClusterConfiguration.etcd.local.extraArgs: client, peer and metrics URLs on free loopback ports",
    "ClusterConfiguration.apiServer.extraArgs (added to ours): advertise-address and bind-address 127.0.0.1, endpoint-reconciler-type none (the lease reconciler refuses a loopback address), etcd-servers",
    "ClusterConfiguration.apiServer.certSANs: 127.0.0.1",
];

pub struct KubeadmPlane {
    dir: PathBuf,
    /// super-admin.conf (group system:masters), pointed at 127.0.0.1.
    /// admin.conf's group is bound to cluster-admin only by `kubeadm init`
    /// itself, which this test does not run.
    pub admin: PathBuf,
    /// kubelet.conf (user `system:node:e2e-node`), pointed at 127.0.0.1.
    pub kubelet_conf: PathBuf,
    /// The rendered kube-apiserver manifest, as JSON.
    pub apiserver_manifest: Value,
    pki: PathBuf,
    etcd_url: String,
    etcd_args: Vec<String>,
    api_args: Vec<String>,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

impl KubeadmPlane {
    /// Renders everything with kubeadm, writes the EncryptionConfiguration,
    /// starts etcd and kube-apiserver without waiting for the apiserver.
    pub fn start(dir: &Path) -> KubeadmPlane {
        let mut plane = KubeadmPlane::render(dir);
        plane.start_etcd();
        plane.start_apiserver();
        plane
    }

    fn render(dir: &Path) -> KubeadmPlane {
        let dir = dir.join("kubeadm");
        std::fs::create_dir_all(&dir).unwrap();
        for (_, ours) in HOST_PATHS {
            std::fs::create_dir_all(dir.join(ours)).unwrap();
        }
        let (api_port, client, peer, metrics) = (free_port(), free_port(), free_port(), free_port());
        let etcd_url = format!("https://127.0.0.1:{client}");
        let config = dir.join("kubeadm.json");
        std::fs::write(&config, cluster_config(&dir, api_port, &etcd_url, peer, metrics)).unwrap();
        let out = dir.join("rendered");
        let c = config.display().to_string();
        let kubeconfigs = dir.join("kubeconfigs").display().to_string();
        kubeadm(&["init", "phase", "certs", "all", "--config", &c], &out);
        for k in ["super-admin", "kubelet"] {
            kubeadm(
                &[
                    "init",
                    "phase",
                    "kubeconfig",
                    k,
                    "--config",
                    &c,
                    "--kubeconfig-dir",
                    &kubeconfigs,
                ],
                &out,
            );
        }
        kubeadm(
            &[
                "init",
                "phase",
                "control-plane",
                "apiserver",
                "--config",
                &c,
                "--dry-run",
            ],
            &out,
        );
        kubeadm(&["init", "phase", "etcd", "local", "--config", &c, "--dry-run"], &out);
        let api_manifest = yaml_to_json(&out.join("kube-apiserver.yaml"));
        let etcd_manifest = yaml_to_json(&out.join("etcd.yaml"));
        let api_args = command_on_host(&dir, &api_manifest, "kube-apiserver");
        let etcd_args = command_on_host(&dir, &etcd_manifest, "etcd");
        let local = format!("https://127.0.0.1:{api_port}");
        let rewrite = |name: &str| {
            let p = dir.join(format!("kubeconfigs/{name}"));
            let text = std::fs::read_to_string(&p).unwrap();
            let server = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("server: "))
                .expect("server in kubeconfig")
                .to_owned();
            let to = dir.join(format!("{name}.local"));
            std::fs::write(&to, text.replace(&server, &local)).unwrap();
            to
        };
        let (admin, kubelet_conf) = (rewrite("super-admin.conf"), rewrite("kubelet.conf"));
        // The shipped EncryptionConfiguration where the manifest's mount of
        // /etc/kubernetes/enc shows it, its endpoint seen the same way.
        let shipped = std::fs::read_to_string(deploy("encryption-config-v2.yaml")).unwrap();
        let flag = arg_value(&api_args, "--encryption-provider-config").expect("our flag in the rendered manifest");
        let endpoint = "unix:///var/run/kmsplugin/kms.sock";
        assert!(shipped.contains(endpoint), "encryption-config-v2.yaml names {endpoint}");
        let socket = to_host(&dir, &api_manifest, "/var/run/kmsplugin/kms.sock");
        std::fs::write(&flag, shipped.replace(endpoint, &format!("unix://{socket}"))).unwrap();
        KubeadmPlane {
            pki: dir.join("pki"),
            dir,
            admin,
            kubelet_conf,
            apiserver_manifest: api_manifest,
            etcd_url,
            etcd_args,
            api_args,
            etcd: None,
            apiserver: None,
        }
    }

    /// The host directory standing for one of [`HOST_PATHS`].
    pub fn host_dir(&self, shipped: &str) -> PathBuf {
        let (_, ours) = HOST_PATHS
            .iter()
            .find(|(p, _)| *p == shipped)
            .expect("a HOST_PATHS entry");
        self.dir.join(ours)
    }

    pub fn start_etcd(&mut self) {
        self.etcd = Some(spawn(&self.dir, bin("etcd"), &self.etcd_args, "etcd.log"));
    }

    pub fn start_apiserver(&mut self) {
        self.apiserver = Some(spawn(&self.dir, bin("kube-apiserver"), &self.api_args, "apiserver.log"));
    }

    pub fn stop_apiserver(&mut self) {
        stop_child(&mut self.apiserver);
    }

    pub fn stop_etcd(&mut self) {
        stop_child(&mut self.etcd);
    }

    /// Waits until `/readyz` answers ok; returns how long that took.
    pub fn wait_ready(&mut self, bound: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(st) = self.apiserver.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("kube-apiserver exited with {st}:\n{}", tail(&self.apiserver_log(), 60));
            }
            if self.kubectl(&["get", "--raw", "/readyz"]).status.success() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < bound,
                "kube-apiserver not ready after {bound:?}: {}",
                String::from_utf8_lossy(&self.kubectl(&["get", "--raw", "/readyz?verbose"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("kubectl"));
        c.arg(format!("--kubeconfig={}", self.admin.display()))
            .arg("--request-timeout=30s")
            .args(args);
        run_bounded(c, None, TOOL_RUN)
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `GET path` on the apiserver: (answered 200, body or error).
    pub fn get_raw(&self, path: &str) -> (bool, String) {
        let out = self.kubectl(&["get", "--raw", path]);
        let text = if out.status.success() { &out.stdout } else { &out.stderr };
        (out.status.success(), String::from_utf8_lossy(text).trim().to_owned())
    }

    pub fn create_secret(&self, name: &str, value: &[u8]) -> Output {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        let obj = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"}, "data": {"v": b64}});
        let mut c = Command::new(bin("kubectl"));
        c.arg(format!("--kubeconfig={}", self.admin.display())).args([
            "--request-timeout=30s",
            "create",
            "-f",
            "-",
            "-o",
            "name",
        ]);
        run_bounded(c, Some(obj.to_string().as_bytes()), TOOL_RUN)
    }

    pub fn secret_value(&self, name: &str) -> Vec<u8> {
        use base64::Engine as _;
        let out = self.kubectl_ok(&["get", "secret", "-n", "default", name, "-o", "jsonpath={.data.v}"]);
        base64::engine::general_purpose::STANDARD
            .decode(out.trim())
            .expect("base64 from the API")
    }

    /// The raw value etcd holds for Secret `default/name`, read with the
    /// apiserver's etcd client certificate.
    pub fn secret_in_etcd(&self, name: &str) -> Vec<u8> {
        let p = |f: &str| self.pki.join(f).display().to_string();
        let mut c = Command::new(bin("etcdctl"));
        c.arg(format!("--endpoints={}", self.etcd_url))
            .arg(format!("--cacert={}", p("etcd/ca.crt")))
            .arg(format!("--cert={}", p("apiserver-etcd-client.crt")))
            .arg(format!("--key={}", p("apiserver-etcd-client.key")))
            .args([
                "--dial-timeout=3s",
                "--command-timeout=30s",
                "get",
                "--print-value-only",
            ])
            .arg(format!("/registry/secrets/default/{name}"))
            .env("ETCDCTL_API", "3");
        let out = run_bounded(c, None, TOOL_RUN);
        assert!(
            out.status.success(),
            "etcdctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v = out.stdout;
        if v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    }

    pub fn apiserver_log(&self) -> String {
        read(&self.dir.join("apiserver.log"))
    }
}

impl Drop for KubeadmPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kube-apiserver ----\n{}", tail(&self.apiserver_log(), 40));
        }
        stop_child(&mut self.apiserver);
        stop_child(&mut self.etcd);
    }
}

fn spawn(dir: &Path, bin: PathBuf, args: &[String], log: &str) -> Child {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .unwrap();
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("start a control-plane process")
}

fn kubeadm(args: &[&str], dry_run_dir: &Path) {
    let mut c = Command::new(bin("kubeadm"));
    c.args(args).env("KUBEADM_INIT_DRYRUN_DIR", dry_run_dir);
    let out = run_bounded(c, None, KUBEADM_RUN);
    assert!(
        out.status.success(),
        "kubeadm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A global-scope IPv4 address of this host: kubeadm's advertiseAddress.
fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .expect("kubeadm needs a global IPv4 address on this host as advertiseAddress (never dialled); none found")
}

/// Our fragment as shipped, with [`LOOPBACK_FIELDS`] merged in, and an
/// InitConfiguration; JSON (which kubeadm reads as YAML).
fn cluster_config(dir: &Path, api_port: u16, etcd_url: &str, peer: u16, metrics: u16) -> String {
    let mut cluster = yaml_to_json(&deploy("kubeadm/kubeadm-config.yaml"));
    assert_eq!(cluster["kind"], "ClusterConfiguration");
    let arg = |n: &str, v: &str| json!({"name": n, "value": v});
    let version = crate::node::kube_version();
    cluster["kubernetesVersion"] = json!(version);
    cluster["certificatesDir"] = json!(dir.join("pki"));
    let peer_url = format!("https://127.0.0.1:{peer}");
    cluster["etcd"] = json!({"local": {"dataDir": dir.join("etcd"), "extraArgs": [
        arg("listen-client-urls", etcd_url), arg("advertise-client-urls", etcd_url),
        arg("listen-peer-urls", &peer_url), arg("initial-advertise-peer-urls", &peer_url),
        arg("initial-cluster", &format!("{NODE_NAME}={peer_url}")),
        arg("listen-metrics-urls", &format!("http://127.0.0.1:{metrics}")),
    ]}});
    let api = &mut cluster["apiServer"];
    api["certSANs"] = json!(["127.0.0.1"]);
    let extra = api["extraArgs"]
        .as_array_mut()
        .expect("our fragment's apiServer.extraArgs list");
    extra.extend([
        arg("advertise-address", "127.0.0.1"),
        arg("bind-address", "127.0.0.1"),
        arg("endpoint-reconciler-type", "none"),
        arg("etcd-servers", etcd_url),
    ]);
    let init = json!({"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": host_address(), "bindPort": api_port},
        "nodeRegistration": {"name": NODE_NAME}});
    format!("{init}\n---\n{cluster}\n")
}

fn yaml_to_json(p: &Path) -> Value {
    let out = Command::new(test_python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(p)
        .output()
        .expect("python3 with PyYAML (scripts/lib.sh ensure_test_python)");
    assert!(
        out.status.success(),
        "{}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The host path behind `path` inside the manifest's container: its
/// deepest volume mount, through that volume's hostPath (ours for
/// [`HOST_PATHS`]).
fn to_host(dir: &Path, manifest: &Value, path: &str) -> String {
    let c = &manifest["spec"]["containers"][0];
    let mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            let mp = m["mountPath"].as_str().unwrap_or("/nowhere");
            path == mp || path.starts_with(&format!("{mp}/"))
        })
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len));
    let Some(m) = mount else { return path.to_owned() };
    let volume = manifest["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == m["name"])
        .expect("the mount's volume");
    let host = volume["hostPath"]["path"].as_str().expect("a hostPath volume");
    let host = HOST_PATHS
        .iter()
        .find(|(p, _)| *p == host)
        .map_or_else(|| host.to_owned(), |(_, ours)| dir.join(ours).display().to_string());
    format!("{host}{}", &path[m["mountPath"].as_str().unwrap().len()..])
}

/// The container's command line (its first element is the binary) with
/// every absolute path in a flag's value taken to the host.
fn command_on_host(dir: &Path, manifest: &Value, binary: &str) -> Vec<String> {
    let cmd = manifest["spec"]["containers"][0]["command"]
        .as_array()
        .expect("command");
    assert_eq!(cmd.first().and_then(Value::as_str), Some(binary));
    cmd.iter()
        .skip(1)
        .map(|a| {
            let a = a.as_str().expect("string argument");
            match a.split_once('=') {
                Some((flag, v)) if v.starts_with('/') => format!("{flag}={}", to_host(dir, manifest, v)),
                _ => a.to_owned(),
            }
        })
        .collect()
}

pub fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_owned))
}
