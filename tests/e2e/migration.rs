//! Check 6, migration and rollback, exactly as deploy/README.md says: from
//! plain storage, the shipped `encryption-config-migrate-from-identity.yaml`
//! plus the documented rewrite encrypts every Secret; the shipped
//! `encryption-config-rollback.yaml` plus the same rewrite decrypts them
//! again; the documented etcd loop tells the two states apart.

use crate::at_rest::{stored_versions, Kms};
use crate::kube::{contains, deploy};
use crate::rotation::REWRITE_ALL;
use crate::stack::{figure, Stack, StackOpts};

/// A value in etcd that no encryption provider wrote: the apiserver's
/// plain protobuf encoding starts with these four bytes.
const PLAIN_PROTOBUF: &[u8] = b"k8s\x00";

/// The etcd loop of deploy/README.md ("Every Secret at once"), taken from
/// the README itself so the check runs what operators are told to run.
fn documented_etcd_loop() -> String {
    let doc = std::fs::read_to_string(deploy("README.md")).unwrap();
    let start = doc
        .find("for k in $(etcdctl get /registry/secrets")
        .expect("deploy/README.md lost its etcd loop");
    let end = start + doc[start..].find("```").expect("unterminated code block");
    doc[start..end].to_owned()
}

#[test]
fn check6_migrate_from_identity_then_roll_back() {
    let mut s = Stack::start(
        "migration",
        StackOpts {
            encryption_config: None,
            ..StackOpts::default()
        },
    );
    let values = crate::secret_values(8);
    for (i, v) in values.iter().enumerate() {
        s.apiserver
            .api
            .create_secret_ok("default", &format!("m-{i}"), &[("v", v)]);
    }
    let names: Vec<String> = (0..values.len()).map(|i| format!("m-{i}")).collect();
    let read_all = |s: &Stack| {
        for (n, v) in names.iter().zip(&values) {
            assert_eq!(&s.apiserver.api.secret_value("default", n, "v"), v, "{n}");
        }
    };
    let stored = |s: &Stack| s.etcd.get_prefix("/registry/secrets/");
    for (k, raw) in stored(&s) {
        assert!(raw.starts_with(PLAIN_PROTOBUF), "{k} not plain before the migration");
    }
    assert!(values
        .iter()
        .all(|v| stored(&s).iter().any(|(_, raw)| contains(raw, v))));
    let etcd_loop = documented_etcd_loop();
    let not_encrypted = |s: &Stack| s.apiserver.shell_ok(&etcd_loop).lines().count();
    assert_eq!(not_encrypted(&s), values.len(), "the README loop on plain storage");

    // Migrate: the shipped file, every apiserver restarted, then the rewrite.
    let took = s.restart_apiserver_with(Some("encryption-config-migrate-from-identity.yaml"));
    read_all(&s);
    assert!(
        stored(&s).iter().all(|(_, raw)| raw.starts_with(PLAIN_PROTOBUF)),
        "a restart alone rewrote nothing"
    );
    s.apiserver.shell_ok(REWRITE_ALL);
    assert_eq!(stored_versions(&s.etcd, Kms::V2).len(), values.len());
    assert_eq!(not_encrypted(&s), 0, "the README loop after the migration");
    crate::at_rest::assert_nothing_in_the_clear(&s.etcd, &values);
    read_all(&s);

    // Roll back: identity first, trousseau still able to read.
    s.restart_apiserver_with(Some("encryption-config-rollback.yaml"));
    read_all(&s);
    s.apiserver
        .api
        .create_secret_ok("default", "written-during-rollback", &[("v", b"plain")]);
    assert!(s
        .etcd
        .secret_raw("default", "written-during-rollback")
        .starts_with(PLAIN_PROTOBUF));
    s.apiserver.shell_ok(REWRITE_ALL);
    let all = stored(&s);
    for (k, raw) in &all {
        assert!(
            raw.starts_with(PLAIN_PROTOBUF),
            "{k} still encrypted after the rollback rewrite"
        );
    }
    assert_eq!(not_encrypted(&s), all.len(), "the README loop after the rollback");

    // Step 4: only now the flag goes; everything still reads.
    s.restart_apiserver_with(None);
    read_all(&s);
    figure(&format!(
        "migration: {} Secrets plain -> encrypted -> plain as deploy/README.md says; an apiserver restart took {:.1} s",
        values.len(),
        took.as_secs_f64()
    ));
}
