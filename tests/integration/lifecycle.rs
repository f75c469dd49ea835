//! Socket lifecycle, configuration refusal and the SIGTERM drain.

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

#[test]
fn socket_dir_created_mode_0600_and_stale_socket_replaced() {
    let dir = TempDir::new("stale");
    let bao = Bao::dev(dir.path());
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // A crash leaves a socket file nobody listens on.
    drop(UnixListener::bind(run.join("kms.sock")).unwrap());
    assert!(run.join("kms.sock").exists());

    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    round_trip_v2(&c);
    let mode = std::fs::metadata(&p.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    assert!(p.log_text().contains("removed stale socket"));

    // A directory that does not exist yet is created.
    let nested = dir.path().join("deep/er/kms.sock");
    let mut p2 = Plugin::spawn(dir.path(), &nested, &bao.addr, &bao.token, &[]);
    p2.wait_for_socket();
}

#[test]
fn live_socket_is_refused_and_keeps_serving() {
    let dir = TempDir::new("live");
    let bao = Bao::dev(dir.path());
    let first = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let mut second = Plugin::spawn(dir.path(), &first.socket, &bao.addr, &bao.token, &[]);
    let st = second.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    let log = second.log_text();
    assert!(log.contains("another process is serving on"), "{log}");
    // The first plugin is unharmed.
    let c = first.client();
    assert_eq!(status(&c).healthz, "ok");
    round_trip_v2(&c);
}

#[test]
fn bad_config_is_refused_with_its_message() {
    let dir = TempDir::new("badcfg");
    let sock = dir.path().join("kms.sock");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(plugin_bin());
        cmd.arg("serve")
            .args(["--socket", sock.to_str().unwrap()])
            .args(args)
            .env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let env = [("VAULT_ADDR", "http://127.0.0.1:1"), ("VAULT_TOKEN", "t")];
    let (code, err) = run(&[], &env);
    assert_eq!(code, Some(2));
    assert!(err.contains("--transit-key"), "{err}");
    let (code, err) = run(&["--transit-key", "k", "--vault-timeout", "soon"], &env);
    assert_eq!(code, Some(2));
    assert!(err.contains("--vault-timeout") && err.contains("soon"), "{err}");

    let cfg = dir.path().join("c.json");
    std::fs::write(&cfg, r#"{"transit-key": "kube", "vault-adress": "http://x:1"}"#).unwrap();
    let (code, err) = run(&["--config", cfg.to_str().unwrap()], &env);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown key \"vault-adress\""), "{err}");
    assert!(!sock.exists(), "a refused config must not create the socket");

    // The same file with a valid key set passes configuration; with nothing
    // listening at the Vault address the start-up session check then fails
    // (exit 1, a runtime failure) before the socket exists.
    std::fs::write(
        &cfg,
        r#"{"transit-key": "kube", "vault-timeout": "1s", "max-in-flight": 8}"#,
    )
    .unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut p = Plugin::spawn(
        dir.path(),
        &sock,
        &dead,
        "s.notleaked",
        &["--config", cfg.to_str().unwrap()],
    );
    let st = p.wait_exit(Duration::from_secs(15));
    let log = p.log_text();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("max_in_flight=8"), "{log}");
    assert!(
        log.contains("method token") && log.contains(&dead) && log.contains("unreachable"),
        "{log}"
    );
    assert!(!log.contains("s.notleaked") && !log.contains("panicked"), "{log}");
    assert!(!sock.exists(), "a failed start must not leave a socket");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_removes_the_socket() {
    let dir = TempDir::new("sigterm");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let mut p = Plugin::start(dir.path(), &proxy.addr, &bao.token, &["--vault-timeout", "2500ms"]);
    let c = std::sync::Arc::new(p.client());
    assert_eq!(status(&c).healthz, "ok");

    // Every chunk towards Vault now waits 600 ms (a request is one or two chunks).
    proxy.set_delay(Duration::from_millis(600));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let pt = dek();
                let e = encrypt_v2(&c, &pt)?;
                Ok::<_, grpcio::Error>((pt, e))
            })
        })
        .collect();
    // The requests reach the plugin within milliseconds and then wait on
    // the slowed Vault for well over the 300 ms we give them here.
    std::thread::sleep(Duration::from_millis(300));
    p.signal("TERM");
    let mut ok = 0;
    for h in handles {
        let (pt, e) = h.join().unwrap().expect("in-flight request failed during drain");
        assert!(!e.ciphertext.is_empty() && pt.len() == 32);
        ok += 1;
    }
    assert_eq!(ok, 8);
    let st = p.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "exit status {st}");
    assert!(!p.socket.exists(), "socket left behind");
    let log = p.log_text();
    // The drain really had work to wait for.
    let n: usize = log
        .split("received SIGTERM; draining ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drain line:\n{log}"));
    assert!(n >= 1, "no request was in flight at SIGTERM:\n{log}");
}
