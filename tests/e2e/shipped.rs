//! The shipped forms' surroundings: an OpenBao that looks like production
//! to the plugin (TLS with a CA of ours, AppRole login, the shipped
//! policy), the host directory `deploy/kubeadm/trousseau.yaml` mounts as
//! `/etc/trousseau`, and the manifests with the only substitutions allowed:
//! host paths, and the Vault address ([`SUBSTITUTIONS`]).

use std::path::{Path, PathBuf};

use crate::harness::{AppRole, Bao, FaultProxy, Pki};
use crate::kube::deploy;

/// Every change the checks make to a shipped file, and nothing else.
pub const SUBSTITUTIONS: &[&str] = &[
    "deploy/kubeadm/config.json: vault-addr -> https://127.0.0.1:<port> (a fault proxy in front of OpenBao's TLS listener)",
    "deploy/kubeadm/trousseau.yaml: hostPath /var/run/kmsplugin -> <test dir>/kmsplugin",
    "deploy/kubeadm/trousseau.yaml: hostPath /etc/trousseau -> <test dir>/etc-trousseau",
    "deploy/kubeadm/trousseau.yaml (upgrade check only): image tag -> <tag>-e2e-upgrade",
];

/// OpenBao with transit key `kube`, a TLS listener whose certificate our CA
/// signed for 127.0.0.1, and AppRole role `trousseau` with the shipped
/// policy; the plugin reaches it through a TCP fault proxy (TLS passes
/// through untouched), which stands for a Vault outage when it cuts.
pub struct Vault {
    pub proxy: FaultProxy,
    /// `https://127.0.0.1:<proxy port>`: what config.json gets.
    pub addr: String,
    pub approle: AppRole,
    pub pki: Pki,
    pub bao: Bao,
}

impl Vault {
    pub fn start(dir: &Path) -> Vault {
        let pki = Pki::new(dir, "vault.e2e.test");
        let (bao, tls) = Bao::dev_own_tls(dir, &pki);
        let policy = std::fs::read_to_string(deploy("vault/policy.hcl")).unwrap();
        let approle = AppRole::setup(&bao, dir, "trousseau", &policy, serde_json::json!({}));
        let proxy = FaultProxy::start(tls.https.trim_start_matches("https://"));
        let addr = proxy.addr.replace("http://", "https://");
        Vault {
            proxy,
            addr,
            approle,
            pki,
            bao,
        }
    }

    /// OpenBao's kubernetes auth at `auth/kubernetes`, checking tokens with
    /// the TokenReview API of the kube-apiserver at `host` (whose serving
    /// certificate `ca` signed), and role `trousseau` for service account
    /// kube-system/trousseau with the shipped policy, as the DaemonSet's
    /// header comment sets it up.
    pub fn kubernetes_auth(&self, host: &str, ca: &Path) {
        self.bao.enable_auth("kubernetes", "kubernetes");
        self.bao.write(
            "auth/kubernetes/config",
            serde_json::json!({"kubernetes_host": host, "disable_local_ca_jwt": true,
                               "kubernetes_ca_cert": std::fs::read_to_string(ca).unwrap()}),
        );
        self.bao.write(
            "auth/kubernetes/role/trousseau",
            serde_json::json!({"bound_service_account_names": "trousseau",
                               "bound_service_account_namespaces": "kube-system",
                               "token_policies": self.approle.policy, "token_ttl": "1h"}),
        );
    }

    /// What the static pod mounts as `/etc/trousseau`, laid out as
    /// deploy/kubeadm/trousseau.yaml says: config.json (shipped, with only
    /// vault-addr changed), role-id, secret-id and vault-ca.pem, all 0600.
    pub fn etc_trousseau(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let etc = dir.join("etc-trousseau");
        std::fs::create_dir_all(&etc).unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(deploy("kubeadm/config.json")).unwrap()).unwrap();
        for (key, file) in [
            ("vault-cacert", "vault-ca.pem"),
            ("approle-role-id-file", "role-id"),
            ("approle-secret-id-file", "secret-id"),
        ] {
            assert_eq!(config[key], format!("/etc/trousseau/{file}"), "config.json {key}");
        }
        config["vault-addr"] = serde_json::json!(self.addr);
        let files = [
            ("config.json", serde_json::to_vec_pretty(&config).unwrap()),
            ("role-id", std::fs::read(&self.approle.role_id_file).unwrap()),
            ("secret-id", std::fs::read(&self.approle.secret_id_file).unwrap()),
            ("vault-ca.pem", std::fs::read(&self.pki.ca).unwrap()),
        ];
        for (name, body) in files {
            let p = etc.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        etc
    }
}

/// deploy/kubeadm/trousseau.yaml with its two hostPaths moved into the
/// test's directory; panics unless each was found exactly once.
pub fn static_pod(socket_dir: &Path, etc: &Path) -> String {
    let text = std::fs::read_to_string(deploy("kubeadm/trousseau.yaml")).unwrap();
    host_paths(&text, &[("/var/run/kmsplugin", socket_dir), ("/etc/trousseau", etc)])
}

/// Replaces the hostPath `path:` lines naming each `from` with `to`.
pub fn host_paths(text: &str, subst: &[(&str, &Path)]) -> String {
    let mut found = vec![0; subst.len()];
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let trimmed = l.trim_start();
            for (i, (from, to)) in subst.iter().enumerate() {
                if trimmed == format!("path: {from}") {
                    found[i] += 1;
                    return format!("{}path: {}", &l[..l.len() - trimmed.len()], to.display());
                }
            }
            l.to_owned()
        })
        .collect();
    assert!(
        found.iter().all(|n| *n == 1),
        "hostPath substitutions {subst:?} found {found:?} times"
    );
    out.join("\n") + "\n"
}
