//! A control-plane node on this machine: containerd 1.6 (Debian's) and a
//! kubelet built from the same `k8s.io/kubernetes` as kube-apiserver, each
//! with its own root, state, socket and config in the test's directory
//! (../shared/docs/e2e.md, "Images, a container runtime and a real
//! kubelet"). The kubelet runs the static pods in [`Node::manifests`] and,
//! given a kubeconfig, registers the node so that the apiserver shows their
//! mirror pods.
//!
//! Nothing under /etc is read or written: containerd gets a config file of
//! ours, CNI a loopback-only conflist in our directory, and kubelet a
//! KubeletConfiguration with `makeIPTablesUtilChains: false` (the host's
//! iptables stay as they were). kubelet does write two fixed paths,
//! `/var/lib/kubelet/device-plugins/` and `/var/log/containers/`; the node
//! removes them when it stops if they did not exist before it started.
//! Every process is stopped by pid, and every mount kubelet and containerd
//! made under our directory is unmounted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;
use crate::kube::{bin, read, run_bounded, stop_child, tail};

/// containerd's start to its socket answering; measured here: under 1 s.
const CONTAINERD_START: Duration = Duration::from_secs(30);
/// One `ctr` call (an image import of a few MiB included; measured here:
/// 0.2 s).
const CTR_RUN: Duration = Duration::from_secs(60);
/// The node name, as kubeadm's `nodeRegistration.name` gives it (the
/// kubelet's client certificate is for `system:node:<name>`).
pub const NODE_NAME: &str = "e2e-node";
/// Fixed paths kubelet and containerd write whatever their flags say
/// (e2e.md; containerd 1.6 puts its shims' sockets in /run/containerd/s/).
const KUBELET_FIXED_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
];

/// containerd + kubelet, stopped (and their mounts undone) on drop.
pub struct Node {
    dir: PathBuf,
    pub manifests: PathBuf,
    socket: PathBuf,
    containerd: Option<Child>,
    kubelet: Option<Child>,
    kubelet_args: Vec<String>,
    /// Fixed paths kubelet writes, removed on drop if this node made them.
    _fixed: FixedPaths,
}

