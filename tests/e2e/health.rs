//! Check 2, health: the apiserver's `/healthz/kms-providers` and `/readyz`
//! follow OpenBao's availability through the plugin, the plugin stays alive
//! through the outage, and everything recovers with no restart.

use crate::stack::{figure, http_get, poll, Stack, StackOpts, FAILURE_SEEN, HEALTH_POLL as POLL, RECOVERY_SEEN};

#[test]
fn check2_health_follows_openbao_without_restarts() {
    let mut s = Stack::start(
        "health",
        StackOpts {
            raft: true,
            ..StackOpts::default()
        },
    );
    let (api_pid, plugin_pid) = (s.apiserver.pid(), s.plugin().pid());
    let api = &s.apiserver.api;
    let (st, body) = api.get_text("/healthz/kms-providers");
    assert_eq!((st, body.as_str()), (200, "ok"), "healthz/kms-providers at start");
    assert_eq!(api.get_text("/readyz").0, 200);
    api.create_secret_ok("default", "before-outage", &[("v", b"kept")]);

    s.bao.stop();
    let (_, failed_after) = poll("healthz/kms-providers to fail", FAILURE_SEEN, POLL, || {
        let (st, _) = s.apiserver.api.get_text("/healthz/kms-providers");
        (st != 200).then_some(())
    });
    let (st, verbose) = s.apiserver.api.get_text("/readyz?verbose");
    assert_ne!(st, 200, "/readyz ok while kms-providers fails:\n{verbose}");
    assert!(verbose.contains("[-]kms-providers"), "{verbose}");

    // The plugin is unhealthy, not dead: it must not be restarted for this.
    let plugin = s.plugin.as_mut().unwrap();
    assert!(plugin.try_exit().is_none(), "plugin died during the outage");
    let http = plugin.http.clone();
    assert_eq!(
        http_get(&format!("{http}/livez")).0,
        200,
        "plugin /livez during the outage"
    );
    assert_eq!(
        http_get(&format!("{http}/readyz")).0,
        503,
        "plugin /readyz during the outage"
    );
    // Reads of existing Secrets keep working on the cached DEK seed.
    assert_eq!(s.apiserver.api.secret_value("default", "before-outage", "v"), b"kept");

    s.bao.restart();
    let (_, recovered_after) = poll("healthz/kms-providers to recover", RECOVERY_SEEN, POLL, || {
        let (st, _) = s.apiserver.api.get_text("/healthz/kms-providers");
        (st == 200).then_some(())
    });
    assert_eq!(s.apiserver.api.get_text("/readyz").0, 200);
    s.apiserver
        .api
        .create_secret_ok("default", "after-outage", &[("v", b"new")]);
    assert_eq!(s.apiserver.api.secret_value("default", "after-outage", "v"), b"new");

    assert_eq!(
        (s.apiserver.pid(), s.apiserver.starts()),
        (api_pid, 1),
        "apiserver was restarted"
    );
    let plugin = s.plugin.as_mut().unwrap();
    assert!(plugin.try_exit().is_none());
    assert_eq!(plugin.pid(), plugin_pid, "plugin was restarted");
    figure(&format!(
        "health: /healthz/kms-providers failed {:.1} s after OpenBao stopped, ok again {:.1} s after it returned \
         (plugin and apiserver never restarted)",
        failed_after.as_secs_f64(),
        recovered_after.as_secs_f64()
    ));
}
