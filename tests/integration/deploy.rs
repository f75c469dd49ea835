//! deploy/: every manifest parses, the files name the same socket, probe
//! port and mounts, `deploy/vault/setup.sh` sets up a real OpenBao (twice,
//! idempotently) with a policy that allows encrypt/decrypt and nothing
//! else, and the shipped configurations and container arguments, with their
//! paths moved into a temp dir, start the real plugin (AppRole, kubernetes
//! through a TokenReview stand-in, and a real `bao agent` sidecar). Also:
//! docs/configuration.md's option table says what `trousseau serve --help` says.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The socket every file in deploy/ must name.
const SOCKET: &str = "/var/run/kmsplugin/kms.sock";
const SOCKET_DIR: &str = "/var/run/kmsplugin";
const SA_UID: &str = "3a1f7e52-2c4d-4b8e-9f60-7d5e1c2b9a04";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn deploy(rel: &str) -> PathBuf {
    deploy_dir().join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Files under `dir` (recursively) whose name ends with one of `exts`,
/// leaving out the Helm chart: its templates are YAML only once helm has
/// rendered them (the end-to-end suite, tests/e2e/manifests.rs, renders
/// and validates them with the real helm and kube-apiserver).
fn files_with(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p == deploy_dir().join("helm") {
                    continue;
                }
                todo.push(p);
            } else if exts.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

const PY_YAML: &str = "import json, sys, yaml\n\
with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
print(json.dumps(docs, default=str))";

/// Every document of a YAML file as JSON, parsed by PyYAML.
fn yaml_docs(p: &Path) -> Vec<Value> {
    let out = Command::new(test_python())
        .args(["-c", PY_YAML])
        .arg(p)
        .output()
        .expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'yaml'"),
        "PyYAML is missing: run scripts/test.sh or `python3 -m pip install pyyaml`"
    );
    assert!(out.status.success(), "{} does not parse as YAML:\n{err}", p.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one document of `kind` in a YAML file.
fn doc(p: &Path, kind: &str) -> Value {
    let docs: Vec<Value> = yaml_docs(p).into_iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(docs.len(), 1, "{}: want one {kind}", p.display());
    docs.into_iter().next().unwrap()
}

/// The long flags `trousseau serve --help` documents, without dashes.
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(plugin_bin()).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags = BTreeSet::new();
    for (i, _) in help.match_indices("--") {
        let name: String = help[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !name.is_empty() {
            flags.insert(name);
        }
    }
    flags
}

/// Every key of a plugin config is a flag of `trousseau serve --help`.
fn check_keys(what: &str, cfg: &Value, flags: &BTreeSet<String>) {
    for k in cfg
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object"))
        .keys()
    {
        assert!(
            flags.contains(k),
            "{what}: key \"{k}\" is not a flag of `trousseau serve --help`"
        );
    }
}

fn port_of(addr: &str) -> u64 {
    let (host, port) = addr.rsplit_once(':').unwrap();
    assert_eq!(host, "127.0.0.1", "http-addr {addr} must stay on loopback");
    port.parse().unwrap()
}

fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    let all: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten()
        .collect();
    all.into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The value after `flag` in an argument list.
fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).map(|i| args[i + 1].clone())
}

/// The volume mount of `c` that holds `path`, and the volume behind it.
fn mount_for<'a>(spec: &'a Value, c: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let m = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            let mp = m["mountPath"].as_str().unwrap();
            path == mp || path.starts_with(&format!("{mp}/"))
        })
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("container {}: nothing mounted at {path}", c["name"]));
    let v = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap_or_else(|| panic!("no volume {}", m["name"]));
    (m, v)
}

/// The probes of a plugin container: startup and liveness on /livez,
/// readiness on /readyz, all on 127.0.0.1:`port`.
fn check_probes(what: &str, c: &Value, port: u64) {
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"], path, "{what}: {probe}");
        assert_eq!(g["host"], "127.0.0.1", "{what}: {probe}");
        assert_eq!(g["port"].as_u64(), Some(port), "{what}: {probe} port");
    }
}

