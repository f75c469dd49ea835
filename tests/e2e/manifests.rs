//! Check 7, manifests: every Kubernetes object shipped under `deploy/`, and
//! every object the Helm chart renders for each of its test value sets,
//! passes the real apiserver's server-side validation (`kubectl apply
//! --dry-run=server --validate=strict`: schema, defaults, admission and
//! unknown fields).

use std::path::{Path, PathBuf};

use crate::kube::deploy;
use crate::stack::{figure, Stack};

/// Kinds in `deploy/` that are not API objects, so no apiserver validates
/// them as such: EncryptionConfiguration is loaded by the apiserver itself
/// (every other check starts one from the shipped files); kubeadm's
/// configuration types are read only by kubeadm.
const NOT_API_OBJECTS: &[&str] = &[
    "EncryptionConfiguration",
    "ClusterConfiguration",
    "InitConfiguration",
    "JoinConfiguration",
    "KubeletConfiguration",
];

fn kinds(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("kind:"))
        .map(|k| k.trim().to_owned())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // The chart's templates are not YAML until helm renders them.
            if p.file_name().is_some_and(|n| n != "helm") {
                yaml_files(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// `kubectl apply --dry-run=server` of `what` (a path or `-` for stdin);
/// returns the objects the apiserver accepted.
fn dry_run(s: &Stack, what: &str, stdin: Option<&[u8]>) -> Vec<String> {
    let out = s.apiserver.kubectl_ok(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "name",
            "-f",
            what,
        ],
        stdin,
    );
    out.lines().map(str::to_owned).collect()
}

/// The objects the apiserver would store for `what`, as JSON, with what
/// differs between any two applies (server-set metadata, kubectl's
/// last-applied annotation) and the chart's `checksum/config` removed.
fn as_stored(s: &Stack, what: &str, stdin: Option<&[u8]>) -> Vec<serde_json::Value> {
    let out = s.apiserver.kubectl_ok(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "json",
            "-f",
            what,
        ],
        stdin,
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("kubectl -o json");
    let mut items = match v["kind"].as_str() {
        Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![v],
    };
    for it in &mut items {
        if let Some(m) = it["metadata"].as_object_mut() {
            for k in [
                "uid",
                "creationTimestamp",
                "resourceVersion",
                "managedFields",
                "generation",
            ] {
                m.remove(k);
            }
            if let Some(a) = m.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                a.remove("deprecated.daemonset.template.generation");
            }
        }
        if let Some(a) = it
            .pointer_mut("/spec/template/metadata/annotations")
            .and_then(|a| a.as_object_mut())
        {
            a.remove("checksum/config");
        }
        for meta in ["/metadata", "/spec/template/metadata"] {
            if let Some(m) = it.pointer_mut(meta).and_then(|m| m.as_object_mut()) {
                if m.get("annotations")
                    .and_then(|a| a.as_object())
                    .is_some_and(|a| a.is_empty())
                {
                    m.remove("annotations");
                }
            }
        }
        // config.json compared as JSON, not as text.
        if let Some(c) = it.pointer_mut("/data/config.json") {
            let parsed = serde_json::from_str(c.as_str().unwrap_or("")).expect("config.json is JSON");
            *c = parsed;
        }
    }
    items.sort_by_key(|it| format!("{}/{}", it["kind"], it["metadata"]["name"]));
    items
}

#[test]
fn check7_shipped_manifests_and_helm_chart_pass_server_side_validation() {
    let s = Stack::start("manifests", Default::default());
    // The controller-manager (not run here) makes every namespace's
    // `default` ServiceAccount; the ServiceAccount admission plugin wants it
    // for the static pod's dry run.
    s.apiserver
        .kubectl_ok(&["create", "serviceaccount", "default", "-n", "kube-system"], None);
    let mut files = Vec::new();
    yaml_files(&deploy(""), &mut files);
    let (mut checked, mut skipped) = (Vec::new(), Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let ks = kinds(&text);
        let rel = f.strip_prefix(deploy("")).unwrap().display().to_string();
        assert!(!ks.is_empty(), "{rel} has no kind");
        let api: Vec<&String> = ks.iter().filter(|k| !NOT_API_OBJECTS.contains(&k.as_str())).collect();
        if api.is_empty() {
            skipped.push(format!("{rel} ({})", ks.join(", ")));
            continue;
        }
        assert_eq!(api.len(), ks.len(), "{rel} mixes API objects and config types");
        let accepted = dry_run(&s, &f.display().to_string(), None);
        assert_eq!(accepted.len(), ks.len(), "{rel}: {accepted:?} for kinds {ks:?}");
        checked.push(format!("{rel} ({})", accepted.join(", ")));
    }
    assert!(
        checked.iter().any(|c| c.starts_with("kubeadm/trousseau.yaml")),
        "static pod not checked"
    );
    assert!(
        checked.iter().filter(|c| c.starts_with("daemonset/")).count() >= 2,
        "{checked:?}"
    );

    let chart = deploy("helm/trousseau");
    let mut sets: Vec<PathBuf> = std::fs::read_dir(chart.join("ci"))
        .expect("deploy/helm/trousseau/ci/ holds the chart's test value sets")
        .map(|e| e.unwrap().path())
        .collect();
    sets.sort();
    assert!(sets.len() >= 2, "{sets:?}");
    let helm = crate::kube::bin("helm");
    let mut rendered = Vec::new();
    for values in std::iter::once(None).chain(sets.iter().map(Some)) {
        let mut cmd = std::process::Command::new(&helm);
        cmd.args(["template", "trousseau"])
            .arg(&chart)
            .args(["--namespace", "kube-system"]);
        if let Some(v) = values {
            cmd.arg("-f").arg(v);
        }
        let out = crate::kube::run_bounded(cmd, None, std::time::Duration::from_secs(60));
        let name = values.map_or("defaults".to_owned(), |v| {
            v.file_name().unwrap().to_string_lossy().into_owned()
        });
        assert!(
            out.status.success(),
            "helm template ({name}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if values.is_none() {
            // The chart's README promises the plain manifest's objects.
            let plain = as_stored(&s, &deploy("daemonset/trousseau.yaml").display().to_string(), None);
            let chart = as_stored(&s, "-", Some(&out.stdout));
            assert_eq!(chart.len(), plain.len(), "helm defaults vs daemonset/trousseau.yaml");
            for (c, p) in chart.iter().zip(&plain) {
                assert_eq!(
                    c, p,
                    "helm defaults differ from daemonset/trousseau.yaml in {} {}",
                    p["kind"], p["metadata"]["name"]
                );
            }
        }
        let objects = kinds(&String::from_utf8_lossy(&out.stdout)).len();
        let accepted = dry_run(&s, "-", Some(&out.stdout));
        assert_eq!(accepted.len(), objects, "helm ({name}): {accepted:?}");
        assert!(
            accepted.iter().any(|o| o.starts_with("daemonset.apps/")),
            "helm ({name}): {accepted:?}"
        );
        rendered.push(format!("{name}: {}", accepted.join(", ")));
    }
    figure(&format!(
        "manifests: server-side valid: {}; helm template valid: {}; not API objects (not checkable this way): {}",
        checked.join("; "),
        rendered.join("; "),
        skipped.join("; ")
    ));
}
