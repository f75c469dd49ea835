//! The image, run by podman (issue 22): `podman run` exactly as
//! docs/operations.md shows it, and `podman kube play` of the shipped
//! static pod and of the DaemonSet's pod template. podman keeps its
//! storage, run and temporary directories in the test's directory and
//! reads tests/e2e/containers.conf (runc, cgroupfs, lower rlimits: what
//! these machines need, e2e.md) through `CONTAINERS_CONF`; nothing under
//! /etc changes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{decrypt_v1, encrypt_v1, round_trip_v2, status, KmsClient, Pki, TempDir, DEADLINE};
use crate::kube::{deploy, run_bounded, Apiserver, ApiserverOpts, Etcd};
use crate::node::{host_lock, image_archive, manifest_image, unmount_under};
use crate::shipped::{static_pod, Vault};
use crate::stack::figure;

/// One podman call; `kube play` of a pod included. Measured here: under
/// 2 s each.
const PODMAN_RUN: Duration = Duration::from_secs(120);
/// The plugin's socket after its container starts: log in, first check,
/// bind. Measured here: under 1 s.
const SOCKET_UP: Duration = Duration::from_secs(60);
/// The uid the image runs as (`USER 65532:65532`, distroless `nonroot`).
const NONROOT: u32 = 65532;

/// What podman 4.3 writes outside its --root, --runroot and --tmpdir
/// whatever its flags say: netavark's run directory, the blob-info cache
/// under /var/lib/containers, and (empty) runc's default root. (Its network configuration goes to
/// `--network-config-dir`, runc's state to `--runtime-flag root=`, and
/// image copies to `TMPDIR`.)
const PODMAN_FIXED_PATHS: &[&str] = &["/run/containers", "/run/runc", "/var/lib/containers"];

struct Podman {
    dir: PathBuf,
    /// podman refuses a runroot path over 50 characters: this one is short
    /// and in /tmp, removed on drop.
    run: PathBuf,
    _fixed: crate::node::FixedPaths,
}

impl Podman {
    /// podman with its own directories, the image under test loaded.
    fn new(dir: &Path) -> Podman {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = PathBuf::from(format!("/tmp/tpr-{}-{n}", std::process::id()));
        let p = Podman {
            dir: dir.join("podman"),
            run,
            _fixed: crate::node::FixedPaths::note(PODMAN_FIXED_PATHS),
        };
        for d in ["root", "tmp", "networks"] {
            std::fs::create_dir_all(p.dir.join(d)).unwrap();
        }
        std::fs::create_dir_all(&p.run).unwrap();
        p.ok(&["load", "-q", "-i", &image_archive().display().to_string()]);
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = |n: &str| self.dir.join(n).display().to_string();
        let mut c = Command::new("podman");
        c.env(
            "CONTAINERS_CONF",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/containers.conf"),
        )
        .env("TMPDIR", d("tmp"))
        .args([
            "--root",
            &d("root"),
            "--tmpdir",
            &d("tmp"),
            "--network-config-dir",
            &d("networks"),
        ])
        .arg("--runroot")
        .arg(&self.run)
        .arg(format!("--runtime-flag=root={}/runc", self.run.display()))
        .args(args);
        run_bounded(c, None, PODMAN_RUN)
    }

    fn ok(&self, args: &[&str]) -> String {
        crate::kube::stdout_ok(self.run(args), &format!("podman {args:?}"))
    }

