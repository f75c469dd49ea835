//! The static pod, run by a real kubelet in front of a kubeadm-shaped
//! control plane (issue 22): containerd with the image imported from the
//! air-gapped bundle, a kubelet running `deploy/kubeadm/trousseau.yaml` as
//! shipped (but for [`crate::shipped::SUBSTITUTIONS`]) beside the
//! kube-apiserver and etcd static pods kubeadm rendered from our fragment
//! ([`crate::kubeadm`]), and registered with that apiserver. Checks: Secrets encrypted at rest through the pod;
//! the plugin's container killed; the node rebooted; the image upgraded by
//! a new tag; and the probes through a Vault outage.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{ProxyMode, TempDir};
use crate::kube::v2_prefix;
use crate::kubeadm::{KubeadmPlane, APISERVER_START, HOST_PATHS, LOOPBACK_FIELDS};
use crate::node::{control_plane_archive, host_lock, image_archive, manifest_image, pause_archive, Node, NODE_NAME};
use crate::shipped::{static_pod, Vault, SUBSTITUTIONS};
use crate::stack::{figure, PROVIDER};

/// The mirror pod of our static pod on this node.
const MIRROR: &str = "trousseau-e2e-node";
/// Node registered and the mirror pod Ready. Measured here: about 11 s
/// after kubelet starts (e2e.md); the readiness probe's first period is
/// 10 s.
const POD_READY: Duration = Duration::from_secs(180);
/// A killed container back: kubelet restarts it at once the first time
/// (its back-off starts at 10 s), then the startup probe passes.
const RESTARTED: Duration = Duration::from_secs(120);
/// From a Vault outage to the pod unready: the plugin's probe result is
/// at most 10 s old, then 3 failed readiness probes 10 s apart.
const UNREADY: Duration = Duration::from_secs(180);
/// How long the outage is held once the pod is unready: past the
/// liveness probe's 6 failures × 10 s, so a liveness probe that failed
/// because of Vault would have restarted the container by then.
const OUTAGE_HELD: Duration = Duration::from_secs(75);
/// How often the checks poll.
const POLL: Duration = Duration::from_millis(500);

struct Setup {
    node: Node,
    plane: KubeadmPlane,
    vault: Vault,
    image: String,
    dir: TempDir,
}

/// Everything up, the mirror pod Ready; returns with the seconds from
/// kubelet's start to the apiserver's readiness.
fn setup(name: &str) -> Setup {
    let dir = TempDir::new(&format!("e2e-{name}"));
    let d = dir.path().to_owned();
    for s in SUBSTITUTIONS.iter().chain(LOOPBACK_FIELDS) {
        eprintln!("substitution: {s}");
    }
    let vault = Vault::start(&d);
    let plane = KubeadmPlane::render(&d);
    // What our fragment promises the apiserver: the flag and both mounts,
    // read-only, as kubeadm rendered them.
    let c = &plane.apiserver_manifest["spec"]["containers"][0];
    let cmd = c["command"].to_string();
    assert!(
        cmd.contains("--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml"),
        "{cmd}"
    );
    for (path, _) in HOST_PATHS {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == *path);
        assert_eq!(
            m.map(|m| &m["readOnly"]),
            Some(&Value::Bool(true)),
            "{path} mounted read-only"
        );
    }
    let etc = vault.etc_trousseau(&d);
    let manifest = static_pod(&plane.host_dir("/var/run/kmsplugin"), &etc);
    let image = manifest_image(&manifest);
    let images = [
        image_archive(),
        pause_archive(),
        control_plane_archive("kube-apiserver"),
        control_plane_archive("etcd"),
    ];
    let images: Vec<&std::path::Path> = images.iter().map(|p| p.as_path()).collect();
    // The air-gapped install as deploy/README.md gives it: verify the
    // bundle, import, check the digest containerd shows.
    let digest = verify_bundle(&image_archive());
    let node = Node::start(&d, &images, Some(&plane.kubelet_conf));
    let listed = node.ctr_ok(&["images", "ls", &format!("name=={image}")]);
    assert!(
        listed.contains(&digest),
        "containerd shows {listed}, not manifest {digest}"
    );
    // Our static pod and kubeadm's two, all at once, as on a node booting:
    // the apiserver waits for the plugin's socket.
    std::fs::write(node.manifests.join("trousseau.yaml"), manifest).unwrap();
    plane.install(&node.manifests);
    let s = Setup {
        node,
        plane,
        vault,
        image,
        dir,
    };
    let ready = s.plane.wait_ready(APISERVER_START);
    figure(&format!(
        "static pods (trousseau, kube-apiserver, etcd): apiserver ready {:.1} s after kubelet started",
        ready.as_secs_f64()
    ));
    let (_, t) = poll_pod(
        &s.plane,
        "node registered and the mirror pod Ready",
        POD_READY,
        ready_condition,
    );
    figure(&format!(
        "static pod: mirror pod {MIRROR} Ready {:.1} s later",
        t.as_secs_f64()
    ));
    s.plane.kubectl_ok(&["get", "node", NODE_NAME]);
    s
}

