//! Check 3, rotation: after `transit/keys/kube/rotate`, new writes carry
//! the new key version within the apiserver's Status polling interval, old
//! Secrets still read, and the documented rewrite moves every Secret to the
//! new version.

use std::time::Duration;

use crate::at_rest::{stored_versions, Kms};
use crate::stack::{figure, poll, Stack};

/// Nothing polls the apiserver's health endpoints during this wait, so it
/// learns the new key_id from its background Status call, every 60 s while
/// healthy (see stack.rs); the plugin's own probe notices the new version
/// within 10 s. Plus a margin for a loaded 2-core machine.
const NEW_KEY_REACHES_WRITES: Duration = Duration::from_secs(100);
/// How often a check writes a fresh Secret while waiting for the new key.
const WRITE_EVERY: Duration = Duration::from_secs(2);

/// The storage-migration step deploy/README.md documents (verbatim).
pub const REWRITE_ALL: &str = "kubectl get secrets -A -o json | kubectl replace -f -";
/// What deploy/README.md documents for KMS v1 after a rotation (verbatim):
/// an unchanged object is not written again, so the rewrite has to change
/// something.
pub const REWRITE_ALL_V1: &str =
    "kubectl annotate secrets -A --all --overwrite trousseau.io/rewritten-at=\"$(date -u +%Y%m%dT%H%M%SZ)\"";

pub fn rotation(kms: Kms) {
    let s = Stack::start(&format!("rotation-{kms:?}"), kms.opts());
    let api = &s.apiserver.api;
    let old = crate::secret_values(5);
    for (i, v) in old.iter().enumerate() {
        api.create_secret_ok("default", &format!("old-{i}"), &[("v", v)]);
    }
    assert!(stored_versions(&s.etcd, kms).iter().all(|(_, v)| *v == 1));

    s.bao.rotate("kube");
    let mut n = 0;
    let (_, took) = poll(
        "a new write under key version 2",
        NEW_KEY_REACHES_WRITES,
        WRITE_EVERY,
        || {
            n += 1;
            let name = format!("after-rotate-{n}");
            api.create_secret_ok("default", &name, &[("v", b"x")]);
            let ver = kms.stored_version(&s.etcd.secret_raw("default", &name));
            (ver == 2).then_some(())
        },
    );
    figure(&format!(
        "rotation ({kms:?}): first write under the new key version {:.1} s after the rotate ({n} writes)",
        took.as_secs_f64()
    ));

    for (i, v) in old.iter().enumerate() {
        assert_eq!(
            &api.secret_value("default", &format!("old-{i}"), "v"),
            v,
            "old-{i} after rotate"
        );
    }
    let before = stored_versions(&s.etcd, kms);
    assert!(
        before.iter().any(|(_, v)| *v == 1),
        "old Secrets should still be under v1"
    );

    s.apiserver.shell_ok(REWRITE_ALL);
    if kms == Kms::V1 {
        // The apiserver skips the write of an object that did not change
        // unless its stored form is stale; v1 values do not say which key
        // version wrapped their DEK, so after a rotation nothing is stale.
        let unchanged = stored_versions(&s.etcd, kms);
        assert_eq!(unchanged, before, "a v1 replace rewrote unchanged Secrets after all");
        s.apiserver.shell_ok(REWRITE_ALL_V1);
    }
    let after = stored_versions(&s.etcd, kms);
    assert_eq!(after.len(), before.len());
    for (k, v) in &after {
        assert_eq!(*v, 2, "{k} not moved to the new key version by the rewrite");
    }
    for (i, v) in old.iter().enumerate() {
        assert_eq!(
            &api.secret_value("default", &format!("old-{i}"), "v"),
            v,
            "old-{i} after rewrite"
        );
    }
    let doc = std::fs::read_to_string(crate::kube::deploy("README.md")).unwrap();
    for step in [REWRITE_ALL, REWRITE_ALL_V1] {
        assert!(doc.contains(step), "deploy/README.md no longer documents `{step}`");
    }
}

#[test]
fn check3_rotation_v2() {
    rotation(Kms::V2);
}
