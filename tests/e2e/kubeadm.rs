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
//! The kubelet of [`crate::node::Node`] then runs those two manifests as
//! static pods, beside ours, from images built here `FROM scratch` around
//! the binaries of this suite, tagged as kubeadm names them
//! (`scripts/e2e.sh`, `build_control_plane_images`). The test changes the
//! rendered manifests in two ways only: the two host paths our fragment
//! fixes, `/etc/kubernetes/enc` and `/var/run/kmsplugin`, become the
//! test's own directories ([`HOST_PATHS`]), and the apiserver's probes ask
//! 127.0.0.1 (kubeadm points them at `advertiseAddress`, which is not where
//! this apiserver listens; a real cluster would use kubeadm `patches` the
//! same way, e2e.md). The EncryptionConfiguration placed in the `enc`
//! directory is `deploy/encryption-config-v2.yaml` exactly as shipped: the
//! apiserver sees the plugin's socket at the path it names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, test_python};
use crate::kube::{bin, deploy, read, run_bounded};
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
    "ClusterConfiguration.etcd.local.imageTag: the version of the etcd built here",
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
    /// The rendered kube-apiserver manifest, as JSON, before the test's
    /// changes.
    pub apiserver_manifest: Value,
    /// The etcd and kube-apiserver static pods, with the test's changes.
    static_pods: Vec<(&'static str, Value)>,
    pki: PathBuf,
    etcd_url: String,
}

impl KubeadmPlane {
    /// Renders everything with kubeadm and places the
    /// EncryptionConfiguration; [`KubeadmPlane::install`] hands the static
    /// pods to a kubelet.
    pub fn render(dir: &Path) -> KubeadmPlane {
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
        // The shipped EncryptionConfiguration, unchanged, where the
        // manifest's mount of /etc/kubernetes/enc shows it.
        let c0 = &api_manifest["spec"]["containers"][0];
        let args: Vec<String> = c0["command"]
            .as_array()
            .expect("command")
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let flag = arg_value(&args, "--encryption-provider-config").expect("our flag in the rendered manifest");
        let in_enc = flag
            .strip_prefix("/etc/kubernetes/enc/")
            .expect("under /etc/kubernetes/enc");
        std::fs::copy(deploy("encryption-config-v2.yaml"), dir.join("enc").join(in_enc)).unwrap();
        let mut api_pod = api_manifest.clone();
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let p = &mut api_pod["spec"]["containers"][0][probe]["httpGet"]["host"];
            if !p.is_null() {
                *p = json!("127.0.0.1");
            }
        }
        let mut static_pods = vec![("kube-apiserver", api_pod), ("etcd", etcd_manifest)];
        for (_, pod) in &mut static_pods {
            for v in pod["spec"]["volumes"].as_array_mut().into_iter().flatten() {
                let host = v["hostPath"]["path"].as_str().unwrap_or("").to_owned();
                if let Some((_, ours)) = HOST_PATHS.iter().find(|(p, _)| *p == host) {
                    v["hostPath"]["path"] = json!(dir.join(ours));
                }
            }
        }
        KubeadmPlane {
            pki: dir.join("pki"),
            dir,
            admin,
            kubelet_conf,
            apiserver_manifest: api_manifest,
            static_pods,
            etcd_url,
        }
    }

    /// Writes the etcd and kube-apiserver static pods into a kubelet's
    /// manifest directory.
    pub fn install(&self, manifests: &Path) {
        for (name, pod) in &self.static_pods {
            std::fs::write(manifests.join(format!("{name}.yaml")), pod.to_string()).unwrap();
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

    /// Waits until `/readyz` answers ok; returns how long that took.
    pub fn wait_ready(&self, bound: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.kubectl(&["get", "--raw", "/readyz"]).status.success() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < bound,
                "kube-apiserver not ready after {bound:?}: {}\n{}",
                String::from_utf8_lossy(&self.kubectl(&["get", "--raw", "/readyz?verbose"]).stdout),
                self.apiserver_log()
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
        crate::kube::stdout_ok(self.kubectl(args), &format!("kubectl {args:?}"))
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

    /// The last lines of the kube-apiserver container's logs (kubelet's
    /// pod logs, beside this directory).
    pub fn apiserver_log(&self) -> String {
        let logs = self.dir.with_file_name("node").join("pod-logs");
        let Ok(pods) = std::fs::read_dir(&logs) else {
            return String::new();
        };
        let mut text = String::new();
        for pod in pods
            .flatten()
            .filter(|p| p.file_name().to_string_lossy().contains("kube-apiserver"))
        {
            for f in std::fs::read_dir(pod.path().join("kube-apiserver"))
                .into_iter()
                .flatten()
                .flatten()
            {
                text += &crate::kube::tail(&read(&f.path()), 30);
            }
        }
        text
    }
}

impl Drop for KubeadmPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kube-apiserver ----\n{}", self.apiserver_log());
        }
    }
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
    let etcd_version = crate::node::etcd_version();
    cluster["etcd"] = json!({"local": {"dataDir": dir.join("etcd"), "imageTag": etcd_version, "extraArgs": [
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

pub fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_owned))
}