/// Polls the mirror pod until `want` holds; on timeout, says what the API
/// last showed.
fn poll_pod(plane: &KubeadmPlane, what: &str, bound: Duration, want: impl Fn(&Value) -> bool) -> ((), Duration) {
    let start = Instant::now();
    loop {
        let out = plane.kubectl(&["get", "pod", "-n", "kube-system", MIRROR, "-o", "json"]);
        let p: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if p.as_ref().is_some_and(&want) {
            return ((), start.elapsed());
        }
        assert!(
            start.elapsed() < bound,
            "{what}: not within {bound:?}; last seen: {} {}",
            p.map(|p| p["status"].to_string()).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(POLL);
    }
}

/// `sha256sum -c SHA256SUMS` in the bundle's directory, as deploy/README.md
/// says; returns the image's manifest digest from `image-digests.txt`.
fn verify_bundle(archive: &std::path::Path) -> String {
    let dir = archive.parent().expect("the bundle's directory");
    let out = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sha256sum -c SHA256SUMS in {}: {text}",
        dir.display()
    );
    assert!(text.contains("trousseau-image.tar: OK"), "{text}");
    std::fs::read_to_string(dir.join("image-digests.txt"))
        .expect("image-digests.txt in the bundle")
        .lines()
        .find_map(|l| l.strip_prefix("manifest "))
        .expect("a manifest line")
        .trim()
        .to_owned()
}

