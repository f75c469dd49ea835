//! The source layout keeps its promises (ARCHITECTURE.md): dependencies
//! between the top-level modules point one way, the core knows nothing of
//! gRPC, only the Vault client speaks HTTP, and no file outside the tests
//! grows past 400 lines. Read from the source tree, not the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Past this a file holds more than one job (the layout issue's bound).
const MAX_FILE_LINES: usize = 400;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, relative to it.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&src_dir(), &src_dir(), &mut out);
    assert!(out.len() > 20, "src/ looks empty: {out:?}");
    out
}

/// The top-level module a file belongs to: `vault/transport.rs` → `vault`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The file's code before its test module, comments dropped.
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules each module names as `crate::<m>`, with the files
/// that do it.
fn module_graph(files: &BTreeMap<PathBuf, String>) -> BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> {
    let modules: BTreeSet<String> = files.keys().map(|p| module_of(p)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> = BTreeMap::new();
    let name = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (rel, text) in files {
        let from = module_of(rel);
        let code = code_of(text);
        // `crate::a::...`, and each of `use crate::{a, b::c}`.
        let mut named: Vec<String> = code.split("crate::").skip(1).map(name).collect();
        for group in code.split("crate::{").skip(1) {
            named.extend(group.split('}').next().unwrap_or("").split(',').map(name));
        }
        for to in named {
            if to != from && modules.contains(&to) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    graph
}

/// A cycle in the graph, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(c) = visit(m, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn read_all() -> BTreeMap<PathBuf, String> {
    sources()
        .into_iter()
        .map(|rel| {
            let text = std::fs::read_to_string(src_dir().join(&rel)).unwrap();
            (rel, text)
        })
        .collect()
}

#[test]
fn module_dependencies_point_one_way() {
    let files = read_all();
    let graph = module_graph(&files);
    // The graph is not trivially empty: the core does call the client.
    assert!(
        graph.get("kms").is_some_and(|e| e.contains_key("vault")),
        "kms -> vault not seen; the scan is broken: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} -> {} ({:?})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!("module cycle: {}", edges.join("; "));
    }
    // Layers that must not look up: (module, what it must never name).
    let forbidden: &[(&str, &[&str])] = &[
        ("kms", &["grpc", "ops", "daemon", "config", "tools", "cli"]),
        (
            "vault",
            &["kms", "grpc", "ops", "session", "config", "daemon", "tools", "cli"],
        ),
        ("session", &["kms", "grpc", "ops", "config", "daemon", "tools", "cli"]),
        (
            "wire",
            &[
                "kms", "grpc", "ops", "vault", "session", "config", "daemon", "tools", "cli",
            ],
        ),
        ("ops", &["grpc", "daemon", "config", "tools", "cli"]),
        (
            "limits",
            &["kms", "grpc", "ops", "vault", "session", "config", "daemon", "wire"],
        ),
        (
            "metrics",
            &["kms", "grpc", "ops", "vault", "session", "config", "daemon"],
        ),
    ];
    for (from, never) in forbidden {
        for to in *never {
            if let Some(files) = graph.get(*from).and_then(|e| e.get(*to)) {
                panic!("{from} must not depend on {to}, but {files:?} name crate::{to}");
            }
        }
    }
}

#[test]
fn grpc_and_http_stay_in_their_layers() {
    for (rel, text) in read_all() {
        let code = code_of(&text);
        let m = module_of(&rel);
        let p = rel.to_string_lossy();
        if code.contains("grpcio::") {
            assert!(
                m == "grpc" || p == "tools/probe.rs" || p == "proto.rs",
                "{p} uses grpcio; only grpc/, tools/probe.rs and proto.rs may"
            );
        }
        if code.contains("ureq::") {
            assert!(m == "vault", "{p} uses ureq; only vault/ speaks HTTP to Vault");
        }
    }
}

#[test]
fn no_source_file_outside_the_tests_passes_the_bound() {
    let mut over = Vec::new();
    for (rel, text) in read_all() {
        if rel.file_name().is_some_and(|n| n == "tests.rs" || n == "testutil.rs") {
            continue;
        }
        let lines = text.split("#[cfg(test)]").next().unwrap_or("").lines().count();
        if lines > MAX_FILE_LINES {
            over.push(format!("{} ({lines} lines)", rel.display()));
        }
    }
    assert!(over.is_empty(), "over {MAX_FILE_LINES} lines: {over:?}");
}