    fn inspect(&self, container: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", container])).unwrap();
        v[0].clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["pod", "rm", "-a", "-f", "-t", "10"]);
        let _ = self.run(&["rm", "-a", "-f", "-t", "10"]);
        let _ = self.run(&["image", "rm", "-a", "-f"]);
        unmount_under(&self.dir);
        unmount_under(&self.run);
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

fn wait_socket(p: &Podman, socket: &Path, container: &str) -> KmsClient {
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < SOCKET_UP,
            "no socket from {container} within {SOCKET_UP:?}: {}",
            String::from_utf8_lossy(&p.run(&["logs", container]).stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    KmsClient::connect(socket, DEADLINE)
}

/// The apiserver's calls through the socket: Status, then a v2 and a v1
/// round trip.
fn serves_v2_and_v1(c: &KmsClient) {
    assert_eq!(status(c).healthz, "ok");
    round_trip_v2(c);
    let dek = crate::harness::dek();
    let cipher = encrypt_v1(c, &dek).expect("v1 Encrypt");
    assert_eq!(decrypt_v1(c, &cipher).expect("v1 Decrypt"), dek);
}

/// What the kernel says of the container's process: (uid, effective
/// capabilities).
fn process_identity(p: &Podman, container: &str) -> (u32, String) {
    let pid = p.inspect(container)["State"]["Pid"]
        .as_u64()
        .expect("a running container");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap()
    };
    (field("Uid:").parse().unwrap(), field("CapEff:"))
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
}

/// The arguments of the `podman run` command of docs/operations.md.
fn documented_podman_run() -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")).unwrap();
    let block = doc
        .split("<!-- podman-run:")
        .nth(1)
        .and_then(|b| b.split("```sh\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("the podman-run block in docs/operations.md");
    let joined = block.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.trim_start().starts_with("podman run"))
        .expect("a podman run line");
    line.split_whitespace().skip(2).map(str::to_owned).collect()
}

#[test]
fn podman_runs_the_image_as_operations_md_shows() {
    let _host = host_lock();
    let dir = TempDir::new("e2e-podman-run");
    let d = dir.path();
    let vault = Vault::start(d);
    let etc = vault.etc_trousseau(d);
    let sockets = d.join("kmsplugin");
    std::fs::create_dir_all(&sockets).unwrap();
    // The documented `chown 65532:65532 /var/run/kmsplugin /etc/trousseau/*`.
    chown(&sockets, NONROOT);
    for f in std::fs::read_dir(&etc).unwrap() {
        chown(&f.unwrap().path(), NONROOT);
    }
    let p = Podman::new(d);

    // The image holds the binary, the CA bundle, passwd and group, and
    // nothing else.
    let image = manifest_image(&std::fs::read_to_string(deploy("kubeadm/trousseau.yaml")).unwrap());
    let cfg: Value = serde_json::from_str(&p.ok(&["image", "inspect", &image])).unwrap();
    assert_eq!(cfg[0]["Config"]["User"], "65532:65532");
    p.ok(&["create", "--name", "layout", &image]);
    let tar = d.join("layout.tar");
    p.ok(&["export", "-o", &tar.display().to_string(), "layout"]);
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let entries: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let files = [
        "usr/local/bin/trousseau",
        "etc/passwd",
        "etc/group",
        "etc/ssl/certs/ca-certificates.crt",
    ];
    // Their directories, and what podman itself puts in every container
    // (mount points for /dev, /proc, /sys, /run and its files in /etc).
    let allowed = [
        "usr",
        "usr/local",
        "usr/local/bin",
        "etc",
        "etc/ssl",
        "etc/ssl/certs",
        "dev",
        "proc",
        "sys",
        "run",
        "run/.containerenv",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
    ];
    let extra: Vec<&String> = entries
        .iter()
        .filter(|e| !files.contains(&e.as_str()) && !allowed.contains(&e.as_str()))
        .collect();
    assert!(extra.is_empty(), "the image holds more than it should: {extra:?}");
    for f in files {
        assert!(
            entries.iter().any(|e| e == f),
            "{f} missing from the image: {entries:?}"
        );
    }
    p.ok(&["rm", "layout"]);

    let mut args = documented_podman_run();
    for a in &mut args {
        if let Some(rest) = a.strip_prefix("/var/run/kmsplugin:") {
            *a = format!("{}:{rest}", sockets.display());
        } else if let Some(rest) = a.strip_prefix("/etc/trousseau:") {
            *a = format!("{}:{rest}", etc.display());
        }
    }
    assert_eq!(args.last(), Some(&image), "operations.md runs the image deploy/ names");
    let started = Instant::now();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.ok(&[&["run"], &args[..]].concat());
    let c = wait_socket(&p, &sockets.join("kms.sock"), "trousseau");
    let up = started.elapsed();
    serves_v2_and_v1(&c);
    let (uid, caps) = process_identity(&p, "trousseau");
    assert_eq!(
        (uid, caps.as_str()),
        (NONROOT, "0000000000000000"),
        "uid and effective capabilities"
    );
    assert_eq!(p.inspect("trousseau")["HostConfig"]["ReadonlyRootfs"], true);
    p.ok(&["stop", "-t", "15", "trousseau"]);
    assert_eq!(
        p.inspect("trousseau")["State"]["ExitCode"],
        0,
        "exit status after SIGTERM"
    );
    assert!(!sockets.join("kms.sock").exists(), "socket left after stop");
    figure(&format!(
        "podman run (docs/operations.md): socket up {:.1} s after run, v2 and v1 round trips, uid {uid}, no capabilities, read-only root, exit 0 on stop",
        up.as_secs_f64()
    ));
}

/// The DaemonSet's pod template as a Pod (podman 4.3 plays no
/// DaemonSets), with what kubelet would add and podman does not: the
/// service-account token, mounted from a file holding a real token of
/// service account kube-system/trousseau.
fn daemonset_as_pod(sockets: &Path, token_dir: &Path) -> (Value, Value) {
    let out = Command::new(crate::harness::test_python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(deploy("daemonset/trousseau.yaml"))
        .output()
        .unwrap();
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the DaemonSet file as JSON");
    let find = |k: &str| docs.iter().find(|d| d["kind"] == k).cloned().expect(k);
    let (cm, ds) = (find("ConfigMap"), find("DaemonSet"));
    let mut spec = ds["spec"]["template"]["spec"].clone();
    for v in spec["volumes"].as_array_mut().unwrap() {
        if v["hostPath"]["path"] == "/var/run/kmsplugin" {
            v["hostPath"]["path"] = json!(sockets);
        }
    }
    spec["volumes"].as_array_mut().unwrap().push(json!({"name": "sa-token",
        "hostPath": {"path": token_dir, "type": "Directory"}}));
    spec["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sa-token",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}));
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "trousseau-ds", "namespace": "kube-system",
                     "labels": ds["spec"]["template"]["metadata"]["labels"]},
        "spec": spec});
    (cm, pod)
}