fn pod(plane: &KubeadmPlane) -> Option<Value> {
    let out = plane.kubectl(&["get", "pod", "-n", "kube-system", MIRROR, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn ready_condition(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn restarts(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

/// Writes `n` Secrets named `prefix-i`; returns their values.
fn write_secrets(plane: &KubeadmPlane, prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let v = crate::harness::dek();
            let out = plane.create_secret(&name, &v);
            assert!(
                out.status.success(),
                "create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (name, v)
        })
        .collect()
}

fn all_read(plane: &KubeadmPlane, secrets: &[(String, Vec<u8>)]) {
    for (name, v) in secrets {
        assert_eq!(&plane.secret_value(name), v, "Secret {name} read back");
    }
}

/// Polls `/healthz/kms-providers` until it is ok and `done` holds; returns
/// the seconds it was seen failing.
fn unhealthy_until(plane: &KubeadmPlane, bound: Duration, mut done: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut failing = Duration::ZERO;
    loop {
        let t = Instant::now();
        let (ok, _) = plane.get_raw("/healthz/kms-providers");
        if !ok {
            failing += t.elapsed().max(POLL);
        } else if done() {
            return failing.as_secs_f64();
        }
        assert!(start.elapsed() < bound, "kms-providers not back within {bound:?}");
        std::thread::sleep(POLL);
    }
}

#[test]
fn static_pod_kubeadm_node_kill_reboot_upgrade() {
    let _host = host_lock();
    let mut s = setup("static-pod");
    let secrets = write_secrets(&s.plane, "at-rest", 5);
    for (name, _) in &secrets {
        let raw = s.plane.secret_in_etcd(name);
        assert!(
            raw.starts_with(v2_prefix(PROVIDER).as_bytes()),
            "{name} in etcd starts {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        );
    }
    all_read(&s.plane, &secrets);

    // Plugin killed: kubelet restarts it; the apiserver recovers by itself.
    let before = restarts(&pod(&s.plane).expect("mirror pod"));
    let old_pid = s.node.kill_container("trousseau");
    let started = Instant::now();
    let unhealthy = unhealthy_until(&s.plane, RESTARTED, || {
        pod(&s.plane).is_some_and(|p| restarts(&p) > before && ready_condition(&p))
    });
    let (_, new_pid) = s.node.running_container("trousseau").expect("trousseau running again");
    assert_ne!(new_pid, old_pid);
    all_read(&s.plane, &secrets);
    let after_kill = write_secrets(&s.plane, "after-kill", 2);
    figure(&format!(
        "static pod, plugin killed: restarted by kubelet and Ready in {:.1} s; /healthz/kms-providers unhealthy {unhealthy:.1} s; no apiserver restart",
        started.elapsed().as_secs_f64()
    ));

    // Node reboot: kubelet, every container (etcd and kube-apiserver
    // too) and containerd down hard, then up again; kubelet brings all
    // three static pods up, the apiserver waiting for the plugin.
    s.node.power_off();
    assert!(
        s.plane.kubectl(&["get", "--raw", "/readyz"]).status.code() != Some(0),
        "the apiserver still answers with the node down"
    );
    s.node.power_on();
    let to_ready = s.plane.wait_ready(APISERVER_START);
    all_read(&s.plane, &secrets);
    all_read(&s.plane, &after_kill);
    figure(&format!(
        "static pod, node reboot: apiserver ready {:.1} s after containerd and kubelet started again; every Secret reads",
        to_ready.as_secs_f64()
    ));

    // Upgrade: a new tag in the manifest; kubelet replaces the pod while
    // Secrets keep being written.
    poll_pod(&s.plane, "mirror pod Ready after reboot", POD_READY, ready_condition);
    let new_image = format!("{}-e2e-upgrade", s.image);
    s.node.tag_image(&s.image, &new_image);
    let manifest_path = s.node.manifests.join("trousseau.yaml");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    let upgraded = text.replace(&format!("image: {}", s.image), &format!("image: {new_image}"));
    assert_ne!(text, upgraded);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (gap, written, failed) = std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let (mut longest, mut last, mut written, mut failed) = (Duration::ZERO, Instant::now(), 0, vec![]);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = s
                    .plane
                    .create_secret(&format!("upgrade-{i}"), b"written during the upgrade");
                if out.status.success() {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                    written += 1;
                } else {
                    failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            (longest, written, failed)
        });
        std::thread::sleep(Duration::from_secs(2));
        let tmp = manifest_path.with_extension("tmp");
        std::fs::write(&tmp, &upgraded).unwrap();
        // Outside the manifest directory first, then renamed in: kubelet
        // never sees half a file.
        std::fs::rename(&tmp, s.dir.path().join("trousseau.yaml.new")).unwrap();
        std::fs::rename(s.dir.path().join("trousseau.yaml.new"), &manifest_path).unwrap();
        poll_pod(&s.plane, "the pod running the new tag, Ready", POD_READY, |p| {
            ready_condition(p) && p["spec"]["containers"][0]["image"] == new_image.as_str()
        });
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert!(failed.is_empty(), "Secret writes failed during the upgrade: {failed:?}");
    all_read(&s.plane, &secrets);
    figure(&format!(
        "static pod, upgrade to a new tag: {written} Secret writes, 0 failed, longest gap between successful writes {:.1} s",
        gap.as_secs_f64()
    ));
}

#[test]
fn static_pod_vault_outage_unready_never_restarted() {
    let _host = host_lock();
    let s = setup("static-pod-probes");
    let secrets = write_secrets(&s.plane, "before-outage", 2);
    let p = pod(&s.plane).expect("mirror pod");
    let (before, (_, pid)) = (restarts(&p), s.node.running_container("trousseau").expect("running"));

    s.vault.proxy.set_mode(ProxyMode::Cut);
    let (_, to_unready) = poll_pod(&s.plane, "the pod unready during the Vault outage", UNREADY, |p| {
        !ready_condition(p)
    });
    std::thread::sleep(OUTAGE_HELD);
    let p = pod(&s.plane).expect("mirror pod");
    assert!(!ready_condition(&p), "Ready again while Vault is still out");
    assert_eq!(restarts(&p), before, "restarted during a Vault outage");
    assert_eq!(
        s.node.running_container("trousseau").map(|(_, p)| p),
        Some(pid),
        "same process"
    );
    // Reads keep working from the apiserver's cached DEK seeds.
    all_read(&s.plane, &secrets);

    s.vault.proxy.set_mode(ProxyMode::Forward);
    let (_, to_ready) = poll_pod(&s.plane, "the pod Ready after the outage", UNREADY, ready_condition);
    assert_eq!(restarts(&pod(&s.plane).expect("mirror pod")), before);
    write_secrets(&s.plane, "after-outage", 2);
    figure(&format!(
        "static pod probes, Vault outage: unready after {:.1} s, held {} s more with 0 restarts, Ready {:.1} s after Vault came back",
        to_unready.as_secs_f64(),
        OUTAGE_HELD.as_secs(),
        to_ready.as_secs_f64()
    ));
}