fn check_hardening(what: &str, c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(sc["privileged"], false, "{what}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
    assert!(sc["capabilities"]["add"].is_null(), "{what}");
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{what}");
    assert!(c["resources"]["requests"]["memory"].is_string(), "{what}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
}

/// The socket directory is a hostPath volume of that same directory,
/// mounted at the same path.
fn check_socket_mount(what: &str, spec: &Value, c: &Value, socket: &str) {
    assert_eq!(socket, SOCKET, "{what}");
    let (m, v) = mount_for(spec, c, socket);
    assert_eq!(m["mountPath"], SOCKET_DIR, "{what}");
    assert_ne!(m["readOnly"], true, "{what}: the plugin creates the socket");
    assert_eq!(v["hostPath"]["path"], SOCKET_DIR, "{what}");
}

#[test]
fn deploy_yaml_and_json_parse_and_configs_use_known_flags() {
    let flags = serve_flags();
    let yamls = files_with(&deploy_dir(), &[".yaml", ".yml"]);
    assert!(yamls.len() >= 8, "{yamls:?}");
    for p in &yamls {
        let docs = yaml_docs(p);
        assert!(!docs.is_empty(), "{}: no document", p.display());
        for d in &docs {
            assert!(
                d["apiVersion"].is_string() && d["kind"].is_string(),
                "{}: a document without apiVersion/kind",
                p.display()
            );
        }
        eprintln!("{}: {} document(s) parse", p.display(), docs.len());
    }

    // The static pod's config file: JSON (python's json.tool agrees) and
    // only keys that are flags of `trousseau serve`.
    let cfg_path = deploy("kubeadm/config.json");
    let st = Command::new(test_python())
        .args(["-m", "json.tool"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "python3 -m json.tool rejects {}", cfg_path.display());
    let cfg: Value = serde_json::from_str(&read(&cfg_path)).unwrap();
    check_keys("deploy/kubeadm/config.json", &cfg, &flags);
    assert_eq!(cfg["auth-method"], "approle");

    // The DaemonSet's config.json (in its ConfigMap), and the flags every
    // manifest passes to the plugin.
    let ds_cfg: Value = serde_json::from_str(
        doc(&deploy("daemonset/trousseau.yaml"), "ConfigMap")["data"]["config.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    check_keys("deploy/daemonset/trousseau.yaml config.json", &ds_cfg, &flags);
    for (file, kind) in [
        ("kubeadm/trousseau.yaml", "Pod"),
        ("daemonset/trousseau.yaml", "DaemonSet"),
        ("daemonset/trousseau-vault-agent.yaml", "DaemonSet"),
    ] {
        let d = doc(&deploy(file), kind);
        let spec = if kind == "Pod" {
            &d["spec"]
        } else {
            &d["spec"]["template"]["spec"]
        };
        let args = strings(&container(spec, "trousseau")["args"]);
        assert_eq!(args[0], "serve", "{file}");
        for a in args.iter().filter(|a| a.starts_with("--")) {
            let k = &a[2..];
            assert!(flags.contains(k), "{file}: {a} is not a flag of `trousseau serve`");
        }
    }
}

#[test]
fn deploy_files_agree_on_socket_probe_port_and_mounts() {
    // The static pod and its config file.
    let pod = doc(&deploy("kubeadm/trousseau.yaml"), "Pod");
    let cfg: Value = serde_json::from_str(&read(&deploy("kubeadm/config.json"))).unwrap();
    let spec = &pod["spec"];
    assert_eq!(pod["metadata"]["namespace"], "kube-system");
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    let c = container(spec, "trousseau");
    assert_eq!(c["image"], "ghcr.io/trousseau-io/trousseau:0.1.0");
    let args = strings(&c["args"]);
    assert_eq!(args, ["serve", "--config", "/etc/trousseau/config.json"]);
    check_hardening("static pod", c);
    check_socket_mount("static pod", spec, c, cfg["socket"].as_str().unwrap());
    check_probes("static pod", c, port_of(cfg["http-addr"].as_str().unwrap()));
    // The config file and every file it names come read-only from the
    // host's /etc/trousseau.
    for path in [
        "/etc/trousseau/config.json",
        cfg["vault-cacert"].as_str().unwrap(),
        cfg["approle-role-id-file"].as_str().unwrap(),
        cfg["approle-secret-id-file"].as_str().unwrap(),
    ] {
        let (m, v) = mount_for(spec, c, path);
        assert_eq!(m["readOnly"], true, "{path}");
        assert_eq!(v["hostPath"]["path"], "/etc/trousseau", "{path}");
    }

    // Every EncryptionConfiguration names the same socket.
    let mut endpoints = 0;
    for p in files_with(&deploy_dir(), &[".yaml"]) {
        for d in yaml_docs(&p).iter().filter(|d| d["kind"] == "EncryptionConfiguration") {
            assert_eq!(d["apiVersion"], "apiserver.config.k8s.io/v1");
            for r in d["resources"].as_array().unwrap() {
                for prov in r["providers"].as_array().unwrap() {
                    if let Some(k) = prov.get("kms") {
                        assert_eq!(k["endpoint"], format!("unix://{SOCKET}"), "{}", p.display());
                        assert_eq!(k["name"], "trousseau", "{}", p.display());
                        if k["apiVersion"] == "v2" {
                            assert!(k["cachesize"].is_null(), "{}: cachesize is v1 only", p.display());
                        }
                        endpoints += 1;
                    }
                }
            }
        }
    }
    assert!(endpoints >= 4, "{endpoints} kms endpoints");
    // Migration: kms writes, identity reads what came before; rollback the
    // other way round.
    let providers = |f: &str| -> Vec<String> {
        doc(&deploy(f), "EncryptionConfiguration")["resources"][0]["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_object().unwrap().keys().next().unwrap().clone())
            .collect()
    };
    assert_eq!(
        providers("encryption-config-migrate-from-identity.yaml"),
        ["kms", "identity"]
    );
    assert_eq!(providers("encryption-config-v2.yaml"), ["kms", "identity"]);
    assert_eq!(providers("encryption-config-v1.yaml"), ["kms", "identity"]);
    assert_eq!(providers("encryption-config-rollback.yaml"), ["identity", "kms"]);

    // The kubeadm patch (v1beta4: extraArgs is a list of name/value).
    let cc = doc(&deploy("kubeadm/kubeadm-config.yaml"), "ClusterConfiguration");
    assert_eq!(cc["apiVersion"], "kubeadm.k8s.io/v1beta4");
    let extra = cc["apiServer"]["extraArgs"]
        .as_array()
        .expect("v1beta4 extraArgs is a list");
    for a in extra {
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "value"], "{a}");
    }
    let enc = extra
        .iter()
        .find(|a| a["name"] == "encryption-provider-config")
        .expect("encryption-provider-config")["value"]
        .as_str()
        .unwrap();
    assert_eq!(enc, "/etc/kubernetes/enc/encryption-config.yaml");
    let vols = cc["apiServer"]["extraVolumes"].as_array().unwrap();
    let mounted = |dir: &str| {
        vols.iter().any(|v| {
            v["hostPath"] == dir
                && v["mountPath"] == dir
                && v["name"].is_string()
                && v["pathType"].as_str().is_some_and(|t| t.starts_with("Directory"))
        })
    };
    assert!(mounted("/etc/kubernetes/enc"), "encryption config dir not mounted");
    assert!(mounted(SOCKET_DIR), "socket dir not mounted into kube-apiserver");
    let static_pod_host = &mount_for(spec, c, SOCKET).1["hostPath"]["path"];
    assert_eq!(static_pod_host, SOCKET_DIR);

    // The DaemonSets.
    for file in ["daemonset/trousseau.yaml", "daemonset/trousseau-vault-agent.yaml"] {
        let path = deploy(file);
        let ds = doc(&path, "DaemonSet");
        let sa = doc(&path, "ServiceAccount");
        let cm = doc(&path, "ConfigMap");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(ds["metadata"]["namespace"], "kube-system", "{file}");
        assert_eq!(spec["serviceAccountName"], sa["metadata"]["name"], "{file}");
        assert_eq!(
            spec["nodeSelector"]["node-role.kubernetes.io/control-plane"], "",
            "{file}"
        );
        assert!(
            spec["tolerations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["key"] == "node-role.kubernetes.io/control-plane" && t["operator"] == "Exists"),
            "{file}: no control-plane toleration"
        );
        assert_eq!(spec["hostNetwork"], true, "{file}: probes use the node's loopback");
        assert_eq!(spec["priorityClassName"], "system-node-critical", "{file}");
        let c = container(spec, "trousseau");
        check_hardening(file, c);
        let args = strings(&c["args"]);
        let cfg_file = arg_value(&args, "--config").unwrap();
        let (cm_name, cfg): (String, Value) = if file.ends_with("agent.yaml") {
            // The agent renders config.json and the token next to it.
            let agent = container(spec, "vault-agent");
            check_hardening("vault-agent", agent);
            assert_eq!(agent["restartPolicy"], "Always", "native sidecar");
            let hcl = cm["data"]["agent.hcl"].as_str().unwrap();
            let token = arg_value(&args, "--vault-token-file").unwrap();
            assert!(
                hcl.contains(&format!("path = \"{token}\"")),
                "sink != --vault-token-file"
            );
            assert!(
                hcl.contains(&format!("destination = \"{cfg_file}\"")),
                "template != --config"
            );
            assert!(hcl.contains("method \"kubernetes\"") && hcl.contains("role       = \"trousseau\""));
            let probe = strings(&agent["startupProbe"]["exec"]["command"]).join(" ");
            assert!(probe.contains(&token) && probe.contains(&cfg_file), "{probe}");
            let (m, v) = mount_for(spec, c, &token);
            assert!(v["emptyDir"].is_object() && m["readOnly"] == true);
            let (m2, v2) = mount_for(spec, agent, &token);
            assert_eq!((&m2["mountPath"], &v2["name"]), (&m["mountPath"], &v["name"]));
            let agent_cfg = strings(&agent["command"]).last().unwrap().replace("-config=", "");
            assert!(mount_for(spec, agent, &agent_cfg).1["configMap"]["name"] == cm["metadata"]["name"]);
            // No config.json to read: socket and http-addr are flags.
            let cfg = json!({
                "socket": arg_value(&args, "--socket").unwrap(),
                "http-addr": arg_value(&args, "--http-addr").unwrap(),
            });
            (cm["metadata"]["name"].as_str().unwrap().to_owned(), cfg)
        } else {
            assert_eq!(arg_value(&args, "--auth-method").as_deref(), Some("kubernetes"));
            assert_eq!(arg_value(&args, "--auth-role").as_deref(), Some("trousseau"));
            let cfg: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
            // Every file the config names is a key of the ConfigMap mounted there.
            for p in [cfg_file.as_str(), cfg["vault-cacert"].as_str().unwrap()] {
                let (_, v) = mount_for(spec, c, p);
                assert_eq!(v["configMap"]["name"], cm["metadata"]["name"], "{p}");
                let key = Path::new(p).file_name().unwrap().to_str().unwrap();
                assert!(cm["data"][key].is_string(), "{file}: ConfigMap has no {key}");
            }
            (cm["metadata"]["name"].as_str().unwrap().to_owned(), cfg)
        };
        assert!(!cm_name.is_empty());
        check_socket_mount(file, spec, c, cfg["socket"].as_str().unwrap());
        check_probes(file, c, port_of(cfg["http-addr"].as_str().unwrap()));
    }

    // The systemd unit serves on the same socket directory.
    let unit = read(&deploy("systemd/trousseau.service"));
    assert!(unit.contains("\nExecStart=/usr/local/bin/trousseau serve --config /etc/trousseau/config.json\n"));
    assert!(unit.contains("\nRuntimeDirectory=kmsplugin\n"), "socket dir");
    for want in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=always",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
}

/// Runs `bash -n` on every shell script in deploy/ and scripts/.
#[test]
fn shell_scripts_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scripts = files_with(&deploy_dir(), &[".sh"]);
    scripts.extend(files_with(&root.join("scripts"), &[".sh"]));
    assert!(scripts.len() >= 5, "{scripts:?}");
    for s in &scripts {
        let out = Command::new("bash").arg("-n").arg(s).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(deploy("vault/setup.sh")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--transit-mount",
        "--key ",
        "--secret-id-ttl",
        "--out",
        "--rotate-secret-id",
    ] {
        assert!(help.contains(opt), "setup.sh --help lacks {opt}");
    }
    let out = Command::new(deploy("vault/setup.sh")).arg("--nope").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// `systemd-analyze verify` on the unit, with ExecStart pointed at the
/// binary under test (verify wants it to exist). scripts/test.sh installs
/// systemd where it is missing.
#[test]
fn systemd_unit_verifies() {
    let v = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze is not installed: run scripts/test.sh or apt-get install systemd");
    assert!(v.status.success());
    let dir = TempDir::new("unit");
    let unit = dir.path().join("trousseau.service");
    std::fs::write(
        &unit,
        read(&deploy("systemd/trousseau.service")).replace("/usr/local/bin/trousseau", plugin_bin()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(!err.contains("trousseau.service:"), "warnings: {err}");
}

// ---- running the shipped files ----

/// Where the manifests' absolute paths go in a test: each under `dir`.
struct Localize {
    pairs: Vec<(String, String)>,
}

impl Localize {
    fn new(dir: &Path, vault_addr: &str, http_addr: &str) -> Localize {
        let mut pairs = vec![
            ("https://vault.example.com:8200".to_owned(), vault_addr.to_owned()),
            ("127.0.0.1:8787".to_owned(), http_addr.to_owned()),
        ];
        for (from, to) in [
            ("/etc/trousseau", "etc-trousseau"),
            ("/etc/vault-agent", "etc-vault-agent"),
            (SOCKET_DIR, "kmsplugin"),
            ("/var/run/trousseau", "run-trousseau"),
            ("/var/run/secrets/kubernetes.io/serviceaccount", "sa"),
        ] {
            let d = dir.join(to);
            std::fs::create_dir_all(&d).unwrap();
            pairs.push((from.to_owned(), d.display().to_string()));
        }
        Localize { pairs }
    }

    fn apply(&self, s: &str) -> String {
        self.pairs
            .iter()
            .fold(s.to_owned(), |s, (from, to)| s.replace(from, to))
    }

    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(self.apply(p))
    }
}

/// A process started from a manifest's command and args, stopped by pid.
struct Spawned {
    child: Option<Child>,
    log: PathBuf,
}

impl Spawned {
    fn start(dir: &Path, name: &str, program: &Path, args: &[String]) -> Spawned {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .env("HOME", dir)
            .env("PATH", "/usr/bin:/bin")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Spawned {
            child: Some(child),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the plugin's socket; fails if the process exits first.
    fn wait_for_socket(&mut self, socket: &Path) {
        wait_for("plugin socket", Duration::from_secs(30), || {
            if let Some(st) = self.exited() {
                panic!("exited early with {st}:\n{}", self.log_text());
            }
            socket.exists().then_some(())
        });
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A plugin config file from a shipped one, paths and addresses moved.
fn write_config(cfg: &Value, loc: &Localize, to: &Path) {
    let cfg: Value = serde_json::from_str(&loc.apply(&cfg.to_string())).unwrap();
    check_keys("config", &cfg, &serve_flags());
    std::fs::write(to, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// A container's command + args, localized; returns the program and its
/// arguments.
fn command_line(c: &Value, loc: &Localize) -> (PathBuf, Vec<String>) {
    let mut cmd: Vec<String> = strings(&c["command"])
        .into_iter()
        .chain(strings(&c["args"]))
        .map(|s| loc.apply(&s))
        .collect();
    let program = match cmd.remove(0).as_str() {
        "/usr/local/bin/trousseau" => PathBuf::from(plugin_bin()),
        "bao" | "vault" => bao_bin(),
        other => panic!("unexpected command {other}"),
    };
    (program, cmd)
}

/// /livez, /readyz and /metrics answer 200 on `http_addr`.
fn check_health_endpoints(http_addr: &str) {
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    for path in ["/livez", "/readyz", "/metrics"] {
        let url = format!("http://{http_addr}{path}");
        wait_for(&url, Duration::from_secs(20), || {
            a.get(&url)
                .call()
                .ok()
                .filter(|r| r.status().as_u16() == 200)
                .map(|_| ())
        });
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The policy text without comments and blank lines.
fn policy_body(hcl: &str) -> String {
    hcl.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

/// Runs deploy/vault/setup.sh with the CLI named `cli` (running the bao
/// binary) alone on PATH and the server's address, CA and root token in
/// that CLI's environment variables.
fn setup_sh(dir: &Path, bao: &Bao, ca: &Path, cli: &str, args: &[&str]) -> String {
    let bin = dir.join(format!("bin-{cli}"));
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join(cli);
    if !link.exists() {
        // A wrapper, not a symlink: bao_bin() may be a shim that dispatches
        // on the name it is called by.
        std::fs::write(&link, format!("#!/bin/sh\nexec '{}' \"$@\"\n", bao_bin().display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let prefix = if cli == "bao" { "BAO" } else { "VAULT" };
    let out = Command::new("bash")
        .arg(deploy("vault/setup.sh"))
        .args(args)
        .env_clear()
        .env("HOME", dir)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env(format!("{prefix}_ADDR"), &bao.addr)
        .env(format!("{prefix}_TOKEN"), &bao.token)
        .env(format!("{prefix}_CACERT"), ca)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "setup.sh {args:?} failed:\n{text}");
    assert!(!text.contains(&bao.token), "root token in setup.sh output");
    eprintln!("---- setup.sh {args:?} ({cli}) ----\n{text}");
    text
}

#[test]
fn setup_sh_then_the_static_pod_config_serves_with_approle_and_least_privilege() {
    let dir = TempDir::new("deploy-setup");
    let (bao, ca) = Bao::dev_tls(dir.path());
    // Start from nothing: setup.sh enables transit and creates the key.
    vault_ok(&bao.addr, &bao.token, "DELETE", "sys/mounts/transit", None);

    let http_addr = format!("127.0.0.1:{}", free_port());
    let loc = Localize::new(dir.path(), &bao.addr, &http_addr);
    let creds = loc.path("/etc/trousseau");
    let out_arg = creds.display().to_string();
    let first = setup_sh(dir.path(), &bao, &ca, "bao", &["--out", &out_arg]);
    for want in [
        "enabled transit at transit/",
        "created transit key transit/keys/kube",
        "wrote a new",
        "verified",
    ] {
        assert!(first.contains(want), "{want:?} missing");
    }
    let (role_id_f, secret_id_f) = (creds.join("role-id"), creds.join("secret-id"));
    assert_eq!((mode(&role_id_f), mode(&secret_id_f)), (0o600, 0o600));
    let role_id = read(&role_id_f);
    let secret_id = read(&secret_id_f);
    assert!(!first.contains(&secret_id), "secret_id printed");
    let role = vault_ok(&bao.addr, &bao.token, "GET", "auth/approle/role/trousseau", None)["data"].clone();
    assert_eq!(role["token_policies"], json!(["trousseau"]));
    assert_eq!(
        (role["token_ttl"].as_u64(), role["token_max_ttl"].as_u64()),
        (Some(3600), Some(86400))
    );
    assert_eq!(role["secret_id_ttl"].as_u64(), Some(0));
    let rid = vault_ok(
        &bao.addr,
        &bao.token,
        "GET",
        "auth/approle/role/trousseau/role-id",
        None,
    );
    assert_eq!(rid["data"]["role_id"], role_id.as_str());
    let key = vault_ok(&bao.addr, &bao.token, "GET", "transit/keys/kube", None)["data"].clone();
    assert_eq!(
        (key["type"].as_str(), key["latest_version"].as_u64()),
        (Some("aes256-gcm96"), Some(1))
    );
    // The policy in Vault is deploy/vault/policy.hcl.
    let pol = vault_ok(&bao.addr, &bao.token, "GET", "sys/policies/acl/trousseau", None);
    assert_eq!(
        policy_body(pol["data"]["policy"].as_str().unwrap()),
        policy_body(&read(&deploy("vault/policy.hcl")))
    );

    // Again, through a CLI named `vault` and VAULT_* variables: nothing changes.
    let second = setup_sh(dir.path(), &bao, &ca, "vault", &["--out", &out_arg]);
    assert!(second.contains("transit already enabled") && second.contains("left as it is"));
    assert!(
        second.contains("kept") && !second.contains("wrote a new"),
        "secret-id replaced"
    );
    assert_eq!(
        (read(&role_id_f), read(&secret_id_f)),
        (role_id.clone(), secret_id.clone())
    );
    let key = vault_ok(&bao.addr, &bao.token, "GET", "transit/keys/kube", None)["data"].clone();
    assert_eq!(key["latest_version"].as_u64(), Some(1), "key rotated or recreated");
    let ids = vault_ok(
        &bao.addr,
        &bao.token,
        "GET",
        "auth/approle/role/trousseau/secret-id?list=true",
        None,
    );
    assert_eq!(ids["data"]["keys"].as_array().unwrap().len(), 1, "{ids}");

    // The static pod as shipped: its args and its config.json, paths moved.
    let pod = doc(&deploy("kubeadm/trousseau.yaml"), "Pod");
    let cfg: Value = serde_json::from_str(&read(&deploy("kubeadm/config.json"))).unwrap();
    std::fs::copy(&ca, creds.join("vault-ca.pem")).unwrap();
    write_config(&cfg, &loc, &creds.join("config.json"));
    let (program, args) = command_line(container(&pod["spec"], "trousseau"), &loc);
    let socket = loc.path(SOCKET);
    let mut plugin = Spawned::start(dir.path(), "plugin", &program, &args);
    plugin.wait_for_socket(&socket);
    let c = KmsClient::connect(&socket, DEADLINE);
    assert_eq!(status(&c).healthz, "ok", "{}", plugin.log_text());
    round_trip_v2(&c);
    check_health_endpoints(&http_addr);
    let log = plugin.log_text();
    assert!(log.contains("approle"), "{log}");
    assert!(!log.contains(&secret_id) && !log.contains(&bao.token), "secret in log");

    // A token from those credentials may encrypt and decrypt, nothing else.
    let (s, login) = vault_call(
        &bao.addr,
        "",
        "POST",
        "auth/approle/login",
        Some(json!({"role_id": role_id, "secret_id": secret_id})),
    );
    assert_eq!(s, 200, "{login}");
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(login["auth"]["token_policies"], json!(["default", "trousseau"]));
    assert_eq!(login["auth"]["lease_duration"].as_u64(), Some(3600));
    let (s, _) = vault_call(
        &bao.addr,
        &token,
        "POST",
        "transit/encrypt/kube",
        Some(json!({"plaintext": "aGVsbG8="})),
    );
    assert_eq!(s, 200);
    for (method, path, body) in [
        ("POST", "transit/keys/x", json!({})),
        ("POST", "transit/encrypt/x", json!({"plaintext": "aGVsbG8="})),
        ("POST", "transit/keys/kube/config", json!({"deletion_allowed": true})),
        ("DELETE", "transit/keys/kube", json!({})),
        ("POST", "transit/keys/kube/rotate", json!({})),
        ("GET", "transit/keys/x", json!({})),
        (
            "POST",
            "sys/policies/acl/trousseau",
            json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"}),
        ),
        ("GET", "auth/approle/role/trousseau/role-id", json!({})),
    ] {
        let (s, v) = vault_call(&bao.addr, &token, method, path, Some(body));
        assert_eq!(s, 403, "{method} {path}: {v}");
    }
    // Read of the key's own metadata is granted (key ids carry its
    // versions' creation times); it holds no key material.
    let (s, v) = vault_call(&bao.addr, &token, "GET", "transit/keys/kube", None);
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["keys"]["1"].as_u64().is_some(), "{v}");
    let key = vault_ok(&bao.addr, &bao.token, "GET", "transit/keys/kube", None)["data"].clone();
    assert_eq!(key["latest_version"].as_u64(), Some(1));
    assert_eq!(key["deletion_allowed"], false);
    let (s, _) = vault_call(&bao.addr, &bao.token, "GET", "transit/keys/x", None);
    assert_ne!(s, 200, "key x was created");

    // Rotating the secret_id: a new file, the old secret_id destroyed, one left.
    let third = setup_sh(dir.path(), &bao, &ca, "bao", &["--out", &out_arg, "--rotate-secret-id"]);
    assert!(third.contains("destroyed the previous secret_id"));
    let new_secret = read(&secret_id_f);
    assert_ne!(new_secret, secret_id);
    assert_eq!(mode(&secret_id_f), 0o600);
    let (s, _) = vault_call(
        &bao.addr,
        "",
        "POST",
        "auth/approle/login",
        Some(json!({"role_id": role_id, "secret_id": secret_id})),
    );
    assert_eq!(s, 400, "the old secret_id still logs in");
    let ids = vault_ok(
        &bao.addr,
        &bao.token,
        "GET",
        "auth/approle/role/trousseau/secret-id?list=true",
        None,
    );
    assert_eq!(ids["data"]["keys"].as_array().unwrap().len(), 1, "{ids}");
    round_trip_v2(&c);
}

/// OpenBao's kubernetes auth, checking service-account tokens through our
/// TokenReview stand-in, with a role bound to kube-system/trousseau.
fn kubernetes_auth(bao: &Bao, ca: &Path, tr: &TokenReviewServer, policies: &[&str]) {
    bao.enable_auth("kubernetes", "kubernetes");
    bao.write(
        "auth/kubernetes/config",
        json!({"kubernetes_host": tr.addr, "disable_local_ca_jwt": true,
               "kubernetes_ca_cert": read(ca)}),
    );
    bao.write(
        "auth/kubernetes/role/trousseau",
        json!({"bound_service_account_names": ["trousseau"],
               "bound_service_account_namespaces": ["kube-system"],
               "token_policies": policies, "token_ttl": "1h", "token_max_ttl": "24h"}),
    );
}

#[test]
fn daemonset_with_kubernetes_auth_serves_from_its_configmap_and_args() {
    let dir = TempDir::new("deploy-ds");
    let (bao, ca) = Bao::dev_tls(dir.path());
    bao.put_policy("trousseau", &read(&deploy("vault/policy.hcl")));
    let signer = JwtSigner::new(dir.path());
    let tr = TokenReviewServer::start(&signer);
    kubernetes_auth(&bao, &ca, &tr, &["trousseau"]);

    let http_addr = format!("127.0.0.1:{}", free_port());
    let loc = Localize::new(dir.path(), &bao.addr, &http_addr);
    let path = deploy("daemonset/trousseau.yaml");
    let cm = doc(&path, "ConfigMap");
    let ds = doc(&path, "DaemonSet");
    let etc = loc.path("/etc/trousseau");
    let cfg: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    write_config(&cfg, &loc, &etc.join("config.json"));
    std::fs::copy(&ca, etc.join("vault-ca.pem")).unwrap();
    // The pod's service-account token, where kubelet mounts it.
    let jwt = signer.sign(&service_account_claims("kube-system", "trousseau", SA_UID));
    let sa_token = loc.path("/var/run/secrets/kubernetes.io/serviceaccount/token");
    std::fs::write(&sa_token, &jwt).unwrap();

    let (program, mut args) = command_line(container(&ds["spec"]["template"]["spec"], "trousseau"), &loc);
    // The DaemonSet relies on the plugin's default --jwt-file for
    // kubernetes; here that path is moved, so name it.
    let help = String::from_utf8_lossy(
        &Command::new(plugin_bin())
            .args(["serve", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(help.contains("/var/run/secrets/kubernetes.io/serviceaccount/token"));
    args.extend(["--jwt-file".to_owned(), sa_token.display().to_string()]);
    let socket = loc.path(SOCKET);
    let mut plugin = Spawned::start(dir.path(), "plugin", &program, &args);
    plugin.wait_for_socket(&socket);
    let c = KmsClient::connect(&socket, DEADLINE);
    assert_eq!(status(&c).healthz, "ok", "{}", plugin.log_text());
    round_trip_v2(&c);
    assert!(tr.authenticated() >= 1, "no TokenReview answered");
    check_health_endpoints(&http_addr);
    assert!(!plugin.log_text().contains(&jwt), "JWT in log");
}

#[test]
fn vault_agent_sidecar_renders_the_config_and_token_the_plugin_serves_with() {
    let dir = TempDir::new("deploy-agent");
    let (bao, ca) = Bao::dev_tls(dir.path());
    bao.put_policy("trousseau", &read(&deploy("vault/policy.hcl")));
    bao.put_policy(
        "trousseau-config",
        "path \"secret/data/trousseau/config\" { capabilities = [\"read\"] }\n",
    );
    let signer = JwtSigner::new(dir.path());
    let tr = TokenReviewServer::start(&signer);
    kubernetes_auth(&bao, &ca, &tr, &["trousseau", "trousseau-config"]);

    let http_addr = format!("127.0.0.1:{}", free_port());
    let loc = Localize::new(dir.path(), &bao.addr, &http_addr);
    // The KV secret, as the manifest's header shows (the dev server has
    // kv-v2 at secret/).
    let kv: Value = serde_json::from_str(&loc.apply(
        r#"{"vault-addr": "https://vault.example.com:8200",
            "vault-cacert": "/etc/vault-agent/vault-ca.pem", "transit-key": "kube"}"#,
    ))
    .unwrap();
    bao.write("secret/data/trousseau/config", json!({ "data": kv }));

    let path = deploy("daemonset/trousseau-vault-agent.yaml");
    let cm = doc(&path, "ConfigMap");
    let spec = doc(&path, "DaemonSet")["spec"]["template"]["spec"].clone();
    let agent_dir = loc.path("/etc/vault-agent");
    std::fs::write(
        agent_dir.join("agent.hcl"),
        loc.apply(cm["data"]["agent.hcl"].as_str().unwrap()),
    )
    .unwrap();
    std::fs::copy(&ca, agent_dir.join("vault-ca.pem")).unwrap();
    let jwt = signer.sign(&service_account_claims("kube-system", "trousseau", SA_UID));
    std::fs::write(loc.path("/var/run/secrets/kubernetes.io/serviceaccount/token"), &jwt).unwrap();

    // The agent, as the sidecar runs it; then what its startup probe waits for.
    let (bao_prog, agent_args) = command_line(container(&spec, "vault-agent"), &loc);
    let mut agent = Spawned::start(dir.path(), "agent", &bao_prog, &agent_args);
    let (token_f, cfg_f) = (
        loc.path("/var/run/trousseau/token"),
        loc.path("/var/run/trousseau/config.json"),
    );
    wait_for("agent's token and config.json", Duration::from_secs(30), || {
        if let Some(st) = agent.exited() {
            panic!("agent exited with {st}:\n{}", agent.log_text());
        }
        let ready = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
        (ready(&token_f) && ready(&cfg_f)).then_some(())
    });
    assert_eq!((mode(&token_f), mode(&cfg_f)), (0o600, 0o600));
    let rendered: Value = serde_json::from_str(&read(&cfg_f)).expect("config.json is JSON");
    assert_eq!(rendered, kv);

    let (program, args) = command_line(container(&spec, "trousseau"), &loc);
    let socket = loc.path(SOCKET);
    let mut plugin = Spawned::start(dir.path(), "plugin", &program, &args);
    plugin.wait_for_socket(&socket);
    let c = KmsClient::connect(&socket, DEADLINE);
    assert_eq!(status(&c).healthz, "ok", "{}", plugin.log_text());
    round_trip_v2(&c);
    assert!(tr.authenticated() >= 1, "the agent did not log in with kubernetes auth");
    check_health_endpoints(&http_addr);
    let token = read(&token_f);
    assert!(!plugin.log_text().contains(token.trim()), "token in plugin log");
    assert!(!agent.log_text().contains(token.trim()), "token in agent log");
}

/// The image puts the binary where every manifest calls it.
#[test]
fn image_entrypoint_matches_the_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = read(&root.join("Dockerfile"));
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/trousseau\"]"),
        "Dockerfile ENTRYPOINT moved"
    );
    for f in [
        "kubeadm/trousseau.yaml",
        "daemonset/trousseau.yaml",
        "daemonset/trousseau-vault-agent.yaml",
        "helm/trousseau/templates/daemonset.yaml",
    ] {
        assert!(read(&deploy(f)).contains("/usr/local/bin/trousseau"), "{f}");
    }
}

/// One option of the reference table in docs/configuration.md, or of
/// `trousseau serve --help`: its environment variable and default.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Documented {
    env: Option<String>,
    default: Option<String>,
}

/// Flag (or variable) name -> what is documented for it.
type Options = BTreeMap<String, Documented>;

/// `trousseau serve --help`'s options (the lines that start with `--`, with
/// their continuation lines): flag name -> `[env: X]` and `[default: X]`
/// (or `[default for <method>: X]`). Also the names of its ENVIRONMENT
/// section, the variables that are no flag's.
fn help_options(help: &str) -> (Options, BTreeSet<String>) {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut env_only = BTreeSet::new();
    let mut section = "";
    for line in help.lines() {
        let t = line.trim_start();
        if !line.starts_with(' ') && t.ends_with(':') {
            section = t;
            continue;
        }
        if let Some(rest) = t.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            entries.push((name, rest.to_owned()));
        } else if section == "ENVIRONMENT:" && line.starts_with("    ") && !line.starts_with("     ") {
            env_only.insert(t.split_whitespace().next().unwrap_or_default().to_owned());
        } else if t.is_empty() || !line.starts_with("     ") {
            // A blank or less indented line ends the option above.
            entries.push((String::new(), String::new()));
        } else if let Some((name, text)) = entries.last_mut() {
            if !name.is_empty() {
                text.push(' ');
                text.push_str(t);
            }
        }
    }
    let bracket = |text: &str, open: &str| -> Option<String> {
        let i = text.find(open)?;
        let rest = &text[i + open.len()..];
        let rest = rest.split_once(':').map_or(rest, |(_, v)| v);
        Some(rest.split(']').next()?.trim().to_owned())
    };
    let mut out = BTreeMap::new();
    for (name, text) in entries.into_iter().filter(|(n, _)| !n.is_empty()) {
        let d = Documented {
            env: bracket(&text, "[env:"),
            default: bracket(&text, "[default"),
        };
        assert!(out.insert(name.clone(), d).is_none(), "--{name} twice in serve --help");
    }
    (out, env_only)
}

/// The option table of a Markdown document: the table whose header row
/// starts with `| flag / file key |`. Returns flag name -> what its row
/// says, and the rows without a flag (environment only).
fn option_table(doc: &str) -> Result<(Options, Options), String> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("| flag / file key |"));
    lines
        .next()
        .ok_or("no table whose header starts with `| flag / file key |`")?;
    lines.next();
    let code = |cell: &str| -> Option<String> {
        let c = cell.trim();
        (!c.is_empty()).then(|| c.trim_matches('`').to_owned())
    };
    let (mut flags, mut env_only) = (BTreeMap::new(), BTreeMap::new());
    for row in lines.take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
        let [flag, env, default, _meaning, ..] = cells[..] else {
            return Err(format!("row without 4 cells: {row}"));
        };
        let d = Documented {
            env: code(env),
            default: code(default).map(|d| d.replace('`', "")),
        };
        match code(flag) {
            Some(f) => {
                let name = f
                    .strip_prefix("--")
                    .ok_or_else(|| format!("first cell is not a `--flag`: {row}"))?
                    .to_owned();
                if flags.insert(name.clone(), d).is_some() {
                    return Err(format!("--{name} has two rows"));
                }
            }
            None => {
                let name = d
                    .env
                    .clone()
                    .ok_or_else(|| format!("row with neither flag nor variable: {row}"))?;
                env_only.insert(name, d);
            }
        }
    }
    Ok((flags, env_only))
}

/// Compares the option table with `serve --help`: the same flags both
/// ways, each flag's environment variable, help's default contained in the
/// table's default column, and the same environment-only variables.
fn check_option_table(doc: &str, help: &str) -> Result<(), String> {
    let (table, table_env) = option_table(doc)?;
    let (opts, help_env) = help_options(help);
    let mut errors = Vec::new();
    for (name, h) in &opts {
        let Some(t) = table.get(name) else {
            errors.push(format!("--{name} is in `trousseau serve --help` but has no row"));
            continue;
        };
        if t.env != h.env {
            errors.push(format!(
                "--{name}: the table's environment is {:?}, --help's {:?}",
                t.env, h.env
            ));
        }
        if let Some(hd) = &h.default {
            if !t.default.as_deref().unwrap_or_default().contains(hd.as_str()) {
                errors.push(format!(
                    "--{name}: --help's default {hd:?} is not in the row ({:?})",
                    t.default
                ));
            }
        }
    }
    for name in table.keys().filter(|n| !opts.contains_key(*n)) {
        errors.push(format!(
            "--{name} has a row but is not a flag of `trousseau serve --help`"
        ));
    }
    let table_env: BTreeSet<String> = table_env.into_keys().collect();
    if table_env != help_env {
        errors.push(format!(
            "environment-only rows {table_env:?}, but --help's ENVIRONMENT section lists {help_env:?}"
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The reference table operators read (docs/configuration.md) says what
/// `trousseau serve --help` says; the README links to it and keeps no
/// second copy that could drift.
#[test]
fn configuration_reference_table_matches_serve_help() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = read(&root.join("docs/configuration.md"));
    let out = Command::new(plugin_bin()).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();

    let (opts, help_env) = help_options(&help);
    assert!(opts.len() >= 20, "parsed only {} options from serve --help", opts.len());
    assert!(help_env.contains("VAULT_TOKEN"), "{help_env:?}");
    assert_eq!(
        opts.keys().cloned().collect::<BTreeSet<_>>(),
        serve_flags(),
        "every --flag serve --help mentions is one of its options"
    );
    if let Err(e) = check_option_table(&doc, &help) {
        panic!("docs/configuration.md's option table disagrees with `trousseau serve --help`:\n{e}");
    }

    // The check can fail: a flag --help has without a row, a row for a flag
    // --help lacks, a wrong variable, a wrong default.
    let row = |flag: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `--{flag}` |")))
            .unwrap_or_else(|| panic!("no row for --{flag}"))
            .to_owned()
    };
    let http = row("http-addr");
    let mutants = [
        doc.replace(&format!("{http}\n"), ""),
        doc.replace(&http, &format!("{http}\n| `--vault-frobnicate` | | | not a flag |")),
        doc.replace(
            &row("vault-namespace"),
            "| `--vault-namespace` | `VAULT_NS` | | wrong variable |",
        ),
        doc.replace(&row("vault-timeout"), "| `--vault-timeout` | | `3s` | wrong default |"),
    ];
    for (i, m) in mutants.iter().enumerate() {
        assert_ne!(m, &doc, "mutant {i} changed nothing");
        assert!(check_option_table(m, &help).is_err(), "mutant {i} passed the check");
    }

    let readme = read(&root.join("README.md"));
    assert!(
        readme.contains("(docs/configuration.md)"),
        "README.md no longer links to the reference"
    );
    assert!(
        !readme.contains("| flag / file key |"),
        "README.md has a copy of the option table; keep it only in docs/configuration.md"
    );
}