#[test]
fn podman_kube_play_runs_the_shipped_static_pod_and_daemonset() {
    let _host = host_lock();
    let dir = TempDir::new("e2e-podman-play");
    let d = dir.path();
    let vault = Vault::start(d);
    let p = Podman::new(d);

    // The kubeadm static pod, as kubelet would get it.
    let etc = vault.etc_trousseau(d);
    let sockets = d.join("kmsplugin");
    std::fs::create_dir_all(&sockets).unwrap();
    let manifest = d.join("static-pod.yaml");
    std::fs::write(&manifest, static_pod(&sockets, &etc)).unwrap();
    let m = manifest.display().to_string();
    p.ok(&["kube", "play", &m]);
    let c = wait_socket(&p, &sockets.join("kms.sock"), "trousseau-trousseau");
    serves_v2_and_v1(&c);
    let (uid, caps) = process_identity(&p, "trousseau-trousseau");
    assert_eq!(
        (uid, caps.as_str()),
        (0, "0000000000000000"),
        "static pod: uid and effective capabilities"
    );
    assert_eq!(p.inspect("trousseau-trousseau")["HostConfig"]["ReadonlyRootfs"], true);
    drop(c);
    p.ok(&["pod", "stop", "-t", "15", "trousseau"]);
    assert_eq!(
        p.inspect("trousseau-trousseau")["State"]["ExitCode"],
        0,
        "exit status after SIGTERM"
    );
    assert!(!sockets.join("kms.sock").exists(), "socket left after the pod stopped");
    p.ok(&["kube", "down", &m]);

    // The DaemonSet: kubernetes auth, checked by a real kube-apiserver's
    // TokenReview with a real service-account token.
    let kube = d.join("kube");
    std::fs::create_dir_all(&kube).unwrap();
    let pki = Pki::new(&kube, "kube-apiserver.e2e.test");
    let etcd = Etcd::start(&kube);
    let api = Apiserver::start(
        &kube,
        &etcd,
        &pki,
        &ApiserverOpts {
            encryption_config: None,
            feature_gates: None,
        },
    );
    api.kubectl_ok(&["create", "serviceaccount", "-n", "kube-system", "trousseau"], None);
    let jwt = api.kubectl_ok(
        &["create", "token", "-n", "kube-system", "trousseau", "--duration=1h"],
        None,
    );
    let token_dir = d.join("sa-token");
    std::fs::create_dir_all(&token_dir).unwrap();
    std::fs::write(token_dir.join("token"), jwt.trim()).unwrap();
    vault.kubernetes_auth(&api.api.base, &pki.ca);
    let (mut cm, pod) = daemonset_as_pod(&sockets, &token_dir);
    // The ConfigMap's two placeholders: Vault's address and its CA.
    let mut cfg: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    cfg["vault-addr"] = json!(vault.addr);
    cm["data"]["config.json"] = json!(cfg.to_string());
    cm["data"]["vault-ca.pem"] = json!(std::fs::read_to_string(&vault.pki.ca).unwrap());
    let (cm_file, pod_file) = (d.join("configmap.json"), d.join("daemonset-pod.json"));
    std::fs::write(&cm_file, cm.to_string()).unwrap();
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    let pf = pod_file.display().to_string();
    p.ok(&["kube", "play", "--configmap", &cm_file.display().to_string(), &pf]);
    let c = wait_socket(&p, &sockets.join("kms.sock"), "trousseau-ds-trousseau");
    serves_v2_and_v1(&c);
    let (uid, caps) = process_identity(&p, "trousseau-ds-trousseau");
    assert_eq!(
        (uid, caps.as_str()),
        (0, "0000000000000000"),
        "DaemonSet pod: uid and effective capabilities"
    );
    drop(c);
    p.ok(&["kube", "down", &pf]);
    figure("podman kube play: deploy/kubeadm/trousseau.yaml and the DaemonSet's pod template (kubernetes auth through a real TokenReview) serve v2 and v1, root without capabilities, read-only root");
}