impl Node {
    /// Starts containerd, imports `images` (OCI archives), and starts a
    /// kubelet running the static pods of [`Node::manifests`] (empty at
    /// first), registered through `kubeconfig` when one is given.
    pub fn start(dir: &Path, images: &[&Path], kubeconfig: Option<&Path>) -> Node {
        let dir = dir.join("node");
        let manifests = dir.join("manifests");
        for d in ["cni", "manifests", "pod-logs", "volume-plugins"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let fixed = FixedPaths::note(KUBELET_FIXED_PATHS);
        let socket = dir.join("containerd.sock");
        write_containerd_config(&dir, &socket);
        let (port, healthz) = (free_port(), free_port());
        write_kubelet_config(&dir, &socket, port, healthz);
        let mut kubelet_args = vec![
            format!("--config={}", dir.join("kubelet.yaml").display()),
            format!("--root-dir={}", dir.join("kubelet").display()),
            format!("--cert-dir={}", dir.join("kubelet-pki").display()),
            format!("--hostname-override={NODE_NAME}"),
            "--v=2".into(),
        ];
        if let Some(k) = kubeconfig {
            kubelet_args.push(format!("--kubeconfig={}", k.display()));
        }
        let mut node = Node {
            dir,
            manifests,
            socket,
            containerd: None,
            kubelet: None,
            kubelet_args,
            _fixed: fixed,
        };
        node.start_containerd();
        for image in images {
            node.ctr_ok(&["images", "import", &image.display().to_string()]);
        }
        node.start_kubelet();
        node
    }

    pub fn start_containerd(&mut self) {
        let log = append(&self.dir.join("containerd.log"));
        let child = Command::new("containerd")
            .arg(format!("--config={}", self.dir.join("containerd.toml").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        self.containerd = Some(child);
        let start = Instant::now();
        while !self.ctr(&["version"]).status.success() {
            assert!(
                start.elapsed() < CONTAINERD_START,
                "containerd not answering after {CONTAINERD_START:?}:\n{}",
                tail(&read(&self.dir.join("containerd.log")), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn start_kubelet(&mut self) {
        let log = append(&self.dir.join("kubelet.log"));
        let child = Command::new(bin("kubelet"))
            .args(&self.kubelet_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kubelet");
        self.kubelet = Some(child);
    }

    pub fn stop_kubelet(&mut self) {
        stop_child(&mut self.kubelet);
    }

    /// A node going down hard: kubelet stopped, every container and
    /// containerd killed, as at power-off. Mounts stay, as they would not
    /// after a real reboot; containerd cleans up its dead tasks when it
    /// starts again.
    pub fn power_off(&mut self) {
        self.stop_kubelet();
        for pid in self.container_pids() {
            kill(pid, "KILL");
        }
        stop_child(&mut self.containerd);
        for pid in self.shim_pids() {
            kill(pid, "KILL");
        }
    }

    /// Back up after [`Node::power_off`]: containerd, then kubelet.
    pub fn power_on(&mut self) {
        self.start_containerd();
        self.start_kubelet();
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut c = Command::new("ctr");
        c.arg(format!("--address={}", self.socket.display()))
            .args(["--namespace", "k8s.io", "--timeout", "30s"])
            .args(args);
        run_bounded(c, None, CTR_RUN)
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        crate::kube::stdout_ok(self.ctr(args), &format!("ctr {args:?}"))
    }

    /// The running task of the container named `name` in a pod, as
    /// (container id, pid), from containerd's labels.
    pub fn running_container(&self, name: &str) -> Option<(String, u32)> {
        let tasks = self.ctr_ok(&["tasks", "ls"]);
        tasks.lines().skip(1).find_map(|l| {
            let mut f = l.split_whitespace();
            let (id, pid, status) = (f.next()?, f.next()?, f.next()?);
            if status != "RUNNING" {
                return None;
            }
            let info = self.ctr(&["containers", "info", id]);
            let v: serde_json::Value = serde_json::from_slice(&info.stdout).ok()?;
            let pid: u32 = pid.parse().ok()?;
            (v["Labels"]["io.kubernetes.container.name"] == name).then(|| (id.to_owned(), pid))
        })
    }

    /// SIGKILLs container `name`'s process, as the OOM killer or a crash
    /// would; returns its pid.
    pub fn kill_container(&self, name: &str) -> u32 {
        let (id, pid) = self
            .running_container(name)
            .unwrap_or_else(|| panic!("no running container {name}"));
        self.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", &id]);
        pid
    }

    /// Tags an imported image with another name (an "upgrade" to a new tag).
    pub fn tag_image(&self, from: &str, to: &str) {
        self.ctr_ok(&["images", "tag", "--force", from, to]);
    }

    pub fn kubelet_log(&self) -> String {
        read(&self.dir.join("kubelet.log"))
    }

    /// The init process of every task containerd started, from its state
    /// directory (`<task>/init.pid`).
    fn container_pids(&self) -> Vec<u32> {
        let tasks = self.dir.join("containerd/state/io.containerd.runtime.v2.task/k8s.io");
        let Ok(entries) = std::fs::read_dir(tasks) else {
            return vec![];
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("init.pid")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// containerd's shims outlive it; ours are the ones that name our
    /// socket on their command line.
    fn shim_pids(&self) -> Vec<u32> {
        let needle = format!("-address\0{}\0", self.socket.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kubelet ----\n{}", tail(&self.kubelet_log(), 40));
            eprintln!(
                "---- containerd ----\n{}",
                tail(&read(&self.dir.join("containerd.log")), 20)
            );
        }
        self.power_off();
        unmount_under(&self.dir);
    }
}

/// Host paths a tool writes whatever its flags say: those that did not
/// exist when noted are removed on drop (after the tool has stopped: keep
/// this value in a field declared after the tool's).
pub struct FixedPaths(Vec<PathBuf>);

impl FixedPaths {
    pub fn note(paths: &[&str]) -> FixedPaths {
        FixedPaths(paths.iter().map(PathBuf::from).filter(|p| !p.exists()).collect())
    }
}

impl Drop for FixedPaths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Every mount point under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut m: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix) || *p == dir.display().to_string())
        .map(str::to_owned)
        .collect();
    m.sort_by_key(|p| std::cmp::Reverse(p.len()));
    m.dedup();
    m
}

/// Unmounts everything under `dir` (kubelet, containerd and podman mount
/// there); says on stderr what it could not.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        // A mount can be stacked more than once (kubelet bind-mounts its
        // root onto itself): unmount until it is gone.
        for _ in 0..4 {
            let done = Command::new("umount").arg(&m).stderr(Stdio::null()).status();
            if !done.is_ok_and(|s| s.success()) {
                break;
            }
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        eprintln!("mounts left under {}: {left:?}", dir.display());
    }
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

fn append(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap()
}

/// containerd 1.6, as e2e.md found it working here: its own root, state,
/// socket and opt dir; CRI with a pause image built here, no OOM score
/// changes it is not allowed to make, runc from Debian with cgroupfs, and a
/// loopback-only CNI config (without one the node stays NotReady).
fn write_containerd_config(dir: &Path, socket: &Path) {
    let d = dir.display();
    std::fs::write(
        dir.join("cni/10-lo.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}"#,
    )
    .unwrap();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let runc = format!("{cri}.containerd.runtimes.runc");
    let toml = format!(
        "version = 2\nroot = \"{d}/containerd/root\"\nstate = \"{d}/containerd/state\"\n\
         [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n\
         [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/containerd/opt\"\n\
         [{cri}]\n  sandbox_image = \"{pause}\"\n  restrict_oom_score_adj = true\n\
         \x20 stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
         [{cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{d}/cni\"\n\
         [{cri}.containerd]\n  default_runtime_name = \"runc\"\n\
         [{runc}]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         [{runc}.options]\n  BinaryName = \"/usr/sbin/runc\"\n  SystemdCgroup = false\n  Root = \"{d}/runc\"\n",
        s = socket.display(),
        pause = PAUSE_IMAGE,
    );
    std::fs::write(dir.join("containerd.toml"), toml).unwrap();
}

/// The sandbox image kubeadm 1.37 names; scripts/e2e.sh builds it here
/// (`FROM scratch` around a static program that waits for SIGTERM).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";

/// What kubelet 1.37 needs on this machine (e2e.md): cgroup v1 allowed,
/// no QoS cgroups or node allocatable enforcement, cgroupfs, no iptables
/// chains, every listener on loopback, and the manifest directory polled
/// every second (default 20 s) so the checks do not wait on it.
fn write_kubelet_config(dir: &Path, socket: &Path, port: u16, healthz: u16) {
    let d = dir.display();
    let yaml = format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         staticPodPath: {d}/manifests\nfileCheckFrequency: 1s\n\
         containerRuntimeEndpoint: unix://{s}\n\
         failSwapOn: false\nfailCgroupV1: false\ncgroupsPerQOS: false\nenforceNodeAllocatable: []\n\
         cgroupDriver: cgroupfs\nmakeIPTablesUtilChains: false\n\
         address: 127.0.0.1\nport: {port}\nhealthzBindAddress: 127.0.0.1\nhealthzPort: {healthz}\nreadOnlyPort: 0\n\
         podLogsDir: {d}/pod-logs\nvolumePluginDir: {d}/volume-plugins\n\
         authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: false\n\
         authorization:\n  mode: AlwaysAllow\n",
        s = socket.display(),
    );
    std::fs::write(dir.join("kubelet.yaml"), yaml).unwrap();
}

/// The Kubernetes version of the binaries under test (`v1.37.2`).
pub fn kube_version() -> String {
    let out = Command::new(bin("kube-apiserver"))
        .arg("--version")
        .output()
        .expect("kube-apiserver --version");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .expect("a version")
        .to_owned()
}

/// The OCI archive of the image under test: `TROUSSEAU_IMAGE`, else what
/// scripts/build-image.sh writes.
pub fn image_archive() -> PathBuf {
    let p = std::env::var("TROUSSEAU_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/trousseau-image.tar"));
    assert!(p.is_file(), "{} is missing: run scripts/build-image.sh", p.display());
    p
}

/// The pause image's OCI archive, built by scripts/e2e.sh.
pub fn pause_archive() -> PathBuf {
    let p = std::env::var("E2E_PAUSE_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/pause-image.tar"));
    assert!(p.is_file(), "{} is missing: run scripts/e2e.sh", p.display());
    p
}

/// The image a shipped manifest names (its first `image:` line).
pub fn manifest_image(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("an image: line")
        .trim()
        .to_owned()
}

/// Checks that use the host's fixed resources (the plugin's HTTP port 8787
/// in the shipped config, kubelet's fixed paths) run one at a time.
pub fn host_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The version of the etcd under test (`3.6.16`), the tag of its image.
pub fn etcd_version() -> String {
    let out = Command::new(bin("etcd"))
        .arg("--version")
        .output()
        .expect("etcd --version");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .expect("etcd Version:")
        .trim()
        .to_owned()
}

/// The OCI archive of a control-plane image scripts/e2e.sh built
/// (`kube-apiserver`, `etcd`).
pub fn control_plane_archive(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/e2e/{name}-image.tar"));
    assert!(p.is_file(), "{} is missing: run scripts/e2e.sh", p.display());
    p
}
