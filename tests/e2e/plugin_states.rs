//! Check 8, wrong plugin states as the apiserver sees them: a plugin that
//! starts after the apiserver, and a plugin killed with SIGKILL (leaving a
//! stale socket) and started again. The apiserver is never restarted.

use std::time::{Duration, Instant};

use crate::stack::{figure, poll, Stack, StackOpts, FAILURE_SEEN, HEALTH_POLL as POLL, RECOVERY_SEEN};

/// How long the apiserver is watched without a plugin: long enough for it
/// to have finished starting everything else (about 10 s here).
const WITHOUT_PLUGIN: Duration = Duration::from_secs(20);
#[test]
fn check8_apiserver_waits_for_a_plugin_that_starts_late() {
    let mut s = Stack::start(
        "late-plugin",
        StackOpts {
            plugin_first: false,
            ..StackOpts::default()
        },
    );
    let start = Instant::now();
    let mut seen_listening = false;
    while start.elapsed() < WITHOUT_PLUGIN {
        assert!(
            s.apiserver.is_running(),
            "apiserver exited without a plugin:\n{}",
            s.apiserver.log_text()
        );
        let (st, body) = s.apiserver.api.get_text("/readyz?verbose");
        assert_ne!(st, 200, "/readyz ok with no plugin:\n{body}");
        if st != 0 {
            seen_listening = true;
        }
        std::thread::sleep(POLL);
    }
    assert!(
        seen_listening,
        "the apiserver never answered while waiting for the plugin"
    );
    let (_, verbose) = s.apiserver.api.get_text("/readyz?verbose");
    assert!(verbose.contains("[-]kms-providers"), "{verbose}");

    s.start_plugin();
    let (_, took) = poll("/readyz after the plugin started", RECOVERY_SEEN, POLL, || {
        (s.apiserver.api.get_text("/readyz").0 == 200).then_some(())
    });
    s.apiserver.api.create_secret_ok("default", "late", &[("v", b"late")]);
    assert_eq!(s.apiserver.api.secret_value("default", "late", "v"), b"late");
    assert_eq!(s.apiserver.starts(), 1);
    figure(&format!(
        "late plugin: apiserver not ready for {}s without it, ready {:.1} s after the plugin started",
        WITHOUT_PLUGIN.as_secs(),
        took.as_secs_f64()
    ));
}

#[test]
fn check8_plugin_killed_and_restarted_over_a_stale_socket() {
    let mut s = Stack::start("sigkill", StackOpts::default());
    let api_pid = s.apiserver.pid();
    s.apiserver
        .api
        .create_secret_ok("default", "before-kill", &[("v", b"one")]);

    let plugin = s.plugin.as_mut().unwrap();
    plugin.signal("KILL");
    plugin.wait_exit(Duration::from_secs(10));
    assert!(s.socket.exists(), "SIGKILL should leave the socket file behind");
    let (_, failed_after) = poll("healthz/kms-providers to fail", FAILURE_SEEN, POLL, || {
        (s.apiserver.api.get_text("/healthz/kms-providers").0 != 200).then_some(())
    });
    // Reads keep working on the cached seed while the plugin is gone.
    assert_eq!(s.apiserver.api.secret_value("default", "before-kill", "v"), b"one");

    s.start_plugin();
    let (_, recovered_after) = poll("healthz/kms-providers to recover", RECOVERY_SEEN, POLL, || {
        (s.apiserver.api.get_text("/healthz/kms-providers").0 == 200).then_some(())
    });
    s.apiserver
        .api
        .create_secret_ok("default", "after-restart", &[("v", b"two")]);
    assert_eq!(s.apiserver.api.secret_value("default", "after-restart", "v"), b"two");
    assert_eq!(s.apiserver.api.secret_value("default", "before-kill", "v"), b"one");
    assert_eq!(
        (s.apiserver.pid(), s.apiserver.starts()),
        (api_pid, 1),
        "apiserver was restarted"
    );
    let statuses = s.plugin_metric("trousseau_kms_requests_total{api=\"v2\",operation=\"status\",outcome=\"ok\"}");
    assert!(statuses >= 1.0, "the new plugin served no Status to the apiserver");
    figure(&format!(
        "SIGKILL: kms-providers failed {:.1} s after the kill, ok {:.1} s after the restarted plugin's socket appeared",
        failed_after.as_secs_f64(),
        recovered_after.as_secs_f64()
    ));
}
